#!/usr/bin/env bash
# The test suite: sets up .venv if needed, then runs pytest on two workers.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k parity`).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
exec "$PY" -m pytest -n "${PYTEST_WORKERS:-2}" -q tests "$@"
