"""Reading plain data (parsed YAML or spec.json) at a key path, so that every error names it.

:class:`Node` is one mapping of the spec at its key path (``features[3]``, ``training``); its
getters check the value's type and range and raise :class:`SpecError` naming the key path, e.g.
``features[3].transform: unknown value 'bucket'``, and :meth:`Node.finish` rejects keys nobody
read, so a misspelt key never passes silently. A value quoted in a message is cut to a short
prefix (:func:`quoted`), so a huge or alias-expanded value never lands whole in an error. Plain
Python: no TensorFlow, Keras or Beam.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import sys
from typing import Any, Mapping

from feature_specs.errors import UserError

QUOTED_CHARS = 40  # the most characters of a value (or a key) an error message quotes


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxtuple, short.maxdict = 2, 3, 3, 3
    short.maxstring = short.maxlong = short.maxother = QUOTED_CHARS
    return short


_SHORT_REPR = _short_repr()


def quoted(value: Any) -> str:
    """``repr(value)`` for an error message, cut to a prefix of :data:`QUOTED_CHARS` characters.

    Args:
        value: any parsed YAML/JSON value (str, number, list, mapping).

    Returns:
        str. The repr itself when short; else its first characters followed by ``...`` and the
        length (``... (1,000,000 characters)``, ``... (9 items)``). Never walks more than a few
        items of a container, however large (or alias-shared) it is.
    """
    if isinstance(value, str):
        return repr(value) if len(value) <= QUOTED_CHARS else f"{value[:QUOTED_CHARS]!r}... ({len(value):,} characters)"
    text = _SHORT_REPR.repr(value)
    if len(text) <= QUOTED_CHARS:
        return text
    size = f" ({len(value):,} items)" if isinstance(value, (list, tuple, Mapping)) else ""
    return f"{text[:QUOTED_CHARS]}...{size}"


class SpecError(UserError, ValueError):
    """A spec that cannot be used; the message starts with the offending key path."""

    def __init__(self, path: str, message: str, source: str | None = None):
        self.path = path
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{path}: {message}")


class Node:
    """A mapping read at a key path; unknown keys are errors, so typos never pass silently.

    Args:
        data: the mapping (a dict of parsed YAML/JSON); anything else raises :class:`SpecError`.
        path: str. Its key path, e.g. ``features[3]``; ``""`` for the root.
        source: str or None. The file it came from, prefixed to error messages.

    The getters take a ``default`` (``dataclasses.MISSING``: the key is required); readers pass
    the dataclass field's default (:func:`feature_specs.spec.field_default`).
    """

    def __init__(self, data: Any, path: str, source: str | None):
        if not isinstance(data, Mapping):
            raise SpecError(path or "<root>", f"expected a mapping, got {type(data).__name__}", source)
        self.data, self.path, self.source = data, path, source
        self.used: set[str] = set()

    def _key(self, key: Any) -> str:
        if not isinstance(key, str) or len(key) > QUOTED_CHARS:
            key = quoted(key)  # a key from the file that is not a name: shown, not spelled out
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> SpecError:
        return SpecError(self._key(key), message, self.source)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = dataclasses.MISSING):
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if default is dataclasses.MISSING:
                raise self.error(key, "required key is missing")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > sys.float_info.max:
                raise self.error(key, f"must be finite, got {quoted(value)}")
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"expected {_kind_name(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.error(key, f"expected {_kind_name(kinds)}, got {type(value).__name__} {quoted(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(key, f"must be finite, got {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = dataclasses.MISSING) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.error(key, f"unknown value {quoted(value)}; expected one of {', '.join(choices)}")
        return value

    def positive_int(self, key: str, default: Any = dataclasses.MISSING, minimum: int = 1, *,
                     maximum: int) -> int:
        """An integer in ``[minimum, maximum]``; ``maximum`` is one of the bounds of
        :mod:`feature_specs.spec` (``MAX_BATCH_SIZE``, ...), so every integer key has one."""
        value = self.get(key, int, default)
        if value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {quoted(value)}")
        if value > maximum:
            raise self.error(key, f"must be <= {maximum:,}, got {quoted(value)}")
        return value

    def int_list(self, key: str, default: tuple[int, ...], *, maximum: int, max_items: int) -> tuple[int, ...]:
        """A list of at most ``max_items`` integers, each in ``[1, maximum]``."""
        value = self.get(key, (list, tuple), default)
        if len(value) > max_items:
            raise self.error(key, f"at most {max_items} items, got {len(value):,}")
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                raise self.error(f"{key}[{i}]", f"expected a positive integer, got {quoted(item)}")
            if item > maximum:
                raise self.error(f"{key}[{i}]", f"must be <= {maximum:,}, got {quoted(item)}")
        return tuple(value)

    def child(self, key: str, required: bool = True) -> "Node":
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(key, "required section is missing")
            return Node({}, self._key(key), self.source)
        return Node(self.data[key], self._key(key), self.source)

    def items(self, key: str) -> list["Node"]:
        self.used.add(key)
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {type(value).__name__}")
        return [Node(item, f"{self._key(key)}[{i}]", self.source) for i, item in enumerate(value)]

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used, key=str)  # keys of parsed YAML need not be strings
        if unknown:
            raise self.error(unknown[0], "unknown key (check its spelling)")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "a list", tuple: "a list", dict: "a mapping"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))

