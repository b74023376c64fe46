"""One optimiser step of DGL, shared by the trainer and the benchmark.

The contrastive loss couples every pair of the global batch, so plain gradient accumulation would change
the objective. With ``chunks = k`` a batch is instead encoded in ``k`` chunks: features of all chunks are
computed without a graph, the loss and its feature gradients on the whole batch, then each chunk is
re-encoded with a graph and back-propagated (gradient caching). The update equals one full-batch step at the
memory of one chunk, for the price of one extra forward pass. A ``BatchObjective`` that supports it
(DGL-BLIP's, ITC only) does its first pass itself (``cached_itc``: momentum keys and queue once per step).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn

from models.dgl import DGL
from models.losses import BatchObjective, replicated


BF16_NATIVE_CAPABILITY = (8, 0)  # Ampere: bf16 tensor cores; before it, bf16 is emulated (no tensor cores)


def amp_precision(capability: tuple[int, int]) -> str:
    """``amp`` on a GPU of compute ``capability``: bf16 where its tensor cores run it (8.0 on), else fp16 with a loss
    scaler (V100 7.0, T4 7.5: ``torch.cuda.is_bf16_supported()`` says yes there too, since it counts emulation)."""
    return "bf16" if tuple(capability) >= BF16_NATIVE_CAPABILITY else "fp16"


def resolve_precision(requested: str, device: torch.device) -> str:
    """``amp`` = bf16 autocast where the GPU runs it natively, else fp16 with a scaler; fp32 on CPU."""
    if requested != "amp":
        return requested
    if device.type != "cuda":
        return "fp32"
    return amp_precision(torch.cuda.get_device_capability(device))


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 tensor cores (Ampere on: fp32 range, 10 mantissa bits instead of 23) for fp32 matmuls and convolutions
    inside, or exact fp32; the previous settings come back after. Never set globally: evaluation's similarity
    matrix runs under ``tf32(False)`` whatever the flags."""
    backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    before = [backend.fp32_precision for backend in backends]
    for backend in backends:
        backend.fp32_precision = "tf32" if enabled else "ieee"
    try:
        yield
    finally:
        for backend, value in zip(backends, before):
            backend.fp32_precision = value


def autocast_context(precision: str, device: torch.device):
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return nullcontext()


class TrainStep:
    """Forward, loss, backward (chunked when asked), gradient clipping and the optimiser update.

    ``net`` runs the forward (the DDP wrapper, or another encoder such as the benchmark's masked-attention
    reference); ``model`` is the DGL itself. ``loss`` is a features loss (``models.losses.LOSSES``) or a
    ``BatchObjective``, which runs the forward itself (``net`` then wraps the objective: `forward_module`).
    Nothing here reads a value back to the host, so a step never waits
    on the device: the loss and the gradient norm come back as tensors. ``allow_tf32``: TF32 for the fp32 matrix
    products of forward and backward (training's ``--tf32`` default, so the benchmark times what training runs).
    """

    def __init__(self, model: DGL, loss: nn.Module, optimizer: torch.optim.Optimizer, precision: str,
                 device: torch.device, chunks: int = 1, clip_grad_norm: float = 1.0, net: nn.Module | None = None,
                 world_size: int = 1, allow_tf32: bool = True):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.objective = loss if isinstance(loss, BatchObjective) else None
        self.net = net if net is not None else forward_module(model, loss)  # a compiled module has no truth value
        self.precision, self.device, self.chunks, self.clip_grad_norm = precision, device, chunks, clip_grad_norm
        self.world_size, self.allow_tf32 = world_size, allow_tf32
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.params = [p for group in optimizer.param_groups for p in group["params"]]

    def __call__(self, input_ids: Tensor, video: Tensor, attention_mask: Tensor | None = None,
                 video_ids: Tensor | None = None, position: tuple[int, int, int] = (0, 0, 1)) -> tuple[Tensor, Tensor]:
        """One step on a batch; a ``BatchObjective`` also reads ``attention_mask``, ``video_ids`` and the
        ``position`` (epoch, step in it, steps per epoch) its schedule depends on."""
        with tf32(self.allow_tf32):
            if self.objective is not None:
                loss = self.objective_backward(input_ids, attention_mask, video, video_ids, position)
            else:
                loss = self.backward(input_ids, video)
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm

    def objective_backward(self, input_ids: Tensor, attention_mask: Tensor, video: Tensor, video_ids: Tensor,
                           position: tuple[int, int, int]) -> Tensor:
        """The objective's forward (through ``net``) and the backward of what it says to back-propagate; with
        chunks, its cached first pass (``cached_itc``), then each chunk re-encoded through ``net``."""
        autocast = autocast_context(self.precision, self.device)
        schedule = self.objective.schedule(*position)
        if self.chunks == 1:
            with autocast:
                losses = self.net(input_ids, attention_mask, video, video_ids, **schedule)
            self.scaler.scale(losses["backward"]).backward()
            return losses["loss"].detach()
        with autocast:
            losses, (text, vid, temp) = self.objective.cached_itc(input_ids, attention_mask, video, video_ids,
                                                                   self.chunks, **schedule)
        self.scaler.scale(losses["backward"]).backward()
        chunks = list(zip(input_ids.chunk(self.chunks), attention_mask.chunk(self.chunks), video.chunk(self.chunks)))
        self._replay(chunks, lambda ids, mask, frames: self.net(ids, mask, frames, None, chunk=True), text, vid, temp)
        return losses["loss"].detach()

    def objective_state(self) -> dict:
        """What the objective keeps beside the model (the same on every rank), for checkpoints."""
        return self.objective.training_state() if self.objective is not None else {}

    def rank_state(self) -> dict:
        """This rank's state of the objective (e.g. its sampling generator), saved with the rank's RNG."""
        return self.objective.rank_state() if self.objective is not None else {}

    def load_objective_state(self, state: dict, rank_state: dict | None) -> None:
        if self.objective is not None:
            self.objective.load_training_state(state)
            self.objective.load_rank_state(rank_state or {})

    def _global_loss(self, text: Tensor, video: Tensor, logit_scale: Tensor) -> Tensor:
        """The loss of the global batch (the loss gathers the other ranks' features itself)."""
        return self.loss(text, video, logit_scale)

    def backward(self, input_ids: Tensor, video: Tensor) -> Tensor:
        """Accumulate the gradients of the global-batch loss; returns the loss (detached). The loss is scaled by
        the world size before backward, so that DDP's gradient average is the gradient of the global loss (the
        official code's effective gradient is that divided by the world size).

        The logit scale (trainable with ``--freeze_clip 0``) is used by the loss, outside the wrapped forward, on
        the gathered batch: every rank computes its whole gradient, so it enters with its gradient divided by the
        world size (`replicated`). With chunks it is a detached copy in the loss, and its gradient is handed to the
        parameter in the synchronising chunk's backward, where DDP's hooks expect every trainable parameter."""
        autocast = autocast_context(self.precision, self.device)
        scale_param = self.model.clip.logit_scale
        if self.chunks == 1:
            with autocast:
                text, vid = self.net(input_ids, video)
            loss = self._global_loss(text, vid, replicated(scale_param, self.world_size))
            self.scaler.scale(loss * self.world_size).backward()
            return loss.detach()
        id_chunks, video_chunks = input_ids.chunk(self.chunks), video.chunk(self.chunks)
        with torch.no_grad(), autocast:
            prompts = self.model.prompts()
            feats = [(self.model.encode_text(i, prompts), self.model.encode_video(v, prompts))
                     for i, v in zip(id_chunks, video_chunks)]
        text = torch.cat([t for t, _ in feats]).float().requires_grad_()
        vid = torch.cat([v for _, v in feats]).float().requires_grad_()
        scale = scale_param.detach().requires_grad_(scale_param.requires_grad)
        loss = self._global_loss(text, vid, scale)
        self.scaler.scale(loss * self.world_size).backward()
        self._replay(list(zip(id_chunks, video_chunks)),
                     lambda ids, frames: (*self.net(ids, frames), replicated(scale_param, self.world_size)), text, vid, scale)
        return loss.detach()

    def _replay(self, chunks: list[tuple[Tensor, ...]], forward, text: Tensor, vid: Tensor, scale: Tensor) -> None:
        """Gradient caching's second pass: each chunk re-encoded with a graph by ``forward(*chunk) -> (text, video,
        scale as the loss's gradient reaches it)``, and the gradients cached on the leaves ``text``, ``vid`` and
        ``scale`` back-propagated; the scale's in the last chunk only, which DDP synchronises (the others run
        under ``no_sync``)."""
        autocast = autocast_context(self.precision, self.device)
        ddp = self.net if isinstance(self.net, nn.parallel.DistributedDataParallel) else None
        lo = 0
        for k, inputs in enumerate(chunks):
            last = k == len(chunks) - 1
            with (nullcontext() if ddp is None or last else ddp.no_sync()), autocast:
                text_k, vid_k, scale_k = forward(*inputs)
            hi = lo + len(text_k)
            roots, grads = [text_k.float(), vid_k.float()], [text.grad[lo:hi], vid.grad[lo:hi]]
            if last and scale.grad is not None:
                roots.append(scale_k)
                grads.append(scale.grad)
            trained = [(r, g) for r, g in zip(roots, grads) if r.requires_grad]  # a frozen tower's have no graph
            torch.autograd.backward([r for r, _ in trained], [g for _, g in trained])
            lo = hi


def forward_module(model: nn.Module, loss: nn.Module) -> nn.Module:
    """What a step's forward runs, and DDP wraps: the objective when it runs the forward itself, else the model."""
    return loss if isinstance(loss, BatchObjective) else model
