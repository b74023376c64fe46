"""Speed, memory and efficiency benchmark of DGL on random ViT-B/32- and B/16-shaped CLIP weights, and of
DGL-BLIP on a random BLIP base: ``bash scripts/bench.sh --quick`` or ``python -m apps.bench --help``; what each
section measures and how to read it: docs/benchmarks.md. Nothing is downloaded (:mod:`apps.bench.inputs`); each
configuration runs in a fresh subprocess, so that its memory high-water mark is its own (:mod:`apps.bench.runner`).
Sections: :mod:`apps.bench.sections` (training step, encoding, DGL-BLIP's re-rank), :mod:`apps.bench.loader`
(``data``), :mod:`apps.bench.loader_rows` and :mod:`apps.bench.real_size_eval` (data at scale). Efficiency is the
analytic FLOPs (models/step_flops.py's ``model_flops``) per second over the matmul limit measured beside each
section (:mod:`apps.bench.limit`); ``--naive`` adds the block-masked reference attention (:mod:`apps.bench.naive`).
"""
