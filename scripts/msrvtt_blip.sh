#!/usr/bin/env bash
# MSR-VTT with DGL-BLIP (--model dgl_blip) and the tokenmix video-BLIP recipe: the whole BLIP fine-tuned at
# 1e-5 (the global prompts at 1e-4), weight decay 0.05, 6 epochs, batch 8 per GPU, cosine to 0 without warm-up,
# 224 px, 8 frames, 35 words, ITC (queue 57,600, alpha 0.4, momentum 0.995) + ITM, evaluation re-ranking the top 128.
#   train:    DATA=/data/msrvtt CLIP=weights/model_base_retrieval_coco.pth bash scripts/msrvtt_blip.sh
#   evaluate: do_train=0 do_eval=1 resume=logs/msrvtt_dgl_blip/checkpoint_best.pt bash scripts/msrvtt_blip.sh
# CLIP: BLIP's retrieval weights (original .pth with BERT's vocab.txt beside it, or a Hugging Face
# BlipForImageTextRetrieval folder); its 384 px position embeddings are interpolated to 224 px as BLIP's loader does.
set -euo pipefail
GPUS=${GPUS:-8}
shared_latent_space=""
DATA=${DATA:-data/msrvtt}
CLIP=${CLIP:-model_base_retrieval_coco.pth}
output_dir=${output_dir:-logs/msrvtt_dgl_blip}
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
launch --datatype msrvtt --expand_msrvtt_sentences --backbone blip --model dgl_blip --freeze_clip 0 \
  --train_csv "$DATA/MSRVTT_train.9k.csv" --val_csv "$DATA/MSRVTT_JSFUSION_test.csv" \
  --data_path "$DATA/MSRVTT_data.json" --features_path "${VIDEOS:-$DATA/videos}" \
  --lr 1e-4 --coef_lr 0.1 --wd 0.05 --warmup_proportion 0 --epochs 6 --batch_size 8 --batch_size_val 16 \
  --image_resolution 224 --max_words 35 --max_frames 8 --queue_size 57600 --alpha 0.4 --momentum 0.995 --itm_weight 1 \
  --itm_rerank 128 --num_thread_reader 8 --n_display 50
