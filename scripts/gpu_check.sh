#!/usr/bin/env bash
# The GPU checks as one prepared run (its steps' time limits add up to 8 minutes), for a GPU machine whose python3 holds a
# CUDA PyTorch, pytest and transformers, but no PyPI access. PyAV and the text libraries travel as wheels: on the
# CPU machine run
#   pip download -d wheels --only-binary=:all: --python-version 3.X ftfy regex wcwidth simplejpeg av
# with its Python's version, then carry "wheels" (git-ignored); they are installed here with --no-index.
#   bash scripts/gpu_check.sh [OUT_DIR]             (default runs/gpu_check)
#   bash scripts/gpu_check.sh --tiny [OUT_DIR]      every step at a tiny size (tiny random CLIP, B=2, T=2, 4 videos)
#   bash scripts/gpu_check.sh --dry-run [OUT_DIR]   on any machine, no GPU needed: collects every test file below
#     (an import error fails it), runs the CUDA test files (they skip without CUDA), then steps 2-5 with --tiny on
#     the CPU; tests/test_gpu_check.py runs it with the libraries the GPU image lacks (PyAV, ftfy, regex ...)
#     blocked and checks the JSON's fields.
# 1. Tests: tests/test_cuda.py (GPU against CPU: features, loss, every gradient; the fused attention kernels against
#    the block-masked reference; bf16 autocast), tests/test_cuda_sync.py (the trainer's step under
#    torch.cuda.set_sync_debug_mode("error"): any host-device synchronisation inside a step fails it), the model
#    and benchmark tests, and the parity tests against the official outputs (tests/fixtures, vendored).
# 2. Training step, bf16 autocast, ViT-B/32 at the official per-GPU batch (B=128, T=12), both latent spaces, with
#    and without activation checkpointing: throughput, model FLOP utilisation (models/flops.py's count over the
#    in-run bf16 matmul limit) and peak memory.
# 3. Video and text encoding throughput (128 videos, 1024 captions per batch).
# 3b. DGL-BLIP (random BLIP base, 224 px): the recipe's full fine-tuning step (B=8, T=8; ITC with a full queue, ITM)
#    with and without activation checkpointing, video and text encoding, and the ITM re-rank stage for K = 16, 128
#    on 1,000 x 1,000 (timed on one query, scaled by pairs).
# 4. The real-size evaluation: main.py --do_eval 1 on 1000 generated MSR-VTT-shaped videos, read from the raw frame
#    cache (apps/bench/real_size_eval.py); skipped, with the reason, where PyAV or ftfy is missing.
# 5. scripts/gpu_report.py merges the parts into OUT_DIR/gpu_check.json (its fields: that file's docstring);
#    everything printed is in OUT_DIR/gpu_check.log. A failing step leaves an error entry, never loses the others.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dry_run=0 tiny=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 tiny=1; shift ;;
    --tiny) tiny=1; shift ;;
    -*) echo "gpu_check.sh: unknown flag $1 (flags: --dry-run, --tiny, then OUT_DIR)" >&2; exit 2 ;;
    *) break ;;
  esac
done
OUT_DIR="${1:-runs/gpu_check}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT_DIR"
PARTS=$(mktemp -d)
trap 'rm -rf "$PARTS"' EXIT
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
tests=(tests/test_cuda.py tests/test_cuda_sync.py tests/test_dgl.py tests/test_exact_savings.py tests/test_benchmark.py
       tests/test_bench_limit.py tests/test_reference_parity.py tests/test_reference_sharpness.py)
cuda_tests=(tests/test_cuda.py tests/test_cuda_sync.py)
# Each step's time limit (seconds): tests, training, encoding, evaluation, DGL-BLIP training and encoding; 8 minutes
# at most in all on a GPU.
if [ "$tiny" = 1 ]; then
  size=(--models tiny --frames 2 --batch_size 2 --repeats 1 --warmup 0 --in_process)
  encode=(--eval_video_batch 2 --eval_text_batch 4) eval_videos=4 limits=(300 300 300 300 300 300)
  blip=(--models blip-tiny --frames 2 --batch_size 2 --repeats 1 --warmup 0 --in_process --eval_video_batch 2 --eval_text_batch 4)
else
  size=(--models B/32 --frames 12 --batch_size 128 --amp bf16)
  encode=(--eval_video_batch 128 --eval_text_batch 1024) eval_videos=1000 limits=(120 120 70 90 50 30)
  blip=(--models blip-base --frames 8 --batch_size 8 --amp bf16 --eval_video_batch 32 --eval_text_batch 256)
fi
workers=$(( $(nproc) < 8 ? $(nproc) : 8 ))

"$PY" - "$PARTS/machine.json" <<'EOF'
import datetime, json, os, platform, subprocess, sys
import torch
lines = open("/proc/cpuinfo").read().splitlines() if os.path.exists("/proc/cpuinfo") else []
cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git.stdout.strip() or None, "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "cpu": cpu, "cores": os.cpu_count()}
open(sys.argv[1], "w").write(json.dumps(info) + "\n")
print(info)
EOF
if [ -d wheels ]; then
  "$PY" -m pip install -q --no-index --find-links wheels ftfy regex simplejpeg av || true
fi

# 1. Tests (the dry run: collect them all, run the CUDA ones).
set +e
if [ "$dry_run" = 1 ]; then
  { "$PY" -m pytest -q -p no:cacheprovider -p no:randomly --collect-only "${tests[@]}" &&
    "$PY" -m pytest -q -p no:cacheprovider -p no:randomly -rs "${cuda_tests[@]}"; } > "$PARTS/tests.txt" 2>&1
else
  timeout "${limits[0]}" "$PY" -m pytest -q -p no:cacheprovider "${tests[@]}" > "$PARTS/tests.txt" 2>&1
fi
echo $? > "$PARTS/tests.rc"
cat "$PARTS/tests.txt"

# 2-3. The benchmark (each configuration in its own process on the GPU, so its memory peak is its own).
timeout "${limits[1]}" "$PY" -m apps.bench "${size[@]}" --variants transformer,linear --grad_checkpointing both \
  --sections train --json_out "$PARTS/bench_train.json"
timeout "${limits[2]}" "$PY" -m apps.bench "${size[@]}" "${encode[@]}" --variants transformer,linear --sections video,text \
  --json_out "$PARTS/bench_encode.json"
timeout "${limits[4]}" "$PY" -m apps.bench "${blip[@]}" --variants full --grad_checkpointing both --sections train \
  --json_out "$PARTS/bench_blip_train.json"
timeout "${limits[5]}" "$PY" -m apps.bench "${blip[@]}" --variants full --sections video,text,rerank \
  --json_out "$PARTS/bench_blip_encode.json"

# 4. The real-size evaluation, where the image can decode video and tokenize.
if missing=$("$PY" -c "import av, ftfy, regex" 2>&1); then
  model=$([ "$tiny" = 1 ] && echo tiny || echo B/32)
  timeout "${limits[3]}" "$PY" -m apps.bench.real_size_eval --videos "$eval_videos" --model "$model" --sources raw_cache \
    --workers "$workers" --workdir "$PARTS/eval_work" 2>&1 | tee "$PARTS/eval.txt"
else
  echo "PyAV, ftfy and regex are needed to generate and read the videos: carry them as wheels (see the header): ${missing##*$'\n'}" \
    | tee "$PARTS/eval_skipped.txt"
fi
set -e

# 5. One JSON; the exit status says whether the tests passed and every part came back.
status=0
"$PY" scripts/gpu_report.py "$PARTS" "$OUT_DIR/gpu_check.json" $([ "$tiny" = 1 ] && echo --tiny) || status=1
echo "wrote $OUT_DIR/gpu_check.json"
[ "$(cat "$PARTS/tests.rc")" = 0 ] || status=1
exit $status
