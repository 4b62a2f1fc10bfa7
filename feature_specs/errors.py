"""The one base class for a user's mistake, so that the command line can tell it from a bug.

Every stage raises a subclass of :class:`UserError` for input a user can fix (a spec, a file, a
flag, a workdir in the wrong state). ``mmoe`` prints its message on one line and exits non-zero
without a traceback (``--debug`` shows it); any other exception is a defect and keeps its traceback.
Plain Python, importable from every layer.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave (file, spec, flag, workdir); the message says what and where.

    Attributes:
        exit_code: int. The process exit status ``mmoe`` returns for it (2: bad input; subclasses
            for a run that completed but failed a check, such as too many rejected rows, use 1).
    """

    exit_code = 2
