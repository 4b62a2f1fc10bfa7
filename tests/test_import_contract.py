"""The packages import one way, top to bottom: the import-linter contract in pyproject.toml holds.

    mmoe_cli -> serving -> mmoe | pipelines -> data_sets -> feature_specs

A failure prints the offending import chain (module, line) as import-linter reports it.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

importlinter_cli = pytest.importorskip("importlinter.cli")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("mmoe_cli", "serving", "mmoe", "pipelines", "data_sets", "feature_specs")


def _lint(root: str) -> int:
    """Runs import-linter on the packages under ``root`` with ``root``'s pyproject.toml; 0 = kept."""
    sys.path.insert(0, root)
    cwd = os.getcwd()
    try:
        os.chdir(root)
        return importlinter_cli.lint_imports(config_filename="pyproject.toml", no_cache=True, no_logo=True)
    finally:
        os.chdir(cwd)
        sys.path.remove(root)


def test_imports_point_one_way():
    assert _lint(ROOT) == 0, "an import runs against the layers in pyproject.toml: see the report above"


def test_contract_catches_an_upward_import(tmp_path, monkeypatch):
    """The same contract over a copy of the packages in which the bottom layer imports the top one."""
    for package in PACKAGES:
        shutil.copytree(os.path.join(ROOT, package), tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    with open(tmp_path / "feature_specs" / "values.py", "a", encoding="utf-8") as handle:
        handle.write("\nimport mmoe_cli.main  # an upward import\n")
    for package in PACKAGES:  # the copy, not the installed checkout, must be what grimp finds
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            monkeypatch.delitem(sys.modules, name)
    assert _lint(str(tmp_path)) == 1
