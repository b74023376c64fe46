# Sourced by the scripts: create .venv with what the project needs, once.
# On a machine without CUDA the CPU build of torch is installed first, so that no
# later requirement pulls the multi-GB CUDA build.
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
PY="$VENV/bin/python"
STAMP="$VENV/.dgl-requirements"
want="$(cat "$ROOT/requirements.txt" "$ROOT/scripts/_venv.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$PY" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "[setup] preparing $VENV" >&2
  [ -x "$PY" ] || "$BASE_PY" -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  if ! "$PY" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
      "$PY" -m pip install -q torch
    else
      # TORCH_INDEX_URL lets users point pip at PyTorch's CPU wheel index.
      "$PY" -m pip install -q torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
    fi
  fi
  # Test-only: transformers (the peer implementation tests/test_clip_peer.py checks our CLIP against) and
  # import-linter (the layer contract, tests/test_layers.py); pytest-randomly (shuffled runs, scripts/test.sh).
  "$PY" -m pip install -q -r "$ROOT/requirements.txt" pytest pytest-xdist pytest-randomly transformers import-linter
  echo "$want" > "$STAMP"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
