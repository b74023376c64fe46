# Sourced by the scripts: create .venv with what the project needs, once.
# On a machine without CUDA the CPU build of torch is installed first, so that no
# later requirement pulls the multi-GB CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DGL_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.dgl-requirements"
want="$(cat "$ROOT/requirements.txt" "$ROOT/scripts/_venv.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$PY" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "[setup] preparing $VENV" >&2
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  if ! "$PY" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
      "$PY" -m pip install -q torch
    else
      # TORCH_INDEX_URL lets users point pip at PyTorch's CPU wheel index.
      "$PY" -m pip install -q torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
    fi
  fi
  "$PY" -m pip install -q -r "$ROOT/requirements.txt" pytest pytest-xdist import-linter
  echo "$want" > "$STAMP"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
