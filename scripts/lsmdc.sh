#!/usr/bin/env bash
# LSMDC with the official recipe (8 GPUs x 64, lr 1e-2, 10 epochs); the released checkpoint is DGL-Linear.
#   train:    DATA=/data/lsmdc bash scripts/lsmdc.sh
#   evaluate: do_train=0 do_eval=1 resume=ckpt.best.pth.tar bash scripts/lsmdc.sh
# DATA holds the LSMDC16_*.csv files, video_path.json and videos/.
set -euo pipefail
GPUS=${GPUS:-8}
shared_latent_space=${shared_latent_space:-linear}
DATA=${DATA:-data/lsmdc}
output_dir=${output_dir:-logs/lsmdc_dgl_${shared_latent_space}_lr1e-2}
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
launch --datatype lsmdc --data_path "$DATA" --features_path "${VIDEOS:-$DATA/videos}" \
  --lr 1e-2 --epochs 10 --batch_size 64 --batch_size_val 32 --max_words 32 --max_frames 12 \
  --num_thread_reader 8 --n_display 40
