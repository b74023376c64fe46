# Sourced by the scripts: an environment with what the project needs, set up once. Sets PY and ROOT.
# scripts/setup_plan.py decides, and says in one line each, which environment is used (an active venv or conda
# env that has torch, else .venv) and which torch build is installed (see its --help: CPU build without a GPU,
# pinned CUDA build with one; TORCH_INDEX_URL / DGL_TORCH_INDEX choose another).
# Runtime packages: requirements.txt. A script that runs the tests sets DGL_TEST_REQUIREMENTS=1 before sourcing,
# which adds requirements-test.txt.
# Interpreter: PYTHON (default python3), CPython 3.10-3.13 tested; a chosen PYTHON gets its own
# .venv-<major.minor> (e.g. `PYTHON=python3.13 bash scripts/test.sh` -> .venv-3.13); DGL_VENV overrides the folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_PY="${PYTHON:-python3}"
if ! PY_VERSION="$("$BASE_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"; then
  echo "[setup] PYTHON=$BASE_PY is not a runnable Python interpreter" >&2; exit 1
fi
case "$PY_VERSION" in
  3.1[0-3]) ;;
  2.* | 3.[0-9]) echo "[setup] $BASE_PY is Python $PY_VERSION; torch 2.13 needs 3.10 or newer (set PYTHON=python3.11 ...)" >&2; exit 1 ;;
  *) echo "[setup] Python $PY_VERSION is newer than the tested 3.10-3.13; trying anyway" >&2 ;;
esac
VENV="${DGL_VENV:-$ROOT/.venv${PYTHON:+-$PY_VERSION}}"
plan="$("$BASE_PY" "$ROOT/scripts/setup_plan.py" --venv "$VENV")" || exit $?
eval "$plan"
PY="$PLAN_PY"
requirements=("$ROOT/requirements.txt")
[ "${DGL_TEST_REQUIREMENTS:-0}" = 1 ] && requirements+=("$ROOT/requirements-test.txt")
STAMP="$(dirname "$(dirname "$PY")")/.dgl-requirements"
want="$(cat "${requirements[@]}" "$ROOT/scripts/_venv.sh" "$ROOT/scripts/setup_plan.py" | sha256sum | cut -d' ' -f1)"
if [ "$PLAN_TORCH_NEEDED" = 1 ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "[setup] $PLAN_ENV_NOTE" >&2
  if [ "$PLAN_CREATE_VENV" = 1 ]; then
    "$BASE_PY" -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  fi
  if [ "$PLAN_TORCH_NEEDED" = 1 ]; then
    echo "[setup] installing $PLAN_TORCH_NOTE" >&2
    if ! "$PY" -m pip install -q "${PLAN_TORCH_ARGS[@]}"; then
      if [ "$PLAN_TORCH_FALLBACK" != 1 ]; then
        echo "[setup] error: installing torch failed (pip's message above); set TORCH_INDEX_URL or DGL_TORCH_INDEX (see scripts/setup_plan.py --help)" >&2
        exit 1
      fi
      echo "[setup] that index could not be used (pip's message above); installing torch==2.13.0 from pip's configured index instead (on Linux PyPI's CUDA build, ~4.7 GB; TORCH_INDEX_URL=a reachable copy of the CPU index avoids it)" >&2
      "$PY" -m pip install -q torch==2.13.0
    fi
  fi
  req_args=()
  for file in "${requirements[@]}"; do req_args+=(-r "$file"); done
  "$PY" -m pip install -q "${req_args[@]}"
  "$PY" -c 'import torch; print("[setup] torch", torch.__version__, "(CUDA " + torch.version.cuda + ")" if torch.version.cuda else "(CPU build)", "in", __import__("sys").prefix)' >&2
  echo "$want" > "$STAMP"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
