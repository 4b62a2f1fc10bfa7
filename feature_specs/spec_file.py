"""A spec file read into plain data with bounded work: size, text encoding and YAML aliases checked.

A spec is a few kilobytes of YAML. The file is refused, with a :class:`SpecError` naming it, when
it is larger than :data:`MAX_SPEC_BYTES` (checked before parsing: at most that many bytes are
read), when it is not UTF-8 (naming the byte offset and line), or when YAML aliases would make it
hold more than :data:`MAX_SPEC_VALUES` values once expanded (an "alias bomb": nine lines of
anchors can stand for hundreds of millions of values) or refer to themselves. The expanded size is
counted on the composed node graph, each shared node once, before any Python value is built.
Plain Python (PyYAML, with libyaml's parser when it is installed): no TensorFlow, Keras or Beam.
"""

from __future__ import annotations

from typing import Any

import yaml

from feature_specs.spec_nodes import SpecError, quoted

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: a spec of thousands of columns is a few hundred kilobytes
# YAML nodes (keys, values, items) with aliases expanded. Without aliases a node takes at least
# about a byte of the file (``{a,b,c}``: a key and an empty value per two bytes), so only aliases
# reach this in a file under MAX_SPEC_BYTES.
MAX_SPEC_VALUES = 2 * MAX_SPEC_BYTES
MAX_NUMBER_CHARS = 100  # an int64 takes 20 characters, a float's repr 24
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml also bounds the nesting depth


def read_spec_data(path: str) -> Any:
    """The parsed YAML (or JSON) of the spec file ``path``; None for an empty file.

    Args:
        path: str. Local path of the spec file.

    Raises:
        SpecError: the file cannot be read, is over :data:`MAX_SPEC_BYTES`, is not UTF-8, is not
            valid YAML, or expands to more than :data:`MAX_SPEC_VALUES` values.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError("<file>", f"cannot read spec: {exc.strerror}", path) from exc
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError("<file>", f"larger than {MAX_SPEC_BYTES:,} bytes, the most a spec may be; "
                        "is this the spec file, not a data file?", path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError("<file>", f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} "
                        f"(line {line}); save the spec as UTF-8", path) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise SpecError("<yaml>", f"not valid YAML: {_one_line(exc)}", path) from None
    except _TooLarge as exc:
        raise SpecError("<yaml>", str(exc), path) from None
    except ValueError as exc:  # a scalar the constructor cannot build, e.g. the date 2021-13-45
        raise SpecError("<yaml>", f"a value cannot be read: {exc}", path) from None
    except RecursionError:  # only PyYAML's pure-Python composer (no libyaml) recurses per level
        raise SpecError("<yaml>", "collections nested too deeply", path) from None
    finally:
        loader.dispose()


class _TooLarge(Exception):
    """The composed document is recursive, expands to more than :data:`MAX_SPEC_VALUES` values, or
    holds a number longer than :data:`MAX_NUMBER_CHARS`."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _where(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"


def _check_expanded_size(root: yaml.Node) -> None:
    """Raises :class:`_TooLarge` when ``root`` with its aliases expanded holds more than
    :data:`MAX_SPEC_VALUES` nodes, holds itself, or holds a number longer than
    :data:`MAX_NUMBER_CHARS` (which Python would refuse to build). Each distinct node is visited once (depth
    first, no recursion), so the check costs the size of the file, not of the expansion."""
    sizes: dict[int, int] = {}  # id(node) -> nodes in it, aliases expanded
    ancestors: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            ancestors.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_SPEC_VALUES:
                raise _TooLarge(f"{_where(node)}: YAML aliases expand this value to more than "
                                f"{MAX_SPEC_VALUES:,} values, the most a spec may hold")
            continue
        if key in sizes:
            continue
        if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
            raise _TooLarge(f"{_where(node)}: a number written with {len(node.value):,} characters "
                            f"(more than {MAX_NUMBER_CHARS}): {quoted(node.value)}")
        if key in ancestors:
            raise _TooLarge(f"{_where(node)}: a YAML alias refers to a value that contains it")
        ancestors.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))


def _one_line(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: ``line L, column C: <problem> (<context>)``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")
