#!/usr/bin/env bash
# The GPU checks as one prepared run, for a lent GPU machine (its python3 holds a CUDA PyTorch, pytest and
# transformers, but no PyPI access; the text and JPEG libraries travel as wheels: on the CPU machine run
#   pip download -d wheels --only-binary=:all: --python-version 3.X ftfy regex wcwidth simplejpeg
# with its Python's version, then carry "wheels" (git-ignored); they are installed here with --no-index):
#   bash scripts/gpu_check.sh [OUT_DIR]        (default $OUT, else runs/gpu_check)
#   bash scripts/gpu_check.sh --dry-run [OUT_DIR]   on any machine, no GPU needed: collects every test file below
#     (an import error fails it), runs the CUDA test files (they skip without CUDA) and imports the benchmark;
#     tests/test_gpu_check.py runs it with the libraries the GPU image lacks (PyAV, ftfy, regex ...) blocked.
# 1. tests/test_cuda.py: GPU against CPU (features, loss, every gradient), the fused attention kernels
#    against the block-masked reference, bf16 autocast; with tests/test_dgl.py and tests/test_benchmark.py.
#    The parity tests against the official outputs (tests/fixtures, vendored) run as well.
#    tests/test_cuda_sync.py: the trainer's step (pinned batch, non_blocking copies, forward, loss, backward,
#    clipping, fused AdamW, the device-side StepMonitor) under torch.cuda.set_sync_debug_mode("error"), in fp32,
#    bf16 and fp16 with its GradScaler, with gradient caching and activation checkpointing, and on 2 ranks with
#    NCCL where 2 GPUs exist: any host-device synchronisation inside a step fails it (written without a GPU).
# 2. The benchmark on the GPU: ViT-B/32 and B/16, both variants, T=12, bf16 autocast, training batch 64.
# Everything printed is also written to OUT_DIR (gpu.txt, tests.txt, bench.txt, bench.json).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
OUT_DIR="${1:-${OUT:-runs/gpu_check}}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
tests=(tests/test_cuda.py tests/test_cuda_sync.py tests/test_dgl.py tests/test_benchmark.py tests/test_bench_limit.py
       tests/test_reference_parity.py tests/test_reference_sharpness.py)
cuda_tests=(tests/test_cuda.py tests/test_cuda_sync.py)
if [ "$dry_run" = 1 ]; then
  status=0
  { "$PY" -m pytest -q -p no:cacheprovider -p no:randomly --collect-only "${tests[@]}" &&
    "$PY" -m pytest -q -p no:cacheprovider -p no:randomly -rs "${cuda_tests[@]}" &&
    "$PY" -m apps.bench --help >/dev/null && echo "dry run: benchmark imports"; } 2>&1 | tee "$OUT_DIR/dry_run.txt" || status=1
  exit $status
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT_DIR/gpu.txt"
if [ -d wheels ]; then
  "$PY" -m pip install -q --no-index --find-links wheels ftfy regex simplejpeg 2>&1 | tee "$OUT_DIR/install.txt" || true
fi
status=0
"$PY" -m pytest -q -p no:cacheprovider "${tests[@]}" 2>&1 | tee "$OUT_DIR/tests.txt" || status=1
"$PY" -m apps.bench --device cuda --amp bf16 --models B/32,B/16 --batch_size 64 --sections train,video,text \
  --json_out "$OUT_DIR/bench.json" 2>&1 | tee "$OUT_DIR/bench.txt" || status=1
exit $status
