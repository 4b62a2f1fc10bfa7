"""Reading plain data (parsed YAML or spec.json) at a key path, so that every error names it.

:class:`Node` is one mapping of the spec at its key path (``features[3]``, ``training``); its
getters check the value's type and range and raise :class:`SpecError` naming the key path, e.g.
``features[3].transform: unknown value 'bucket'``, and :meth:`Node.finish` rejects keys nobody
read, so a misspelt key never passes silently. Plain Python: no TensorFlow, Keras or Beam.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from feature_specs.errors import UserError


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

    def _key(self, key: str) -> str:
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
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"expected {_kind_name(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.error(key, f"expected {_kind_name(kinds)}, got {type(value).__name__} {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(key, f"must be finite, got {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = dataclasses.MISSING) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.error(key, f"unknown value {value!r}; expected one of {', '.join(choices)}")
        return value

    def positive_int(self, key: str, default: Any = dataclasses.MISSING, minimum: int = 1) -> int:
        value = self.get(key, int, default)
        if value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def int_list(self, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
        value = self.get(key, (list, tuple), default)
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                raise self.error(f"{key}[{i}]", f"expected a positive integer, got {item!r}")
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
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key (check its spelling)")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "a list", tuple: "a list", dict: "a mapping"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))

