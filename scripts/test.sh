#!/usr/bin/env bash
# The test suite: sets up the environment if needed (scripts/_venv.sh, with requirements-test.txt), then runs
# pytest on two workers.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k parity`).
# The order is fixed unless DGL_TEST_SEED is set: DGL_TEST_SEED=7 runs the tests shuffled by pytest-randomly
# with seed 7 (and 7 for `random`/numpy before each test), to hunt order-dependent tests; the same seed
# gives the same order again.
DGL_TEST_REQUIREMENTS=1  # the test-only packages too (requirements-test.txt)
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
if [ -n "${DGL_TEST_SEED:-}" ]; then order=(--randomly-seed="$DGL_TEST_SEED"); else order=(-p no:randomly); fi
exec "$PY" -m pytest -n "${PYTEST_WORKERS:-2}" "${order[@]}" -q tests "$@"
