#!/usr/bin/env bash
# ActivityNet Captions, paragraph-to-video, official recipe (8 GPUs x 16, lr 1e-2, 10 epochs, 64 frames
# and 64 words); the released checkpoint is DGL-Transformer.
#   train:    DATA=/data/activitynet bash scripts/activitynet.sh
#   evaluate: do_train=0 do_eval=1 resume=ckpt.best.pth.tar bash scripts/activitynet.sh
# DATA holds train_ids.json, val_ids.json, train.json, val_1.json, video_path.json and videos/.
set -euo pipefail
GPUS=${GPUS:-8}
shared_latent_space=${shared_latent_space:-transformer}
DATA=${DATA:-data/activitynet}
output_dir=${output_dir:-logs/activitynet_dgl_${shared_latent_space}_lr1e-2}
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
launch --datatype activity --data_path "$DATA" --features_path "${VIDEOS:-$DATA/videos}" \
  --lr 1e-2 --epochs 10 --batch_size 16 --batch_size_val 16 --max_words 64 --max_frames 64 \
  --num_thread_reader 6 --n_display 50
