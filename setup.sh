#!/usr/bin/env bash
# Creates .venv (Python 3.11) and installs this project with its pinned dependencies.
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
echo "[setup] installing pinned dependencies (first time: a few minutes)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[test]"
echo "[setup] ready: .venv/bin/mmoe --help"
