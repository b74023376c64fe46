"""One benchmark configuration, as the parent hands it to a worker process (through a JSON file)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from apps.bench.limit import LimitSampler
from apps.bench.timing import matmul_limit
from models.blip.dgl_model import DGLBlipModel
from models.dgl import DGL
from models.step_flops import DGLFlops, DGLBlipFlops

# --amp value -> the trainer's precision name (utils.step.autocast_context).
AMP_PRECISION = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class RunSpec:
    """A (model, latent space, checkpointing) configuration and the settings every section reads."""

    model: str
    variant: str
    grad_checkpointing: bool
    device: str
    amp: str
    frames: int
    batch_size: int
    eval_video_batch: int
    eval_text_batch: int
    compile: bool
    naive: bool
    repeats: int
    warmup: int
    sections: list[str]
    profile: int
    seed: int
    threads: int | None
    isolated: bool
    rerank_k: list[int] = field(default_factory=lambda: [16, 128])  # DGL-BLIP's ITM re-rank rows

    @property
    def precision(self) -> str:
        return AMP_PRECISION[self.amp]


@dataclass
class Bench:
    """A built model with what the sections share: its FLOP counts, the input generator, the GEMM-limit samples."""

    spec: RunSpec
    model: DGL | DGLBlipModel
    counts: DGLFlops | DGLBlipFlops  # models/step_flops.py's model_flops

    def __post_init__(self) -> None:
        self.device = torch.device(self.spec.device)
        self.generator = torch.Generator().manual_seed(self.spec.seed)
        width = self.model.clip.config.vision_width
        # The model's main GEMM shape: [B*L_video, D_v] x [D_v, 4*D_v] with B the training batch.
        self.gemm = (self.spec.batch_size * self.counts.video_tokens, width, 4 * width)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.spec.amp, torch.float32)
        self.limits = LimitSampler(lambda: matmul_limit(*self.gemm, self.device, dtype=dtype))

    def limit_now(self) -> float:
        """Samples of the machine's matrix-product limit just before a section (their best, provisional)."""
        return self.limits.before()

    def finish(self, stats: dict) -> None:
        """Samples just after the section; its limit is the best beside it, its efficiency never above 1.0."""
        self.limits.finish(stats)

    def videos(self, n: int) -> torch.Tensor:
        res = self.model.clip.config.image_resolution
        return torch.randn(n, self.spec.frames, 3, res, res, generator=self.generator).to(self.device)
