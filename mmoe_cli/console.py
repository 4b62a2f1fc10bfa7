"""What the `mmoe` command prints: its own progress, not the start-up chatter of the libraries.

On a CPU machine TensorFlow's native start-up writes lines such as ``Could not find cuda drivers``
and an ``E0000 ... failed call to cuInit`` error that read like failures, before its logging can be
configured (no environment variable silences them). Beam logs a warning about apitools on import.
Without ``--verbose`` the command imports TensorFlow once up front with the process's stderr
(file descriptor 2) caught in a temporary file, then writes back every caught line that is not
one of the known start-up lines below. After that, stderr is the process's own again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Lines TensorFlow's native code writes while it loads and looks for accelerators.
NATIVE_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|cudart_stub\.cc:\d+\]|cuda_platform\.cc:\d+\] failed call to cuInit|cuda_executor\.cc:\d+\]"
    r"|cpu_feature_guard\.cc:\d+\]|^To enable the following instructions:.*rebuild TensorFlow"
    r"|oneDNN custom operations are on|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation_placer\.cc:\d+\]|TF-TRT Warning"
)
# Python loggers whose INFO lines are library internals, and Beam's import-time warning.
CHATTY_LOGGERS = ("apache_beam", "tensorflow", "absl", "matplotlib", "h5py")
BEAM_IMPORT_WARNING = "apitools not found"


class _DropBeamImportWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and record.getMessage().startswith(BEAM_IMPORT_WARNING))


def configure_logging(verbose: bool) -> None:
    """INFO lines of this project on stderr (DEBUG and every library's lines with ``verbose``)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)
    if verbose:
        return
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropBeamImportWarning())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's own INFO and WARNING lines


def drop_startup_noise(text: str) -> str:
    """``text`` without the lines that match :data:`NATIVE_STARTUP_NOISE` (keeps line ends)."""
    return "".join(line for line in text.splitlines(keepends=True) if not NATIVE_STARTUP_NOISE.search(line))


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Catches file descriptor 2 in a temporary file for the block, then writes back what is not
    start-up noise. Meant for short blocks (imports): a crash inside loses what the block wrote."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = drop_startup_noise(caught.read().decode("utf-8", "replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def start_tensorflow_quietly(verbose: bool) -> None:
    """Imports TensorFlow and lets it look for devices, so its start-up lines come (and, unless
    ``verbose``, are dropped) here rather than in the middle of a stage's output."""
    if verbose:
        return
    with native_stderr_filtered():
        import tensorflow as tf

        tf.config.list_physical_devices()


def start_worker_quietly(verbose: bool) -> None:
    """A spawned server worker's start: the command's logging and a quiet TensorFlow import, which
    a process started with ``spawn`` does not inherit from the command (picklable with
    ``functools.partial``)."""
    configure_logging(verbose)
    start_tensorflow_quietly(verbose)


def progress_verbosity(quiet: bool) -> int:
    """The training loop's ``verbose``: a progress bar (2) on a terminal, else one line per epoch (1).

    A progress bar written to a file or a pipe leaves escape codes and carriage-return updates in it.
    """
    return 2 if not quiet and sys.stdout.isatty() else 1
