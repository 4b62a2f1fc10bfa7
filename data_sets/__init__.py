"""Data sets: generators of synthetic impression logs and loaders of public data sets.

    clicklog         the deterministic synthetic impression log behind the `clicklog` spec
    clicklog_events  the same log as a label join reads it: impressions, click and dwell events
    correlation      the MMoE paper's synthetic two-task data with a controllable task correlation
    census           the UCI census-income (KDD) data set as the MMoE paper's two tasks

Plain numpy/pyarrow: nothing here imports TensorFlow, Beam or the model.
"""
