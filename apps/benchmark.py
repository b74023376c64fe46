"""Speed, memory and efficiency benchmark of DGL on random ViT-B/32- and ViT-B/16-shaped CLIP weights.

Run ``bash scripts/bench.sh --quick`` (ViT-B/32, both latent spaces, a few repeats) or see ``--help``.
Nothing is downloaded: a random OpenAI-format state dict is built from the shapes and loaded with
``CLIP.from_state_dict``. Each (model, latent space, checkpointing) configuration runs in a fresh
subprocess, so that its memory high-water mark is its own. Sections:

1. ``train_step``: forward, symmetric InfoNCE, backward, grad-norm clip 1.0 and an AdamW step over the
   trainable parameters, on B random videos ``[B, T, 3, H, W]`` and B random captions. Peak memory is the
   CUDA allocator peak (``max_memory_allocated``) on GPU; on CPU the process resident high-water mark
   (``VmHWM``, reset through ``/proc/self/clear_refs`` after loading; ``ru_maxrss`` where that is not
   available), measured over the warm-up steps with glibc's mmap threshold lowered (from the worker's start)
   so that RSS follows live tensors (``--in_process`` cannot do that and over-reports, mostly with
   checkpointing). Both are reported as the increase over the loaded model (weights only, before the first
   step), so they include gradients, AdamW state and activations.
2. ``encode_video`` / ``encode_text``: evaluation throughput under ``inference_mode``, with the prompts
   computed once beforehand (they do not depend on the input). Captions are SOT + 10..15 random words +
   EOT, zero padded to 32 words (the model drops the padding after the batch's last EOT itself).
3. ``data``: DataLoader throughput via ``apps.loader_throughput.measure_loader`` when that module exists
   and data paths are given; otherwise the section is skipped with a line saying why.
4. Efficiency: achieved FLOP/s from the analytic count below, divided by the FLOP/s of a plain fp32 matrix
   product of the model's main GEMM shape, ``[B*L_video, D_v] x [D_v, 4*D_v]`` with B the training batch,
   measured in the same subprocess right before and after each section; the limit is the best of those
   samples, their spread is reported, and an efficiency above 1.0 is never printed (apps/bench_limit.py).

FLOP count (a multiply-add is 2 FLOPs). Only matrix products are counted: no LayerNorm, softmax, GELU,
elementwise, embedding lookup, optimizer, or activation-checkpointing recomputation (so checkpointing
shows up as lower efficiency: this is "model FLOPs utilisation"). Per frozen pre-LN block over N tokens of
width D whose attention scores cover ``pairs`` (query, key) pairs in total:

    forward  = 24*N*D^2            (QKV 6ND^2 + out-proj 2ND^2 + MLP 2*4ND^2 + 2*4ND^2)
             + 4*D*pairs           (Q.K^T and P.V, all heads together)
    backward = 24*N*D^2 + 8*D*pairs

The weights are frozen, so backward computes input gradients only: each frozen GEMM costs 1x its forward
(no weight gradients); the attention products cost 2x (dQ, dK, dV and dP: four products for two).

Video (per video; S = 1 + P_local + grid^2 tokens per frame, L = G + T*S tokens per video):
    pairs   = T*S*(G + S)   (frame tokens see their frame and the video's G globals)
            + G*L           (globals see the whole video)
    The last block computes only the R = G + T rows that pooling can read (globals, frame CLS tokens):
    last    = 4*L*D^2 (keys, values of every token) + 20*R*D^2 (queries, out-proj, MLP of R rows)
            + 4*D*(G*L + T*(G + S));  last_bw = the same with 8*D*(...)
    forward = (layers_v - 1) * block(L, D_v, pairs) + last + stem 2*T*grid^2*(3*p^2)*D_v + head 2*D_v*E*k
    backward= (layers_v - 1) * block_bw(L, D_v, pairs) + last_bw + head 2*D_v*E*k; the stem gets no gradient
    (k = tokens pooled: 1 for global_prompt0.)
Text (per caption; L_t = SOT + P_text/2 prefix prompts + words actually encoded, i.e. (last EOT position in
the batch + 1) + P_text/2, as seen entering the first text block; the postfix prompts and the padding cannot
reach the EOT row and are not encoded): pairs = L_t^2 (the dense square, although the causal kernel may skip
half; < 2 % of text FLOPs),
    forward = layers_t * block(L_t, D_t, L_t^2) + head 2*D_t*E;  backward = same with block_bw.
Prompt generator (once per step, training only; its weights train, so backward = 2x forward):
    transformer: NL * block(P_text + P_local*T, D_v, (P_text + P_local*T)^2) + NL*P_text*(4*D_v^2 + 4*D_v*D_t)
    linear:      2 * NL * P_local * 2*D_v*D_t   (prefix and postfix maps)
Logits: 2*B^2*E forward, 4*B^2*E backward.
Training step = all forwards + all backwards. Eval sections = the video or text forward only.
Without the attention products (``attention=False``) the count equals ``torch.utils.flop_counter``'s for a
whole training step (tests/test_benchmark.py); that counter has no formula for the CPU attention kernel.

``--naive`` additionally times a reference formulation of the visual global-local attention
(:func:`naive_encode_video`: one masked attention over all G + T*S tokens of a video, reusing the model's
blocks). Its rows use the same useful-FLOP count, so their efficiency compares directly with the model's.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import inspect
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from apps.bench_limit import LimitSampler, efficiency_cell, limit_note
from apps.bench_scale import scale_rows, scale_sections
from models.clip import CLIP, ResidualAttentionBlock
from models.dgl import DGL, DGLConfig, contrastive_loss
from models.pretrained import CLIPConfig, expected_clip_keys
from models.prompts import Prompts

ROOT = Path(__file__).resolve().parents[1]
_MB = 1024 * 1024

# ----------------------------------------------------------------------------------------- model shapes

MODEL_PRESETS: dict[str, CLIPConfig] = {
    "B/32": CLIPConfig(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_heads=12,
                       vision_patch_size=32, grid_size=7, context_length=77, vocab_size=49408, text_width=512,
                       text_heads=8, text_layers=12),
    "B/16": CLIPConfig(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_heads=12,
                       vision_patch_size=16, grid_size=14, context_length=77, vocab_size=49408, text_width=512,
                       text_heads=8, text_layers=12),
    # For tests and smoke runs only: two heads in the vision tower, one in the text tower.
    "tiny": CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_heads=2,
                       vision_patch_size=8, grid_size=4, context_length=77, vocab_size=512, text_width=64,
                       text_heads=1, text_layers=2),
}


def _model_name(name: str) -> str:
    key = name.strip().removeprefix("ViT-")
    if key not in MODEL_PRESETS:
        raise argparse.ArgumentTypeError(f"unknown model {name!r}; choose from {', '.join(MODEL_PRESETS)}")
    return key


def clip_state_dict_shapes(cfg: CLIPConfig) -> "OrderedDict[str, tuple[int, ...]]":
    """Every tensor of an OpenAI ViT CLIP state dict with its shape, in OpenAI's key order."""
    dv, dt, grid, patch = cfg.vision_width, cfg.text_width, cfg.grid_size, cfg.vision_patch_size

    def block(width: int) -> dict[str, tuple[int, ...]]:
        return {
            "attn.in_proj_weight": (3 * width, width), "attn.in_proj_bias": (3 * width,),
            "attn.out_proj.weight": (width, width), "attn.out_proj.bias": (width,),
            "ln_1.weight": (width,), "ln_1.bias": (width,),
            "mlp.c_fc.weight": (4 * width, width), "mlp.c_fc.bias": (4 * width,),
            "mlp.c_proj.weight": (width, 4 * width), "mlp.c_proj.bias": (width,),
            "ln_2.weight": (width,), "ln_2.bias": (width,),
        }

    shapes: dict[str, tuple[int, ...]] = {
        "positional_embedding": (cfg.context_length, dt), "text_projection": (dt, cfg.embed_dim), "logit_scale": (),
        "visual.class_embedding": (dv,), "visual.positional_embedding": (grid * grid + 1, dv),
        "visual.proj": (dv, cfg.embed_dim), "visual.conv1.weight": (dv, 3, patch, patch),
        "visual.ln_pre.weight": (dv,), "visual.ln_pre.bias": (dv,),
        "visual.ln_post.weight": (dv,), "visual.ln_post.bias": (dv,),
        "token_embedding.weight": (cfg.vocab_size, dt), "ln_final.weight": (dt,), "ln_final.bias": (dt,),
    }
    for prefix, width, layers in (("visual.transformer", dv, cfg.vision_layers), ("transformer", dt, cfg.text_layers)):
        for i in range(layers):
            shapes.update({f"{prefix}.resblocks.{i}.{key}": shape for key, shape in block(width).items()})
    return OrderedDict((key, shapes[key]) for key in expected_clip_keys(cfg))


def random_clip_state_dict(cfg: CLIPConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random fp32 weights with CLIP-like scales: matrices N(0, 1/fan_in), LayerNorms identity, small biases."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, shape in clip_state_dict_shapes(cfg).items():
        if key == "logit_scale":
            tensor = torch.tensor(math.log(100.0))
        elif key.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
            tensor = torch.ones(shape)
        elif key.endswith(".bias"):
            tensor = 0.02 * torch.randn(shape, generator=gen)
        elif key in ("token_embedding.weight", "positional_embedding"):
            tensor = 0.02 * torch.randn(shape, generator=gen)
        elif key in ("visual.class_embedding", "visual.positional_embedding"):
            tensor = cfg.vision_width**-0.5 * torch.randn(shape, generator=gen)
        else:  # weight matrices; fan_in is the input size (dim 0 for the right-multiplied projections)
            fan_in = shape[0] if key in ("text_projection", "visual.proj") else math.prod(shape[1:])
            tensor = fan_in**-0.5 * torch.randn(shape, generator=gen)
        out[key] = tensor
    return out


def random_captions(n: int, vocab_size: int, max_words: int = 32, min_len: int = 10, max_len: int = 15,
                    seed: int = 0) -> torch.Tensor:
    """``[n, max_words]`` ids: SOT, ``min_len..max_len`` random words, EOT (the largest id), zero padding."""
    gen = torch.Generator().manual_seed(seed)
    sot, eot = vocab_size - 2, vocab_size - 1
    ids = torch.zeros(n, max_words, dtype=torch.long)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=gen).clamp(max=max_words - 2)
    for row, length in enumerate(lengths.tolist()):
        ids[row, 0] = sot
        ids[row, 1 : 1 + length] = torch.randint(1, sot, (length,), generator=gen)
        ids[row, 1 + length] = eot
    return ids


# ----------------------------------------------------------------------------------------- FLOP count


@dataclass(frozen=True)
class Shapes:
    """The sizes the FLOP count needs (see the module docstring for the formulas)."""

    vision_width: int
    vision_layers: int
    patch: int
    grid: int
    text_width: int
    text_layers: int
    embed: int
    frames: int
    global_prompts: int
    local_prompts: int
    text_prompts: int
    prompt_layers: int
    variant: str
    pooled_tokens: int = 1

    @classmethod
    def of(cls, model: DGL, frames: int) -> "Shapes":
        ccfg, cfg = model.clip.config, model.config
        pooled = {"global_prompt0": 1, "average_global_prompt": cfg.global_prompt_length,
                  "average_frame_cls_token": frames,
                  "average_global_prompt_and_frame_cls_token": cfg.global_prompt_length + frames}
        return cls(ccfg.vision_width, ccfg.vision_layers, ccfg.vision_patch_size, ccfg.grid_size, ccfg.text_width,
                   ccfg.text_layers, ccfg.embed_dim, frames, cfg.global_prompt_length, cfg.local_prompt_length,
                   cfg.text_prompt_length, model.prompt_layers, cfg.shared_latent_space,
                   pooled[cfg.visual_output_type])

    @property
    def tokens_per_frame(self) -> int:
        return 1 + self.local_prompts + self.grid**2

    @property
    def video_tokens(self) -> int:
        return self.global_prompts + self.frames * self.tokens_per_frame


def block_flops(tokens: int, width: int, pairs: int, backward: bool = False) -> int:
    """A frozen pre-LN block: 24·N·D² GEMM FLOPs plus 4·D·pairs attention FLOPs (backward: 1x and 2x)."""
    return 24 * tokens * width * width + (8 if backward else 4) * width * pairs


def video_flops(s: Shapes, videos: int = 1, attention: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of ``videos`` videos through the visual tower.

    ``attention=False`` leaves out the score/value products (the weight GEMMs and the stem only), which is
    what ``torch.utils.flop_counter`` sees on CPU, where it has no formula for the fused attention kernel.
    """
    L, S, G, T, D = s.video_tokens, s.tokens_per_frame, s.global_prompts, s.frames, s.vision_width
    pairs = (T * S * (G + S) + G * L) if attention else 0
    last_pairs = (G * L + T * (G + S)) if attention else 0
    last_gemm = 4 * L * D * D + 20 * (G + T) * D * D
    stem = 2 * T * s.grid**2 * (3 * s.patch**2) * D
    head = 2 * D * s.embed * s.pooled_tokens
    fwd = (s.vision_layers - 1) * block_flops(L, D, pairs) + last_gemm + 4 * D * last_pairs + stem + head
    bwd = (s.vision_layers - 1) * block_flops(L, D, pairs, backward=True) + last_gemm + 8 * D * last_pairs + head
    return videos * fwd, videos * bwd


def text_flops(s: Shapes, captions: int, kept_words: int, attention: bool = True,
               tokens: int | None = None) -> tuple[int, int]:
    """(forward, backward) FLOPs of ``captions`` captions encoded with ``kept_words`` id slots (SOT .. last EOT).

    ``tokens`` overrides the sequence length ``kept_words + P_text / 2`` (words and prefix prompts; the benchmark
    passes the length it saw entering the first text block, so the count follows the model if it changes).
    """
    L, D = tokens or kept_words + s.text_prompts // 2, s.text_width
    pairs = L * L if attention else 0
    head = 2 * D * s.embed
    fwd = s.text_layers * block_flops(L, D, pairs) + head
    bwd = s.text_layers * block_flops(L, D, pairs, backward=True) + head
    return captions * fwd, captions * bwd


def prompt_flops(s: Shapes, attention: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of one prompt-generator call (trainable: backward = 2x forward)."""
    dv, dt, nl = s.vision_width, s.text_width, s.prompt_layers
    if s.variant == "transformer":
        n = s.text_prompts + s.local_prompts * s.frames
        fwd = nl * block_flops(n, dv, n * n if attention else 0) + nl * s.text_prompts * (4 * dv * dv + 4 * dv * dt)
    else:
        fwd = 2 * nl * s.local_prompts * 2 * dv * dt
    return fwd, 2 * fwd


def kept_words(ids: torch.Tensor) -> int:
    """Id slots the model encodes: SOT up to the batch's last EOT (padding after it is dropped)."""
    return int(ids.argmax(dim=-1).max()) + 1


def train_step_flops(s: Shapes, batch: int, kept: int, attention: bool = True,
                     text_tokens: int | None = None) -> dict[str, int]:
    """FLOPs of one training step by part; ``total`` is what the efficiency uses."""
    vf, vb = video_flops(s, batch, attention)
    tf, tb = text_flops(s, batch, kept, attention, text_tokens)
    pf, pb = prompt_flops(s, attention)
    lf, lb = 2 * batch * batch * s.embed, 4 * batch * batch * s.embed
    return {"video_fwd": vf, "video_bwd": vb, "text_fwd": tf, "text_bwd": tb, "prompt_fwd": pf, "prompt_bwd": pb,
            "logits": lf + lb, "total": vf + vb + tf + tb + pf + pb + lf + lb}


# ----------------------------------------------------------------------------------------- naive reference


def global_local_mask(num_global: int, frames: int, tokens_per_frame: int, device=None) -> torch.Tensor:
    """``[L, L]`` bool (True = may attend): globals see all; frame tokens see the globals and their own frame."""
    length = num_global + frames * tokens_per_frame
    frame_of = torch.arange(frames * tokens_per_frame, device=device) // tokens_per_frame
    mask = torch.ones(length, length, dtype=torch.bool, device=device)
    mask[num_global:, num_global:] = frame_of[:, None] == frame_of[None, :]
    return mask


def naive_global_local_block(block: ResidualAttentionBlock, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The block with one masked attention over the whole video sequence (same frozen weights)."""
    q, k, v = (t.transpose(1, 2) for t in block.attn.qkv(block.ln_1(x)))  # [B, heads, L, head_dim]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    x = x + block.attn.merge(out.transpose(1, 2))
    return x + block.mlp(block.ln_2(x))


def naive_encode_video(model: DGL, video: torch.Tensor, prompts: Prompts | None = None,
                       output_type: str | None = None) -> torch.Tensor:
    """Reference for ``model.encode_video``: the global-local attention as one block-masked attention.

    Costs O((G + T·S)²) attention per video instead of the model's O(T·S·(G + S) + G·(G + T·S)).
    """
    output_type = output_type or model.config.visual_output_type
    local = (prompts or model.prompts()).local  # [layers, T or 1, P_local, D]
    visual = model.clip.visual
    batch, frames = video.shape[:2]
    tokens = visual.embed(video.flatten(0, 1)).unflatten(0, (batch, frames))  # [B, T, 1 + grid², D]
    local = local.to(tokens.dtype).expand(-1, frames, -1, -1)
    num_global, num_local = model.config.global_prompt_length, local.shape[2]
    per_frame = tokens.shape[2] + num_local

    def with_local(frame_tokens: torch.Tensor, layer: int) -> torch.Tensor:  # [B, T, S', D] -> [B, T, S, D]
        prompts_i = local[layer].expand(batch, -1, -1, -1)
        return torch.cat([frame_tokens[:, :, :1], prompts_i, frame_tokens[:, :, -(per_frame - 1 - num_local):]], dim=2)

    x = torch.cat([model.global_prompts.to(tokens.dtype).expand(batch, -1, -1),
                   with_local(tokens, 0).flatten(1, 2)], dim=1)
    mask = global_local_mask(num_global, frames, per_frame, device=x.device)
    for i, block in enumerate(visual.transformer.resblocks):
        if 0 < i < model.prompt_layers:
            frame_part = with_local(x[:, num_global:].unflatten(1, (frames, per_frame)), i)
            x = torch.cat([x[:, :num_global], frame_part.flatten(1, 2)], dim=1)
        if model.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(naive_global_local_block, block, x, mask, use_reentrant=False)
        else:
            x = naive_global_local_block(block, x, mask)
    frame_cls = x[:, num_global::per_frame]
    if output_type == "global-local-feature":
        return visual.project(torch.cat([x[:, :1], frame_cls], dim=1))
    chosen = {"global_prompt0": x[:, :1], "average_global_prompt": x[:, :num_global],
              "average_frame_cls_token": frame_cls,
              "average_global_prompt_and_frame_cls_token": torch.cat([x[:, :num_global], frame_cls], dim=1)}
    return visual.project(chosen[output_type]).mean(dim=1)


# ----------------------------------------------------------------------------------------- measuring


def build_model(model_name: str, variant: str, frames: int, seed: int = 0) -> DGL:
    cfg = MODEL_PRESETS[model_name]
    state_dict = random_clip_state_dict(cfg, seed)
    clip = CLIP.from_state_dict(state_dict, source=f"random {model_name}")
    del state_dict
    torch.manual_seed(seed)
    return DGL(clip, DGLConfig(shared_latent_space=variant, max_frames=frames))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock seconds per call, and process CPU seconds per call (all threads; a noisy-machine diagnostic)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return times, cpu


@contextlib.contextmanager
def first_input_length(module: torch.nn.Module):
    """Records ``shape[1]`` of the first input ``module`` sees (the sequence length actually processed)."""
    seen: list[int] = []
    handle = module.register_forward_pre_hook(lambda _mod, args: seen.append(args[0].shape[1]) if not seen else None)
    try:
        yield seen
    finally:
        handle.remove()


def text_tokens_processed(model: DGL, ids: torch.Tensor, prompts: Prompts) -> int | None:
    """Sequence length entering the first text block for these ids (one untimed no-grad forward)."""
    with torch.no_grad(), first_input_length(model.clip.transformer.resblocks[0].ln_1) as seen:
        model.encode_text(ids, prompts)
    return seen[0] if seen else None


def matmul_limit(m: int, k: int, n: int, device: torch.device, min_time: float = 0.3) -> float:
    """FLOP/s of a plain fp32 ``[m, k] x [k, n]`` product: the practical GEMM limit of the machine right now."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen).to(device)
    b = torch.randn(k, n, generator=gen).to(device)
    for _ in range(2):
        torch.mm(a, b)
    _sync(device)
    samples, spent = [], 0.0
    while len(samples) < 3 or (spent < min_time and len(samples) < 50):
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        samples.append(time.perf_counter() - start)
        spent += samples[-1]
    return 2 * m * k * n / statistics.median(samples)


class PeakMemory:
    """Increase of peak memory over a baseline: CUDA allocator on GPU, resident high-water mark on CPU."""

    def __init__(self, device: torch.device, isolated: bool = True):
        self.device, self.isolated = device, isolated
        if device.type == "cuda":
            self.method = "cuda max_memory_allocated"
        elif _can_reset_hwm():
            self.method = "VmHWM - VmRSS after load (clear_refs reset)"
        else:
            self.method = "ru_maxrss - RSS after load (may include load transient)"
        self.tight = False

    def start(self) -> None:
        if self.device.type == "cuda":
            _sync(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self.tight = self.isolated and _mallopt(64 * 1024, 128 * 1024)  # never retune a host process
        if self.tight and "mmap threshold" not in self.method:
            self.method += ", glibc mmap threshold 64 KiB"
        gc.collect()
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.base = _proc_status_kb("VmRSS") * 1024 if _proc_status_kb("VmRSS") else 0
        if _can_reset_hwm():
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    def stop(self) -> None:
        """Back to thresholds like glibc's dynamic steady state for the timed part."""
        if self.tight:
            _mallopt(32 * _MB, 64 * _MB)

    def peak_increase(self) -> tuple[float, float]:
        """(peak increase MB, baseline MB)."""
        if self.device.type == "cuda":
            _sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif _can_reset_hwm():
            peak = _proc_status_kb("VmHWM") * 1024
        else:
            scale = 1 if sys.platform == "darwin" else 1024
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        return (peak - self.base) / _MB, self.base / _MB


def _mallopt(mmap_threshold: int, trim_threshold: int) -> bool:
    """Set glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD; False where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, mmap_threshold)) and bool(libc.mallopt(-1, trim_threshold))
    except (OSError, AttributeError):
        return False


def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _can_reset_hwm() -> bool:
    return _proc_status_kb("VmHWM") is not None and os.access("/proc/self/clear_refs", os.W_OK)


def _amp_dtype(amp: str) -> torch.dtype | None:
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _autocast(device: torch.device, amp: str):
    dtype = _amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _deviation(test: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    test, ref = test.float(), ref.float()
    return {
        "max_abs": float((test - ref).abs().max()),
        "max_abs_rel": float((test - ref).abs().max() / ref.abs().max().clamp_min(1e-12)),
        "min_cosine": float(F.cosine_similarity(test, ref, dim=-1).min()),
    }


def _stats(timing: tuple[list[float], list[float]], items: int, flops: int, limit: float) -> dict[str, Any]:
    times, cpu = timing
    median = statistics.median(times)
    return {
        "batch": items, "times_s": [round(t, 5) for t in times], "median_s": median, "min_s": min(times),
        "cpu_s": statistics.median(cpu),
        "items_per_s": items / median, "gflop": flops / 1e9, "gflop_per_s": flops / median / 1e9,
        "matmul_gflop_per_s": limit / 1e9, "efficiency": flops / median / limit,
    }


def run_config(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one (model, latent space, checkpointing) configuration; returns a JSON-able dict."""
    device = torch.device(spec["device"])
    amp, frames, warmup, repeats = spec["amp"], spec["frames"], spec["warmup"], spec["repeats"]
    sections = spec["sections"]
    torch.manual_seed(spec["seed"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    t0 = time.perf_counter()
    model = build_model(spec["model"], spec["variant"], frames, spec["seed"]).to(device)
    model.set_grad_checkpointing(spec["grad_checkpointing"])
    gc.collect()
    ccfg = model.clip.config
    shapes = Shapes.of(model, frames)
    res = ccfg.image_resolution
    result: dict[str, Any] = {
        "model": spec["model"], "variant": spec["variant"], "grad_checkpointing": spec["grad_checkpointing"],
        "compile": spec["compile"], "amp": amp, "frames": frames, "threads": torch.get_num_threads(),
        "build_s": time.perf_counter() - t0,
        "video_tokens": shapes.video_tokens, "trainable_params": sum(p.numel() for p in model.trainable_parameters().values()),
        "sections": {},
    }
    gemm = (spec["batch_size"] * shapes.video_tokens, ccfg.vision_width, 4 * ccfg.vision_width)
    result["matmul_shape"] = list(gemm)
    limits = LimitSampler(lambda: matmul_limit(*gemm, device))

    fwd = torch.compile(model) if spec["compile"] else model
    enc_video = torch.compile(model.encode_video) if spec["compile"] else model.encode_video
    enc_text = torch.compile(model.encode_text) if spec["compile"] else model.encode_text
    gen = torch.Generator().manual_seed(spec["seed"])

    def video_batch(n: int) -> torch.Tensor:
        return torch.randn(n, frames, 3, res, res, generator=gen).to(device)

    # ---- 1. training step (and its naive-attention twin)
    if "train" in sections:
        batch = spec["batch_size"]
        ids = random_captions(batch, ccfg.vocab_size, seed=spec["seed"]).to(device)
        video = video_batch(batch)
        params = list(model.trainable_parameters().values())
        with torch.no_grad():
            text_len = text_tokens_processed(model, ids, model.prompts())
        flops = train_step_flops(shapes, batch, kept_words(ids), text_tokens=text_len)
        result["train_flops"] = flops
        variants = [("train_step", None)] + ([("train_step_naive", naive_encode_video)] if spec["naive"] else [])
        for name, video_encoder in variants:
            model.train()
            opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)
            scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

            def step() -> None:
                opt.zero_grad(set_to_none=True)
                with _autocast(device, amp):
                    if video_encoder is None:
                        text_feats, video_feats = fwd(ids, video)
                    else:
                        prompts = model.prompts()
                        text_feats = model.encode_text(ids, prompts)
                        video_feats = video_encoder(model, video, prompts)
                    loss = contrastive_loss(model.logits(text_feats, video_feats))
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()

            limit = limits.before()
            # Peak memory over the warm-up steps (at least one; the first also creates the AdamW state), then
            # the timed steps. On CPU the warm-up runs with glibc's mmap threshold at 64 KiB, so that a freed
            # tensor leaves the resident set at once and the high-water mark follows live memory (with the
            # default, freed heap is kept and reused, which inflates it, mostly under checkpointing); the timed
            # steps run at 32 MiB / 64 MiB, the steady state glibc's dynamic thresholds reach by themselves.
            memory = PeakMemory(device, isolated=spec.get("isolated", False))
            memory.start()
            time_fn(step, device, max(warmup, 1), 0)
            peak, base = memory.peak_increase()
            memory.stop()
            times = time_fn(step, device, 0, repeats)
            stats = _stats(times, batch, flops["total"], limit)
            stats.update(peak_mem_mb=peak, loaded_mem_mb=base, peak_mem_method=memory.method)
            result["sections"][name] = stats
            limits.finish(stats)
            if name == "train_step" and spec["profile"]:
                result["profile"] = _profile(step, device, spec["profile"])
            del opt
            model.zero_grad(set_to_none=True)
            gc.collect()

    # ---- 2. evaluation encoding
    model.eval()
    with torch.inference_mode():
        with _autocast(device, amp):
            prompts = model.prompts()
        ref_prompts = model.prompts() if amp != "none" else prompts
        if "video" in sections:
            batch = spec["eval_video_batch"]
            video = video_batch(batch)
            flops = video_flops(shapes, batch)[0]
            encoders = [("encode_video", lambda v, p: enc_video(v, p))]
            if spec["naive"]:
                encoders.append(("encode_video_naive", lambda v, p: naive_encode_video(model, v, p)))
            for name, encode in encoders:
                def run() -> torch.Tensor:
                    with _autocast(device, amp):
                        return encode(video, prompts)

                limit = limits.before()
                stats = _stats(time_fn(run, device, warmup, repeats), batch, flops, limit)
                limits.finish(stats)
                if amp != "none":
                    stats["amp_deviation"] = _deviation(run(), encode(video, ref_prompts))
                result["sections"][name] = stats
        if "text" in sections:
            batch = spec["eval_text_batch"]
            ids = random_captions(batch, ccfg.vocab_size, seed=spec["seed"] + 1).to(device)
            text_len = text_tokens_processed(model, ids, prompts)
            flops = text_flops(shapes, batch, kept_words(ids), tokens=text_len)[0]

            def run_text() -> torch.Tensor:
                with _autocast(device, amp):
                    return enc_text(ids, prompts)

            limit = limits.before()
            stats = _stats(time_fn(run_text, device, warmup, repeats), batch, flops, limit)
            limits.finish(stats)
            stats["text_tokens"] = text_len
            if amp != "none":
                stats["amp_deviation"] = _deviation(run_text(), model.encode_text(ids, ref_prompts))
            result["sections"]["encode_text"] = stats
    result["matmul_gflop_per_s_samples"] = [x / 1e9 for x in limits.all_samples]
    return result


def _profile(step: Callable[[], None], device: torch.device, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        _sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    share = {"GEMM": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::mkldnn_convolution",
                      "aten::convolution_backward"), "attention": ("scaled_dot_product",)}
    parts = {name: sum(e.self_cpu_time_total for e in events if any(k in e.key for k in keys)) / total
             for name, keys in share.items()}
    summary = (f"self CPU time by kind: GEMM+conv {parts['GEMM']:.1%}, fused attention {parts['attention']:.1%}, "
               f"everything else {1 - sum(parts.values()):.1%} (elementwise, copies, LayerNorm, optimizer)")
    return summary + "\n" + events.table(sort_by=sort, row_limit=rows)


# ----------------------------------------------------------------------------------------- data loading


def data_section(args: argparse.Namespace) -> dict[str, Any]:
    """DataLoader throughput through the data pipeline's own ``measure_loader``; skipped when unavailable."""
    try:
        module = importlib.import_module("apps.loader_throughput")
    except ImportError as err:
        missing = getattr(err, "name", None)
        why = ("apps.loader_throughput not found (data pipeline missing)" if missing in ("dataloaders", "apps.loader_throughput")
               else f"apps.loader_throughput failed to import: {err}")
        return {"skipped": why}
    measure = getattr(module, "measure_loader", None)
    if measure is None:
        return {"skipped": "apps.loader_throughput has no measure_loader()"}
    sources = [(name, path) for name, path in (("videos", args.features_path), ("frame_cache", args.frame_cache)) if path]
    if not sources:
        return {"skipped": "no data given: pass --features_path (compressed videos) and/or --frame_cache, with "
                           "--datatype/--data_path/--train_csv (python -m apps.loader_throughput times a synthetic gallery)"}
    params = inspect.signature(measure).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    runs = []
    for source, path in sources:
        for workers in args.num_workers:
            candidates: dict[str, Any] = {
                "num_workers": workers, "batch_size": args.batch_size or 2, "max_frames": args.frames,
                "frames": args.frames, "num_batches": args.loader_batches, "max_batches": args.loader_batches,
                "source": source, "subset": args.data_subset, "features_path": args.features_path, "data_path": args.data_path,
                "train_csv": args.train_csv, "frame_cache": path if source == "frame_cache" else None,
                "use_frame_cache": source == "frame_cache",
            }
            try:
                config = _data_config(args, source)
            except (TypeError, ValueError) as err:
                return {"skipped": f"data settings rejected by DataConfig: {err}"}
            if config is not None:
                candidates.update(config=config, data_config=config, cfg=config)
            kwargs = {k: v for k, v in candidates.items() if accepts_any or k in params}
            required = [n for n, p in params.items() if p.default is inspect.Parameter.empty
                        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in kwargs]
            if required:
                return {"skipped": f"measure_loader needs arguments this benchmark cannot supply: {required}"}
            try:
                out = measure(**kwargs)
            except Exception as err:  # a broken data set must not lose the model numbers
                runs.append({"source": source, "num_workers": workers, "error": f"{type(err).__name__}: {err}"})
                continue
            row = dict(out) if isinstance(out, dict) else {"videos_per_s": float(out)}
            row.update(source=source, num_workers=workers)
            runs.append(row)
    return {"runs": runs}


def _data_config(args: argparse.Namespace, source: str):
    try:
        from dataloaders.config import DataConfig
    except ImportError:
        return None
    fields = {"max_frames": args.frames, "frame_cache": args.frame_cache if source == "frame_cache" else None}
    for name in ("datatype", "data_path", "features_path", "train_csv", "val_csv", "video_backend"):
        if getattr(args, name):
            fields[name] = getattr(args, name)
    return DataConfig(**fields)


def _videos_per_s(row: dict[str, Any]) -> float | None:
    for key, value in row.items():
        if isinstance(value, (int, float)) and "video" in key and ("per_s" in key or "per_sec" in key or "/s" in key):
            return float(value)
    return None


# ----------------------------------------------------------------------------------------- CLI


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list]:
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


def _variant(name: str) -> str:
    if name not in ("transformer", "linear"):
        raise argparse.ArgumentTypeError(f"unknown variant {name!r}")
    return name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.sh", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=_csv(_model_name), default=None, help="comma list of B/32,B/16 (default both)")
    p.add_argument("--variants", type=_csv(_variant), default=["transformer", "linear"])
    p.add_argument("--frames", type=int, default=12, help="T (default 12)")
    p.add_argument("--batch_size", type=int, default=None, help="training batch (default 2 on CPU, 32 on GPU)")
    p.add_argument("--eval_video_batch", type=int, default=4)
    p.add_argument("--eval_text_batch", type=int, default=64)
    p.add_argument("--amp", choices=("auto", "none", "bf16", "fp16"), default="auto",
                   help="autocast dtype (auto: bf16 on CUDA, none on CPU)")
    p.add_argument("--grad_checkpointing", nargs="?", const="on", choices=("off", "on", "both"), default="off",
                   help="activation checkpointing of the frozen blocks; 'both' measures with and without")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compilation not timed)")
    p.add_argument("--naive", action="store_true", help="also time the block-masked reference visual attention")
    p.add_argument("--repeats", type=int, default=None, help="timed iterations per section (default 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 2)")
    p.add_argument("--sections", type=_csv(str), default=None,
                   help="subset of train,video,text,data,loader,eval (default all; --quick: all but eval)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each configuration (CPU)")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="print the top ROWS ops (self time) of one training step")
    p.add_argument("--json_out", default=None, metavar="FILE", help="also write the JSON result here")
    p.add_argument("--quick", action="store_true", help="ViT-B/32 only, B=2, 2 repeats, 1 warm-up (< 3 min on 2 CPU cores)")
    p.add_argument("--in_process", action="store_true",
                   help="run every configuration in this process (faster start; CPU memory numbers less isolated)")
    p.add_argument("--seed", type=int, default=0)
    data = p.add_argument_group("data loading (section 3; apps/loader_throughput.py)")
    data.add_argument("--features_path", default=None, help="folder of compressed videos")
    data.add_argument("--frame_cache", default=None, help="frame cache folder")
    data.add_argument("--datatype", default=None, help="msrvtt, ... (DataConfig.datatype)")
    data.add_argument("--data_path", default=None)
    data.add_argument("--train_csv", default=None)
    data.add_argument("--val_csv", default=None)
    data.add_argument("--video_backend", default=None, help="auto, decord, pyav, torchcodec")
    data.add_argument("--data_subset", default="train", help="split to read (train/val/test)")
    data.add_argument("--num_workers", type=_csv(int), default=[4])
    data.add_argument("--loader_batches", type=int, default=20)
    scale = p.add_argument_group("data at scale (apps/bench_data.py, apps/bench_eval.py)")
    scale.add_argument("--loader_videos", type=int, default=24, help="MSR-VTT-shaped videos for the loader rows")
    scale.add_argument("--eval_videos", type=int, default=1000, help="videos (= captions) of the real-size evaluation")
    scale.add_argument("--eval_workdir", default=str(ROOT / "runs" / "bench_eval"), help="kept: videos and caches are reused")
    p.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    return p


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    on_gpu = args.device.startswith("cuda")
    if args.amp == "auto":
        args.amp = "bf16" if on_gpu else "none"
    if args.quick:
        args.models = args.models or ["B/32"]
        args.batch_size = args.batch_size or 2
        args.repeats = args.repeats or 2
        args.warmup = args.warmup if args.warmup is not None else 1
    args.sections = args.sections or ["train", "video", "text", "data", "loader"] + ([] if args.quick else ["eval"])
    args.models = args.models or ["B/32", "B/16"]
    args.batch_size = args.batch_size or (32 if on_gpu else 2)
    args.repeats = args.repeats or 5
    args.warmup = args.warmup if args.warmup is not None else 2
    return args


def _specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    ckpt = {"off": [False], "on": [True], "both": [False, True]}[args.grad_checkpointing]
    return [
        {"model": m, "variant": v, "grad_checkpointing": c, "device": args.device, "amp": args.amp,
         "frames": args.frames, "batch_size": args.batch_size, "eval_video_batch": args.eval_video_batch,
         "eval_text_batch": args.eval_text_batch, "compile": args.compile, "naive": args.naive,
         "repeats": args.repeats, "warmup": args.warmup, "sections": args.sections, "profile": args.profile,
         "seed": args.seed, "threads": args.threads, "isolated": not args.in_process}
        for m in args.models for v in args.variants for c in ckpt
    ]


def _run_isolated(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration in a fresh interpreter, so its memory high-water mark is its own."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        if spec["device"] == "cpu":
            # Big buffers mmapped (and returned on free) from the start, so that no freed heap from loading is
            # reused and kept resident during the memory measurement; the worker raises the thresholds to glibc's
            # usual steady state (32 MiB / 64 MiB) before timing.
            env.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 * 1024))
            env.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 * 1024))
        proc = subprocess.run([sys.executable, "-m", "apps.benchmark", "--_worker", str(spec_path), str(out_path)],
                              cwd=ROOT, env=env)
        if proc.returncode != 0 or not out_path.is_file():
            return {**{k: spec[k] for k in ("model", "variant", "grad_checkpointing")},
                    "error": f"worker exited with status {proc.returncode}", "sections": {}}
        return json.loads(out_path.read_text())


def _worker(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    Path(out_path).write_text(json.dumps(run_config(spec)))


_UNITS = {"train_step": "videos", "train_step_naive": "videos", "encode_video": "videos",
          "encode_video_naive": "videos", "encode_text": "texts"}


def format_table(report: dict[str, Any]) -> str:
    head = (f"{'model':<5} {'variant':<11} {'ckpt':<4} {'section':<18} {'B':>4} {'s/iter':>8} {'cpu_s':>7} {'items/s':>14} "
            f"{'GFLOP':>8} {'GFLOP/s':>8} {'limit':>7} {'eff':>5} {'peak+MB':>8}  notes")
    lines = [head, "-" * len(head)]
    for cfg in report["configs"]:
        if cfg.get("error"):
            lines.append(f"{cfg['model']:<5} {cfg['variant']:<11} {'on' if cfg['grad_checkpointing'] else 'off':<4} "
                         f"ERROR: {cfg['error']}")
        for name, s in cfg["sections"].items():
            peak = f"{s['peak_mem_mb']:.0f}" if "peak_mem_mb" in s else "-"
            note = limit_note(s)
            if "amp_deviation" in s:
                d = s["amp_deviation"]
                note += f"; amp vs fp32: max|d|={d['max_abs']:.2e} (rel {d['max_abs_rel']:.1e}) min cos={d['min_cosine']:.6f}"
            lines.append(
                f"{cfg['model']:<5} {cfg['variant']:<11} {'on' if cfg['grad_checkpointing'] else 'off':<4} {name:<18} "
                f"{s['batch']:>4} {s['median_s']:>8.3f} {s['cpu_s']:>7.2f} {s['items_per_s']:>7.2f} {_UNITS.get(name, 'items'):<6} "
                f"{s['gflop']:>8.1f} {s['gflop_per_s']:>8.1f} {s['matmul_gflop_per_s']:>7.1f} {efficiency_cell(s):>5} "
                f"{peak:>8}  {note}".rstrip())
    lines += scale_rows(report)
    data = report.get("data", {})
    if "skipped" in data:
        lines.append(f"data loading: skipped - {data['skipped']}")
    for row in data.get("runs", []):
        rate = _videos_per_s(row)
        what = row.get("error") or (f"{rate:.2f} videos/s" if rate is not None else json.dumps(row))
        lines.append(f"data loading [{row['source']}, {row['num_workers']} workers]: {what}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args._worker:
        _worker(*args._worker)
        return {}
    args = _resolve(args)
    device = torch.device(args.device)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "threads": args.threads or torch.get_num_threads(), "amp": args.amp,
        "frames": args.frames,
        "batch_size": args.batch_size, "repeats": args.repeats, "warmup": args.warmup,
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None, "configs": [],
    }
    print(f"# DGL benchmark: device={report['device']} threads={report['threads']} amp={args.amp} T={args.frames} "
          f"B={args.batch_size} repeats={args.repeats} warmup={args.warmup} loadavg={report['loadavg_start']}",
          flush=True)
    model_sections = [s for s in args.sections if s in ("train", "video", "text")]
    if model_sections:
        for spec in _specs(args):
            print(f"# running {spec['model']} {spec['variant']} grad_checkpointing={spec['grad_checkpointing']} ...",
                  flush=True)
            result = run_config(spec) if args.in_process else _run_isolated(spec)
            report["configs"].append(result)
            if result.get("profile"):
                print(f"# profile of one training step ({spec['model']} {spec['variant']}):\n{result.pop('profile')}")
    if "data" in args.sections:
        report["data"] = data_section(args)
    report.update(scale_sections(args))
    report["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print(format_table(report))
    line = json.dumps({k: v for k, v in report.items()}, default=str)
    print(line, flush=True)
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")
    return report


if __name__ == "__main__":
    main()
