#!/usr/bin/env bash
# Install what the project needs to run (no tests, no demo): the active venv or conda env if it has torch, else
# .venv with the torch build that fits the machine (scripts/setup_plan.py says which, and why).
#   bash scripts/install.sh        then: .venv/bin/python main.py --help  (or your environment's python)
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
echo "[setup] ready: $PY"
