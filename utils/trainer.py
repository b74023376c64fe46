"""Training loop: DDP over the trainable tensors only, exact resume, chunked (exact) gradient accumulation.

The contrastive loss couples every pair of the global batch, so plain gradient accumulation would change
the objective. With ``--gradient_accumulation_steps k`` a batch is instead encoded in ``k`` chunks: features
of all chunks are computed without a graph, the loss and its feature gradients on the whole batch, then each
chunk is re-encoded with a graph and back-propagated (gradient caching). The update equals one full-batch
step at the memory of one chunk, for the price of one extra forward pass.
"""
from __future__ import annotations

import json
import logging
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from dataloaders import TrainPairDataset, VideoTextSplit, collate_trimmed
from models.checkpoint import atomic_save, compact_checkpoint, export_official_checkpoint
from models.dgl import DGL, contrastive_loss
from utils.distributed import DistInfo, all_gather_with_grad, get_world_size
from utils.optim import WarmupCosine, build_optimizer, param_groups
from utils.step_monitor import StepMonitor, WindowStats

logger = logging.getLogger(__name__)


class EpochSampler(Sampler[int]):
    """Seeded per-epoch permutation cut into global batches; rank r takes the r-th slice of each, so a
    global batch holds the same samples whatever the number of ranks. With ``group_size`` g, runs of g
    consecutive samples move together (hard negatives stored side by side share a batch). It can start part-way into an
    epoch, which an exact mid-epoch resume needs. The last incomplete global batch is dropped."""

    def __init__(self, size: int, batch_size: int, rank: int, world: int, seed: int, group_size: int = 1):
        self.size, self.batch_size, self.rank, self.world, self.seed = size, batch_size, rank, world, seed
        if (batch_size * world) % group_size:
            raise ValueError(f"the global batch ({batch_size} x {world} ranks) must hold whole groups of {group_size}")
        self.group_size = group_size
        self.batches_per_epoch = (size - size % group_size) // (batch_size * world)
        if self.batches_per_epoch == 0:
            raise ValueError(f"{size} training samples cannot fill one global batch of {batch_size} x {world} ranks")
        self.epoch, self.start_batch = 0, 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        groups = torch.randperm(self.size // self.group_size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        order = (groups[:, None] * self.group_size + torch.arange(self.group_size)).flatten()
        used = self.batches_per_epoch * self.batch_size * self.world
        mine = order[:used].view(self.batches_per_epoch, self.world, self.batch_size)[self.start_batch :, self.rank]
        return iter(mine.flatten().tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def autocast_context(precision: str, device: torch.device):
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return nullcontext()


def resolve_precision(requested: str, device: torch.device) -> str:
    """``amp`` = bf16 autocast where the GPU supports it, else fp16 with a scaler; fp32 on CPU."""
    if requested != "amp":
        return requested
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def rng_state() -> dict[str, Any]:
    """All RNG states, as plain lists and tensors so that checkpoints load with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainState:
    epoch: int = 0  # epoch being trained
    batch_in_epoch: int = 0  # batches of that epoch already done
    global_step: int = 0
    best_r1: float = -1.0
    best_epoch: int = -1


class Trainer:
    def __init__(
        self,
        model: DGL,
        split: VideoTextSplit,
        dataset: TrainPairDataset,
        args,
        dist: DistInfo,
        backbone: dict,
        output_dir: Path,
    ):
        self.model, self.split, self.dataset, self.args, self.dist = model, split, dataset, args, dist
        self.backbone, self.output_dir = backbone, output_dir
        self.precision = resolve_precision(args.precision, dist.device)
        self.chunks = args.gradient_accumulation_steps
        self.ddp = (
            DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
            if dist.world_size > 1
            else None
        )
        self.sampler = EpochSampler(
            len(dataset), args.batch_size, dist.rank, dist.world_size, args.seed, args.train_group_size
        )
        self.loader = DataLoader(
            dataset,
            batch_size=args.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=args.num_thread_reader,
            pin_memory=dist.device.type == "cuda",
            collate_fn=collate_trimmed,
            persistent_workers=False,
        )
        self.optimizer = build_optimizer(
            param_groups(model, args.lr, args.coef_lr, args.wd), args.lr, (args.beta1, args.beta2), args.eps
        )
        self.total_steps = self.sampler.batches_per_epoch * args.epochs
        self.scheduler = WarmupCosine(self.optimizer, args.lr, self.total_steps, args.warmup_proportion)
        self.scaler = torch.amp.GradScaler(dist.device.type, enabled=self.precision == "fp16")
        self.state = TrainState()
        self.writer = None
        if dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(args.tensorboard_path or str(output_dir / "tensorboard"))

    # ------------------------------------------------------------------------------ checkpointing
    def checkpoint(self) -> dict:
        return compact_checkpoint(
            self.model,
            self.backbone,
            epoch=self.state.epoch,
            batch_in_epoch=self.state.batch_in_epoch,
            global_step=self.state.global_step,
            best_r1=self.state.best_r1,
            best_epoch=self.state.best_epoch,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            rng=rng_state(),
            args={k: v for k, v in vars(self.args).items() if isinstance(v, (str, int, float, bool, type(None)))},
        )

    def save(self, name: str) -> Path:
        path = self.output_dir / name
        if self.dist.is_main:
            atomic_save(self.checkpoint(), path)
            logger.info("saved %s (epoch %d, step %d)", path, self.state.epoch, self.state.global_step)
        return path

    def restore(self, ckpt: dict) -> None:
        """Continue exactly where ``ckpt`` (ours, already loaded into the model) stopped."""
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.state = TrainState(
            ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["global_step"], ckpt["best_r1"], ckpt["best_epoch"]
        )
        logger.info("resumed at epoch %d, batch %d, step %d", self.state.epoch, self.state.batch_in_epoch, self.state.global_step)

    # ---------------------------------------------------------------------------------- one step
    def _loss(self, text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """Global-batch InfoNCE. Scaled by the world size so that DDP's gradient average is the gradient
        of the global loss (the official code's effective gradient is that divided by the world size)."""
        logits = self.model.logits(all_gather_with_grad(text), all_gather_with_grad(video))
        return contrastive_loss(logits)

    def train_step(self, input_ids: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        net = self.ddp or self.model
        autocast = autocast_context(self.precision, self.dist.device)
        world = get_world_size()
        if self.chunks == 1:
            with autocast:
                text, vid = net(input_ids, video)
            loss = self._loss(text, vid)
            self.scaler.scale(loss * world).backward()
            return loss.detach()
        id_chunks, video_chunks = input_ids.chunk(self.chunks), video.chunk(self.chunks)
        with torch.no_grad(), autocast:
            prompts = self.model.prompts()
            feats = [(self.model.encode_text(i, prompts), self.model.encode_video(v, prompts)) for i, v in zip(id_chunks, video_chunks)]
        text = torch.cat([t for t, _ in feats]).float().requires_grad_()
        vid = torch.cat([v for _, v in feats]).float().requires_grad_()
        loss = self._loss(text, vid)
        self.scaler.scale(loss * world).backward()
        bounds = np.cumsum([0] + [len(c) for c in id_chunks])
        for k, (ids_k, video_k) in enumerate(zip(id_chunks, video_chunks)):
            sync = self.ddp is None or k == self.chunks - 1
            with (nullcontext() if sync else self.ddp.no_sync()), autocast:
                text_k, vid_k = net(ids_k, video_k)
            lo, hi = bounds[k], bounds[k + 1]
            torch.autograd.backward([text_k.float(), vid_k.float()], [text.grad[lo:hi], vid.grad[lo:hi]])
        return loss.detach()

    def optimizer_step(self) -> tuple[float, torch.Tensor]:
        """(learning rate, gradient norm before clipping, on the device: not read here)."""
        lr = self.scheduler.step()
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.args.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return lr, grad_norm

    # ------------------------------------------------------------------------------------- loops
    def train_epoch(self, evaluate) -> bool:
        """One epoch (or its remainder after a resume). Returns False when ``--max_steps`` stopped it."""
        state, args = self.state, self.args
        self.model.train()
        self.dataset.set_epoch(state.epoch)
        self.sampler.set_position(state.epoch, state.batch_in_epoch)
        bar = tqdm(
            total=self.sampler.batches_per_epoch, initial=state.batch_in_epoch, desc=f"epoch {state.epoch + 1}/{args.epochs}",
            disable=not self.dist.is_main, dynamic_ncols=True,
        )
        monitor, window_start = StepMonitor(self.dist.device), time.perf_counter()
        data_time, tic = 0.0, time.perf_counter()
        for batch in self.loader:
            data_time += time.perf_counter() - tic
            ids = batch["input_ids"].to(self.dist.device, non_blocking=True)
            video = batch["video"].to(self.dist.device, non_blocking=True)
            loss = self.train_step(ids, video)
            lr, grad_norm = self.optimizer_step()
            state.global_step += 1
            state.batch_in_epoch += 1
            monitor.add(state.global_step, loss, grad_norm, batch["video_index"])
            bar.update(1)
            stop = args.max_steps is not None and state.global_step >= args.max_steps
            display = state.global_step % args.n_display == 0 or state.global_step == 1
            if display or stop:
                stats = monitor.read(self.split.video_ids, state.epoch + 1)  # the only host read of the window
                if display:
                    self._log(stats, lr, data_time, time.perf_counter() - window_start, bar)
                data_time, window_start = 0.0, time.perf_counter()
            if stop:
                bar.close()
                self.save("checkpoint_latest.pt")
                return False
            tic = time.perf_counter()
        monitor.read(self.split.video_ids, state.epoch + 1)  # nothing non-finite may reach a checkpoint
        bar.close()
        state.epoch += 1
        state.batch_in_epoch = 0
        if args.eval_every_epoch:
            r1 = evaluate(state.epoch)
            if r1 >= state.best_r1:
                state.best_r1, state.best_epoch = r1, state.epoch
                self.save("checkpoint_best.pt")
                if args.export_official and self.dist.is_main:
                    export_official_checkpoint(self.model, self.output_dir / "ckpt.best.pth.tar", state.epoch, state.global_step, r1)
        self.save("checkpoint_latest.pt")
        return True

    def _log(self, stats: WindowStats, lr: float, data_time: float, seconds: float, bar: tqdm) -> None:
        """Log line, tensorboard and train_log.jsonl for the steps since the previous log (main rank)."""
        if not self.dist.is_main:
            return
        state = self.state
        bar.set_postfix(loss=f"{stats.last_loss:.4f}", lr=f"{lr:.2e}")
        step_time = seconds / stats.steps
        samples = self.args.batch_size * self.dist.world_size / step_time
        logger.info(
            "epoch %d step %d/%d | loss %.4f (mean of %d steps %.4f) | lr %.3e | grad norm %.3g | data %.3fs step %.3fs | %.1f samples/s",
            state.epoch + 1, state.global_step, self.total_steps, stats.last_loss, stats.steps, stats.mean_loss, lr,
            stats.grad_norm, data_time / stats.steps, step_time, samples,
        )
        record = {"loss": stats.last_loss, "mean_loss": stats.mean_loss, "lr": lr, "grad_norm": stats.grad_norm,
                  "data_time": data_time / stats.steps, "step_time": step_time, "samples_per_s": samples}
        for tag, value in record.items():
            self.writer.add_scalar(f"train/{tag}", value, state.global_step)
        with (self.output_dir / "train_log.jsonl").open("a") as log:
            log.write(json.dumps({"epoch": state.epoch + 1, "step": state.global_step, **record}) + "\n")

    def fit(self, evaluate) -> TrainState:
        while self.state.epoch < self.args.epochs:
            if not self.train_epoch(evaluate):
                break
        if self.writer is not None:
            self.writer.close()
        if self.dist.is_main:
            (self.output_dir / "train_state.json").write_text(json.dumps(vars(self.state), indent=1))
        return self.state
