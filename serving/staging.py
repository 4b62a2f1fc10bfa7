"""Staging directories of exports, and removing the ones that killed exports left behind.

An export writes its SavedModel into a hidden sibling of the version directory,
``<model dir>/.tmp-<version>-<token>-<pid>-<host>``, and renames it into place
(:mod:`serving.export`). Hidden names are never versions (:func:`serving.contract.scan_versions`),
so no server sees a staging directory. An export killed before the rename leaves its staging
directory behind; the next export of the same model removes the ones that are stale
(:func:`remove_stale_staging`):

* written by a process of this host that is no longer running, or
* nothing in it modified for :data:`STALE_AFTER_SECONDS`, whoever wrote it (another host, or a
  name in an older layout whose writer is unknown).

A running export's directory is never stale by the first rule, and by the second only if it wrote
nothing for that long. Only directories directly under the model directory whose names start with
:data:`STAGING_PREFIX` are ever removed, and never through a symbolic link.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid

import tensorflow as tf

from feature_specs.artifacts import join

log = logging.getLogger(__name__)

STAGING_PREFIX = ".tmp-"
STALE_AFTER_SECONDS = 3600.0  # an export writes files continuously; an hour of silence means it is gone


def _host() -> str:
    """This machine's host name, reduced to characters safe in a path."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "unknown"


def staging_dir(model_base: str, version: int) -> str:
    """A new, unique staging directory path for ``version`` under ``model_base`` (not created).

    Args:
        model_base: str. The model directory.
        version: int. The version the staging directory will be renamed to.
    """
    token = uuid.uuid4().hex[:8]
    return join(model_base, f"{STAGING_PREFIX}{version}-{token}-{os.getpid()}-{_host()}")


def _writer_running(name: str) -> bool | None:
    """Whether the process that named staging directory ``name`` still runs; None if unknowable.

    Unknowable: the name is not in :func:`staging_dir`'s layout, or its writer ran on another host.
    """
    parts = name[len(STAGING_PREFIX):].split("-", 3)
    if len(parts) != 4 or not (parts[2].isascii() and parts[2].isdigit()) or parts[3] != _host():
        return None
    try:
        os.kill(int(parts[2]), 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    except (OverflowError, ValueError):  # not a pid this system can have
        return None
    return True


def last_modified(path: str) -> float:
    """The newest modification time (seconds since the epoch) of ``path`` and everything under it."""
    newest = tf.io.gfile.stat(path).mtime_nsec
    for directory, subdirectories, files in tf.io.gfile.walk(path):
        for name in list(subdirectories) + list(files):
            newest = max(newest, tf.io.gfile.stat(join(directory, name.rstrip("/"))).mtime_nsec)
    return newest / 1e9


def is_stale(path: str, now: float | None = None) -> bool:
    """Whether staging directory ``path`` was left by an export that will not finish.

    Args:
        path: str. A directory under a model directory whose name starts with :data:`STAGING_PREFIX`.
        now: float or None. The current time (seconds since the epoch); defaults to ``time.time()``.
    """
    running = _writer_running(path.rstrip("/").rsplit("/", 1)[-1])
    if running is not None:
        return not running
    now = time.time() if now is None else now
    return now - last_modified(path) > STALE_AFTER_SECONDS


def _is_link(path: str) -> bool:
    """Whether ``path`` is a local symbolic link (URIs such as ``gs://`` have none)."""
    return "://" not in path and os.path.islink(path)


def remove_stale_staging(model_base: str, now: float | None = None) -> list[str]:
    """Removes the stale staging directories directly under ``model_base``; returns their paths.

    One that cannot be removed (permissions) is logged and left: it is hidden, so it harms nothing.

    Args:
        model_base: str. A model directory (local path or tf.io.gfile URI); nothing happens if it
            does not exist.
        now: float or None. The current time, as for :func:`is_stale`.
    """
    if not tf.io.gfile.isdir(model_base):
        return []
    removed = []
    for entry in sorted(tf.io.gfile.listdir(model_base)):
        name = entry.rstrip("/")
        path = join(model_base, name)
        if not name.startswith(STAGING_PREFIX) or _is_link(path) or not tf.io.gfile.isdir(path):
            continue
        try:
            if not is_stale(path, now):
                continue
            tf.io.gfile.rmtree(path)
        except tf.errors.NotFoundError:  # another export removed it first
            continue
        except tf.errors.OpError as error:  # cleanup is best effort: a hidden leftover harms no one
            log.warning("could not remove stale export staging directory %s: %s", path, error)
            continue
        log.info("removed %s, left by an export that did not finish", path)
        removed.append(path)
    return removed
