"""Training loop: DDP over the trainable tensors only, exact resume, the step of utils/step.py
(chunked, exact gradient accumulation with ``--gradient_accumulation_steps``)."""
from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler
from tqdm import tqdm

from dataloaders import TrainPairDataset, VideoTextSplit, collate_trimmed
from dataloaders.workers import worker_loader
from models.checkpoint import atomic_save, compact_checkpoint, export_official_checkpoint
from models.dgl import DGL
from models.losses import create_loss
from utils.config import TrainConfig
from utils.distributed import DistInfo
from utils.optim import WarmupCosine, build_optimizer, param_groups
from utils.resume import Position, carried_position
from utils.step import TrainStep, resolve_precision
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
        cfg: TrainConfig,
        dist: DistInfo,
        backbone: dict,
        output_dir: Path,
        flags: dict[str, Any] | None = None,
    ):
        """``flags``: the run's settings by flag name, stored in every checkpoint beside the typed state."""
        self.model, self.split, self.dataset, self.cfg, self.dist = model, split, dataset, cfg, dist
        self.backbone, self.output_dir, self.flags = backbone, output_dir, dict(flags or {})
        self.precision = resolve_precision(cfg.precision, dist.device)
        self.ddp = (
            DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
            if dist.world_size > 1
            else None
        )
        self.sampler = EpochSampler(
            len(dataset), cfg.batch_size, dist.rank, dist.world_size, cfg.seed, cfg.train_group_size
        )
        self.loader = worker_loader(
            dataset,
            cfg.num_workers,
            batch_size=cfg.batch_size,
            sampler=self.sampler,
            drop_last=True,
            pin_memory=dist.device.type == "cuda",
            collate_fn=collate_trimmed,
            persistent_workers=False,
        )
        self.optimizer = build_optimizer(
            param_groups(model, cfg.lr, cfg.coef_lr, cfg.wd), cfg.lr, (cfg.beta1, cfg.beta2), cfg.eps
        )
        self.total_steps = self.sampler.batches_per_epoch * cfg.epochs
        self.scheduler = WarmupCosine(self.optimizer, cfg.lr, self.total_steps, cfg.warmup_proportion)
        self.step = TrainStep(model, create_loss(cfg.loss), self.optimizer, self.precision, dist.device,
                              cfg.gradient_accumulation_steps, cfg.clip_grad_norm, self.ddp, dist.world_size)
        self.state = TrainState()
        self.writer = None
        if dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(cfg.tensorboard_path or str(output_dir / "tensorboard"))

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
            scaler=self.step.scaler.state_dict(),
            rng=rng_state(),
            world_size=self.dist.world_size,
            args=self.flags,
            train_config=dataclasses.asdict(self.cfg),
        )

    def save(self, name: str) -> Path:
        path = self.output_dir / name
        if self.dist.is_main:
            atomic_save(self.checkpoint(), path)
            logger.info("saved %s (epoch %d, step %d)", path, self.state.epoch, self.state.global_step)
        return path

    def restore(self, ckpt: dict, source: str = "<checkpoint>", changes: list[str] | None = None) -> None:
        """Continue exactly where ``ckpt`` (ours, already loaded into the model) stopped; with accepted setting
        ``changes`` (`utils.resume.check_resume`), continue from its data position on the new schedule."""
        fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        position = Position(ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["global_step"])
        if changes:
            for group, fresh in zip(self.optimizer.param_groups, fresh_groups):
                group.update(fresh)  # the new --lr, --wd, betas, eps; the Adam moments are kept
            global_batch = self.cfg.batch_size * self.dist.world_size
            position = carried_position(ckpt, self.sampler.batches_per_epoch, global_batch, self.dist.world_size)
            self.scheduler.step_num = position.global_step
            logger.warning(
                "resuming %s with new settings (%s); schedule recomputed: step %d of %d becomes step %d of %d",
                source, "; ".join(changes), ckpt["global_step"], ckpt["scheduler"]["total_steps"],
                position.global_step, self.total_steps,
            )
        else:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.state = TrainState(position.epoch, position.batch_in_epoch, position.global_step, ckpt["best_r1"], ckpt["best_epoch"])
        logger.info("resumed at epoch %d, batch %d, step %d", self.state.epoch, self.state.batch_in_epoch, self.state.global_step)

    # ------------------------------------------------------------------------------------- loops
    def train_epoch(self, evaluate) -> bool:
        """One epoch (or its remainder after a resume). Returns False when ``--max_steps`` stopped it."""
        state, cfg = self.state, self.cfg
        self.model.train()
        self.dataset.set_epoch(state.epoch)
        self.sampler.set_position(state.epoch, state.batch_in_epoch)
        bar = tqdm(
            total=self.sampler.batches_per_epoch, initial=state.batch_in_epoch, desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
            disable=not self.dist.is_main, dynamic_ncols=True,
        )
        monitor, window_start = StepMonitor(self.dist.device), time.perf_counter()
        data_time, tic = 0.0, time.perf_counter()
        for batch in self.loader:
            data_time += time.perf_counter() - tic
            ids = batch["input_ids"].to(self.dist.device, non_blocking=True)
            video = batch["video"].to(self.dist.device, non_blocking=True)
            lr = self.scheduler.step()
            loss, grad_norm = self.step(ids, video)  # tensors: nothing is read back here
            state.global_step += 1
            state.batch_in_epoch += 1
            monitor.add(state.global_step, loss, grad_norm, batch["video_index"])
            bar.update(1)
            stop = cfg.max_steps is not None and state.global_step >= cfg.max_steps
            display = state.global_step % cfg.n_display == 0 or state.global_step == 1
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
        if cfg.eval_every_epoch:
            r1 = evaluate(state.epoch)
            if r1 >= state.best_r1:
                state.best_r1, state.best_epoch = r1, state.epoch
                self.save("checkpoint_best.pt")
                if cfg.export_official and self.dist.is_main:
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
        samples = self.cfg.batch_size * self.dist.world_size / step_time
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
        while self.state.epoch < self.cfg.epochs:
            if not self.train_epoch(evaluate):
                break
        if self.writer is not None:
            self.writer.close()
        if self.dist.is_main:
            (self.output_dir / "train_state.json").write_text(json.dumps(vars(self.state), indent=1))
        return self.state
