"""Beam preprocessing: read -> validate -> split -> analyze the train split -> write.

Use :func:`preprocess` from Python or ``python -m pipelines.run`` from the command line.
"""

from pipelines.options import PreprocessOptions
from pipelines.report import EmptyTrainSplitError, ReconciliationError, RejectRateError
from pipelines.run import preprocess, run

__all__ = ["EmptyTrainSplitError", "PreprocessOptions", "ReconciliationError", "RejectRateError", "preprocess", "run"]
