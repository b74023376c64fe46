#!/usr/bin/env bash
# VATEX with the official recipe (8 GPUs x 64, lr 5e-3, 10 epochs); the released checkpoint is DGL-Linear.
#   train:    DATA=/data/vatex bash scripts/vatex.sh
#   evaluate: do_train=0 do_eval=1 resume=ckpt.best.pth.tar bash scripts/vatex.sh
# DATA holds train_list.txt, test_list.txt, ref_captions.json and videos/.
set -euo pipefail
GPUS=${GPUS:-8}
shared_latent_space=${shared_latent_space:-linear}
DATA=${DATA:-data/vatex}
output_dir=${output_dir:-logs/vatex_dgl_${shared_latent_space}_lr5e-3}
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
launch --datatype vatex --data_path "$DATA" --features_path "${VIDEOS:-$DATA/videos}" \
  --lr 5e-3 --epochs 10 --batch_size 64 --batch_size_val 16 --max_words 32 --max_frames 12 \
  --num_thread_reader 8 --n_display 50
