"""Speed, memory and efficiency benchmark of DGL on random ViT-B/32- and ViT-B/16-shaped CLIP weights.

Run ``bash scripts/bench.sh --quick`` (ViT-B/32, both latent spaces, a few repeats) or
``python -m apps.bench --help``. Nothing is downloaded (:mod:`apps.bench.inputs`). Each (model, latent space,
checkpointing) configuration runs in a fresh subprocess, so that its memory high-water mark is its own
(:mod:`apps.bench.runner`). Sections (:mod:`apps.bench.sections`):

1. ``train_step``: the trainer's own step (``utils.step.TrainStep``: forward, symmetric InfoNCE, backward,
   grad-norm clip 1.0 and an AdamW step over the trainable parameters) on B random videos ``[B, T, 3, H, W]``
   and B random captions. Peak memory (:mod:`apps.bench.memory`) is the CUDA allocator peak on GPU; on CPU the
   process resident high-water mark over the warm-up steps. Both are reported as the increase over the loaded
   model (weights only, before the first step), so they include gradients, AdamW state and activations.
2. ``encode_video`` / ``encode_text``: evaluation throughput under ``inference_mode``, with the prompts
   computed once beforehand (they do not depend on the input). Captions are SOT + 10..15 random words +
   EOT, zero padded to 32 words (the model drops the padding after the batch's last EOT itself).
3. ``data``: DataLoader throughput (:mod:`apps.bench.data`).
4. Efficiency: achieved FLOP/s from the analytic count (:mod:`models.flops`, formulas there), divided by the
   FLOP/s of a plain matrix product (in the autocast dtype, else fp32) of the model's main GEMM shape, ``[B*L_video, D_v] x [D_v, 4*D_v]``
   with B the training batch, measured in the same subprocess before each section; efficiency uses the median
   of those samples (the machine's practical limit during that configuration).

``--naive`` additionally times a reference formulation of the visual global-local attention
(:mod:`apps.bench.naive`: one masked attention over all G + T*S tokens of a video, reusing the model's
blocks). Its rows use the same useful-FLOP count, so their efficiency compares directly with the model's.
"""
