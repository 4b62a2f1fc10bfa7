"""Argparse ``type=`` functions that bound a flag's number, so a bad value is a usage error.

``argparse`` turns the :class:`argparse.ArgumentTypeError` these raise into ``mmoe <command>:
error: argument --flag: ...`` and exit status 2, before any stage starts. Plain Python.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable


def int_in(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A ``type=`` for an integer flag in ``[minimum, maximum]`` (no upper bound when None).

    Args:
        minimum: int. Smallest value accepted.
        maximum: int or None. Largest value accepted, e.g. :data:`feature_specs.spec.MAX_EPOCHS`.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum:,}" if maximum is None else f"in [{minimum:,}, {maximum:,}]"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text[:40]}")
        return value

    return parse


def float_in(minimum: float, maximum: float | None = None) -> Callable[[str], float]:
    """A ``type=`` for a finite number flag in ``[minimum, maximum]`` (no upper bound when None)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
        if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum:g}" if maximum is None else f"in [{minimum:g}, {maximum:g}]"
            raise argparse.ArgumentTypeError(f"must be a finite number {bounds}, got {text[:40]}")
        return value

    return parse


FRACTION = float_in(0.0, 1.0)  # a share: --max-reject-rate, --corrupt-fraction
