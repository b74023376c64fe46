#!/usr/bin/env bash
# The embedded default, end to end on a CPU: synthetic temporal benchmark, tiny CLIP pretrained on
# stills, DGL-Transformer and DGL-Linear trained and evaluated through main.py, one results table.
#   bash scripts/demo.sh            # full size (docs/demo.md: measured times and table)
#   bash scripts/demo.sh --quick    # smaller, under two minutes
#   bash scripts/demo.sh --backbone blip   # the same on a tiny BLIP, plus DGL-BLIP (docs: demo.md)
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
exec "$PY" -m apps.demo "$@"
