#!/usr/bin/env bash
# Speed / memory / efficiency benchmark on random ViT-B/32- and ViT-B/16-shaped weights, and DGL-BLIP on a random
# BLIP base (--models blip-base; no downloads).
# All arguments go to apps/bench (python -m apps.bench), e.g. `bash scripts/bench.sh --quick` or
# `bash scripts/bench.sh --models B/32 --grad_checkpointing both --json_out bench.json`; see --help.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
exec "$PY" -m apps.bench "$@"
