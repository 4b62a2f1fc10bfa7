"""Small file helpers on Beam's FileSystems, so every path may be local or a filesystem URI."""

from __future__ import annotations

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def read_text(path: str) -> str:
    """Returns the whole (small) file at ``path`` as UTF-8 text."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    """Writes ``text`` as UTF-8 to ``path``, replacing any existing file."""
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(text.encode("utf-8"))


def matching_files(pattern: str) -> list[str]:
    """Paths matching a glob, sorted; an empty list when nothing matches."""
    return sorted(file_sizes(pattern))


def file_sizes(pattern: str) -> dict[str, int]:
    """Each file matching a glob -> its size in bytes (empty when nothing matches)."""
    result = FileSystems.match([pattern])[0]
    return {metadata.path: metadata.size_in_bytes for metadata in result.metadata_list}


def delete_matching(patterns: list[str]) -> list[str]:
    """Deletes every file matching any of ``patterns`` and returns the deleted paths."""
    paths = [path for pattern in patterns for path in matching_files(pattern)]
    if paths:
        FileSystems.delete(paths)
    return paths
