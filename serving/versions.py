"""Version numbers, the version policy and version labels: which versions of a model are served.

Plain Python (no TensorFlow), so the command line parses ``--versions`` and ``--version-labels``
before anything heavy loads.

A version is TF Serving's int64 >= 0 (:data:`MAX_VERSION`), and its directory is named by that
number written plainly: ASCII decimal digits, no sign, no leading zeros (:func:`parse_version`).

The version policy is TF Serving's ``model_version_policy``, written as text (:data:`VERSIONS_FLAG`):

* ``latest:N``: the N newest versions (:data:`DEFAULT_VERSION_POLICY` is ``latest:1``, TF Serving's
  default: only the newest version is served);
* ``all``: every version on disk;
* ``specific:V1,V2,...``: exactly those versions.

Version labels are TF Serving's ``version_labels``: names for versions, written
``stable=3,canary=4`` (:data:`VERSION_LABELS_FLAG`); a request picks one with
``/v1/models/<name>/labels/<label>`` (REST) or ``model_spec.version_label`` (gRPC). As in TF
Serving, a label may only point to a loaded version, so labels go with ``specific:`` (or a
``latest:N`` that covers them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Union

from feature_specs.errors import UserError
from feature_specs.spec_nodes import quoted

MAX_VERSION = 2**63 - 1  # TF Serving's versions are int64 values >= 0
VERSIONS_FLAG = "--versions"
VERSION_LABELS_FLAG = "--version-labels"
LABEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")  # starts with a letter: never read as a version
VERSION_FORM = f"an integer from 0 to {MAX_VERSION} in plain digits"
POLICY_FORMS = ("latest:N (the N newest versions, N >= 1), all (every version on disk), or "
                "specific:V1,V2,... (exactly those versions)")


class VersionError(UserError, ValueError):
    """A model version TF Serving cannot hold (not an integer from 0 to :data:`MAX_VERSION`)."""


class VersionPolicyError(UserError, ValueError):
    """A version policy text that is none of the accepted forms (:data:`POLICY_FORMS`)."""


class VersionLabelError(UserError, ValueError):
    """Version labels that are malformed, or a label pointing to a version that is not loaded."""


def check_version(version: int) -> int:
    """Returns ``version`` if it is a valid model version.

    Args:
        version: int. The version to write or request.

    Raises:
        VersionError: if ``version`` is not an int (bools excluded) from 0 to :data:`MAX_VERSION`.
    """
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        raise VersionError(
            f"model version {version!r} is out of range: TF Serving versions are int64 integers >= 0 "
            f"(0 to {MAX_VERSION}); pick one in that range"
        )
    return version


def parse_version(name: str) -> int | None:
    """The version a directory entry's name stands for, or None if it is not a version's name.

    Args:
        name: str. An entry of a model directory (a trailing ``/``, as some filesystems list
            directories, is ignored).

    Returns:
        The int for plain ASCII decimal digits without leading zeros (``"0"`` itself is a version)
        up to :data:`MAX_VERSION`; None for anything else (``"²"``, ``"007"``, ``"-1"``, hidden names).
    """
    name = name.rstrip("/")
    if not (name.isascii() and name.isdigit()) or (len(name) > 1 and name[0] == "0"):
        return None
    version = int(name)
    return version if version <= MAX_VERSION else None


# -- the version policy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LatestVersions:
    """``latest:N``: serve the ``count`` newest versions.

    Args:
        count: int >= 1. How many versions to serve.
    """

    count: int

    def __post_init__(self):
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise VersionPolicyError(f"latest:N needs an integer N >= 1, got {self.count!r}")

    def select(self, versions: Iterable[int]) -> list[int]:
        """The ``count`` newest of ``versions`` (ints), newest first."""
        return sorted(versions, reverse=True)[:self.count]

    def __str__(self) -> str:
        return f"latest:{self.count}"


@dataclass(frozen=True)
class AllVersions:
    """``all``: serve every version on disk."""

    def select(self, versions: Iterable[int]) -> list[int]:
        """Every one of ``versions`` (ints), newest first."""
        return sorted(versions, reverse=True)

    def __str__(self) -> str:
        return "all"


@dataclass(frozen=True)
class SpecificVersions:
    """``specific:V1,V2,...``: serve exactly these versions (those of them on disk).

    Args:
        versions: tuple of ints, ascending and distinct.
    """

    versions: tuple[int, ...]

    def __post_init__(self):
        if not self.versions:
            raise VersionPolicyError(f"specific: needs at least one version; use {POLICY_FORMS}")
        for version in self.versions:
            check_version(version)

    def select(self, versions: Iterable[int]) -> list[int]:
        """Those of ``versions`` (ints) the policy names, newest first."""
        return sorted(set(versions) & set(self.versions), reverse=True)

    def __str__(self) -> str:
        return "specific:" + ",".join(map(str, self.versions))


VersionPolicy = Union[LatestVersions, AllVersions, SpecificVersions]
DEFAULT_VERSION_POLICY: VersionPolicy = LatestVersions(1)  # TF Serving's default


def parse_version_policy(text: str) -> VersionPolicy:
    """The policy written as ``text``: ``latest:N``, ``all`` or ``specific:V1,V2,...``.

    Args:
        text: str. The policy as the user wrote it (:data:`VERSIONS_FLAG`); surrounding spaces,
            and spaces around the commas of ``specific:``, are ignored.

    Returns:
        A :class:`LatestVersions`, :class:`AllVersions` or :class:`SpecificVersions`.

    Raises:
        VersionPolicyError: naming the flag, what is wrong and the accepted forms.
    """
    kind, colon, rest = text.strip().partition(":")
    if kind == "all" and not colon:
        return AllVersions()
    if kind == "latest" and colon:
        count = rest.strip()
        if not (count.isascii() and count.isdigit()) or int(count) < 1:
            raise _policy_error(text, f"N must be an integer >= 1, got {quoted(count)}")
        return LatestVersions(int(count))
    if kind == "specific" and colon:
        versions = []
        for item in rest.split(","):
            version = _version_number(item.strip())
            if version is None:
                raise _policy_error(text, f"{quoted(item.strip())} is not a version ({VERSION_FORM})")
            if version in versions:
                raise _policy_error(text, f"version {version} is listed twice")
            versions.append(version)
        return SpecificVersions(tuple(sorted(versions)))
    raise _policy_error(text, "unknown form")


def _version_number(text: str) -> int | None:
    """A version written by a user: :func:`parse_version` without its trailing ``/`` allowance."""
    return None if text.endswith("/") else parse_version(text)


def as_version_policy(policy: VersionPolicy | str) -> VersionPolicy:
    """``policy`` itself, or parsed by :func:`parse_version_policy` when given as text."""
    return parse_version_policy(policy) if isinstance(policy, str) else policy


def _policy_error(text: str, why: str) -> VersionPolicyError:
    return VersionPolicyError(f"{VERSIONS_FLAG} {quoted(text)} is not a version policy: {why}; use {POLICY_FORMS}")


# -- version labels --------------------------------------------------------------------------------


def parse_version_labels(text: str | None) -> dict[str, int]:
    """The labels written as ``text``: ``label=version`` pairs separated by commas.

    Args:
        text: str or None. E.g. ``"stable=3,canary=4"``; None, or only spaces, means no labels.

    Returns:
        dict of label (str) to version (int), in the order written.

    Raises:
        VersionLabelError: naming the flag and the pair that is malformed, a label that is not
            a name (:data:`LABEL_NAME`) or appears twice, or a version that is not one.
    """
    if text is None or not text.strip():
        return {}
    labels: dict[str, int] = {}
    for pair in text.split(","):
        label, equals, number = (part.strip() for part in pair.partition("="))
        if not equals:
            raise _label_error(f"{quoted(pair.strip())} is not label=version")
        version = _version_number(number)
        if version is None:
            raise _label_error(f"label {quoted(label)}: {quoted(number)} is not a version ({VERSION_FORM})")
        if label in labels:
            raise _label_error(f"label {quoted(label)} is given twice")
        labels[label] = version
    return check_version_labels(labels)


def check_version_labels(labels: Mapping[str, int]) -> dict[str, int]:
    """``labels`` as a dict, once every label is a name and every version a version.

    Args:
        labels: mapping of label (str) to version (int).

    Raises:
        VersionLabelError: for a label that does not match :data:`LABEL_NAME` or a version
            that :func:`check_version` refuses.
    """
    for label, version in labels.items():
        if not isinstance(label, str) or not LABEL_NAME.fullmatch(label):
            raise _label_error(f"label {quoted(label)} is not a name (a letter, then letters, digits, '_', '.' "
                               f"or '-')")
        try:
            check_version(version)
        except VersionError as error:
            raise _label_error(f"label {label!r}: {error}") from None
    return dict(labels)


def as_version_labels(labels: Mapping[str, int] | str | None) -> dict[str, int]:
    """``labels`` checked by :func:`check_version_labels`, or parsed when given as text."""
    if labels is None or isinstance(labels, str):
        return parse_version_labels(labels)
    return check_version_labels(labels)


def _label_error(why: str) -> VersionLabelError:
    return VersionLabelError(f"{VERSION_LABELS_FLAG}: {why}; write labels as label=version pairs, e.g. "
                             f"stable=3,canary=4")
