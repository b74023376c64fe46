#!/usr/bin/env bash
# MSR-VTT with the official recipe (4 GPUs x 128 = 512 pairs, lr 2e-3, 5 epochs, 12 frames, 32 words).
#   train:    DATA=/data/msrvtt bash scripts/msrvtt.sh
#   evaluate: do_train=0 do_eval=1 resume=ckpt.best.pth.tar bash scripts/msrvtt.sh
# DATA holds MSRVTT_train.9k.csv, MSRVTT_JSFUSION_test.csv, MSRVTT_data.json and videos/ (3 fps, 224 short side).
set -euo pipefail
GPUS=${GPUS:-4}
shared_latent_space=${shared_latent_space:-transformer}
DATA=${DATA:-data/msrvtt}
output_dir=${output_dir:-logs/msrvtt_dgl_${shared_latent_space}_lr2e-3}
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
launch --datatype msrvtt --expand_msrvtt_sentences \
  --train_csv "$DATA/MSRVTT_train.9k.csv" --val_csv "$DATA/MSRVTT_JSFUSION_test.csv" \
  --data_path "$DATA/MSRVTT_data.json" --features_path "${VIDEOS:-$DATA/videos}" \
  --lr 2e-3 --epochs 5 --batch_size 128 --batch_size_val 16 --max_words 32 --max_frames 12 \
  --num_thread_reader 8 --n_display 50
