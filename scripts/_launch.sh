# Sourced by the dataset scripts: `launch ARGS...` runs main.py on $GPUS processes per node (torchrun) or one.
# Environment overrides shared by all recipes: GPUS, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT,
# do_train, do_eval, resume, shared_latent_space, output_dir, CLIP (name or file), CLIP_DIR, EXTRA (more flags).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
do_train=${do_train:-1}
do_eval=${do_eval:-0}
launch() {
  local common=(--do_train "$do_train" --do_eval "$do_eval" --pretrained_clip_name "${CLIP:-ViT-B/32}"
                --output_dir "$output_dir" --optim AdamW --coef_lr 1e-3 --wd 0.2 --precision amp --freeze_clip 1
                --seed 42)
  # DGL's variant; empty for a model without one (scripts/msrvtt_blip.sh). Recipes override the rest by flags.
  [ -n "${shared_latent_space:-}" ] && common+=(--shared_latent_space "$shared_latent_space")
  [ -n "${CLIP_DIR:-}" ] && common+=(--pretrained_dir "$CLIP_DIR")
  [ -n "${resume:-}" ] && common+=(--resume "$resume")
  if [ "${NNODES:-1}" -gt 1 ]; then
    exec "$PY" -m torch.distributed.run --nproc_per_node="${GPUS:-1}" --nnodes="${NNODES:-1}" \
      --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
      main.py "${common[@]}" "$@" ${EXTRA:-}
  fi
  # One machine: main.py runs GPUS processes (torchrun for more than one; GPUS=1 is this process alone, whatever
  # CUDA_VISIBLE_DEVICES shows), and refuses more than are visible.
  DGL_GPUS="${GPUS:-1}" exec "$PY" main.py "${common[@]}" "$@" ${EXTRA:-}
}
