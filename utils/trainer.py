"""Training loop: DDP over the trainable tensors only, exact resume, the step of utils/step.py
(chunked, exact gradient accumulation with ``--gradient_accumulation_steps``)."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler
from tqdm import tqdm

from dataloaders import TrainPairDataset, VideoTextSplit, collate_trimmed
from dataloaders.workers import worker_loader
from models.checkpoint import CheckpointError, atomic_save, compact_checkpoint, export_official_checkpoint
from models.dgl import DGL
from models.losses import BatchObjective
from models.objectives import ObjectiveSettings, create_objective
from utils.config import TrainConfig
from utils.distributed import DistInfo, all_gather_object, note_progress
from utils.optim import WarmupCosine, build_optimizer, model_param_groups, non_finite_optimizer_state
from utils.progress import progress
from utils.resume import Position, carried_position
from utils.step import TrainStep, forward_module, resolve_precision
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


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU, and its own CUDA device's when ``device`` is one), as
    plain lists and tensors so that checkpoints load with ``weights_only=True``. A checkpoint holds one per rank.
    numpy's uint32 keys travel as int64: uint32 tensors do not pickle (torch 2.13), which gathering them needs."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
             "torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def rank_rng_state(saved: list | dict, rank: int, world: int, cuda_index: int | None) -> tuple[dict | None, list[str]]:
    """This rank's state from a checkpoint's ``rng`` (a list, one state per rank of the saving run), with the
    parts that cannot be restored said as log lines. ``cuda_index``: this rank's CUDA device (None on a CPU).

    A rank the saving run did not have keeps its seeded state; states of ranks this run lacks are unused. Older
    checkpoints hold rank 0's state alone (a dict) with the CUDA states of every GPU rank 0 saw: only rank 0
    restores it, and only its own device's CUDA state, where that device was saved.
    """
    notes = []
    states = saved if isinstance(saved, list) else [saved]
    if rank == 0 and len(states) > world:
        notes.append(f"the checkpoint holds the RNG states of {len(states)} ranks; this run has {world}, "
                     f"so those of ranks {world}-{len(states) - 1} are not used")
    if rank >= len(states):
        return None, notes + [f"rank {rank}: the checkpoint holds no RNG state for this rank "
                              f"(saved by {len(states)} rank(s)); it keeps its seeded state"]
    state = dict(states[rank])
    cuda, missing = state.pop("cuda", None), "holds no CUDA RNG state for this rank"
    if isinstance(cuda, (list, tuple)):  # older checkpoints: one state per GPU the saving rank 0 saw
        index = cuda_index or 0
        cuda, missing = (cuda[index] if index < len(cuda) else None), f"covers {len(cuda)} device(s), none for device {index}"
    if cuda_index is None:
        if cuda is not None:
            notes.append(f"rank {rank}: no CUDA device here, so the checkpoint's CUDA RNG state is not restored")
    elif cuda is None:
        notes.append(f"rank {rank}: the checkpoint {missing}; its CUDA generator keeps its seeded state")
    else:
        state["cuda"] = cuda
    return state, notes


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore a state of `rank_rng_state` in this process (its CUDA part on ``device``)."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def wrap_ddp(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """DDP over the trainable tensors. The model's buffers are CLIP's constant pixel statistics (identical on every
    rank, never written), so DDP's broadcast of them before every forward and chunk is skipped; an objective's
    buffers (DGL-BLIP's queue) are filled from gathered features, the same on every rank. An objective that runs
    the forward may leave trained tensors unused in a step (DGL-BLIP's ITM head with ``--itm_weight 0``)."""
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   forward_sync_buffers=False,
                                   find_unused_parameters=isinstance(model, BatchObjective))


def restore_scaler(scaler: torch.amp.GradScaler, ckpt: dict, precision: str) -> str | None:
    """Load the checkpoint's loss-scaler state into ``scaler`` (of the run's resolved ``precision``); a precision
    change is carried out and said: weights and Adam moments are fp32 under every precision, so only the loss
    scaler (fp16's alone) starts fresh or is dropped. Older checkpoints without ``precision``: a scaler state
    means fp16."""
    saved_scaler = ckpt.get("scaler") or {}
    saved = ckpt.get("precision") or ("fp16" if saved_scaler else None)
    if saved == precision or (saved is None and precision != "fp16"):
        scaler.load_state_dict(saved_scaler)
        return None
    was = saved or "bf16 or fp32"
    if precision == "fp16":
        return (f"trained in {was}, continued in fp16: a fresh loss scaler starts at scale {scaler.get_scale():g} "
                "(weights and optimizer state carry over)")
    if saved == "fp16":
        return f"trained in fp16, continued in {precision}: the loss scaler's state is dropped ({precision} needs none)"
    return f"trained in {was}, continued in {precision} (weights and optimizer state are fp32 in both)"


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
        objective = create_objective(model, ObjectiveSettings(cfg.loss, cfg.blip_loss, cfg.seed + dist.rank))
        self.ddp = wrap_ddp(forward_module(model, objective), dist.device) if dist.world_size > 1 else None
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
            model_param_groups(model, cfg.lr, cfg.coef_lr, cfg.wd), cfg.lr, (cfg.beta1, cfg.beta2), cfg.eps
        )
        self.total_steps = self.sampler.batches_per_epoch * cfg.epochs
        self.scheduler = WarmupCosine(self.optimizer, cfg.lr, self.total_steps, cfg.warmup_proportion)
        self.step = TrainStep(model, objective, self.optimizer, self.precision, dist.device,
                              cfg.gradient_accumulation_steps, cfg.clip_grad_norm, self.ddp, dist.world_size, cfg.tf32)
        self.state = TrainState()
        self.writer = None
        if dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(cfg.tensorboard_path or str(output_dir / "tensorboard"))

    # ------------------------------------------------------------------------------ checkpointing
    def checkpoint(self, rng: list[dict] | None = None) -> dict:
        """``rng``: every rank's RNG state, in rank order (default: this process's alone)."""
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
            precision=self.precision,
            rng=rng if rng is not None else [rng_state(self.dist.device)],
            world_size=self.dist.world_size,
            args=self.flags,
            train_config=dataclasses.asdict(self.cfg),
            objective=self.step.objective_state(),
        )

    def save(self, name: str) -> Path:
        path = self.output_dir / name
        # Every rank's own state (its objective's sampling too), saved by rank 0.
        rng = all_gather_object({**rng_state(self.dist.device), **self.step.rank_state()})
        if self.dist.is_main:
            atomic_save(self.checkpoint(rng), path)
            logger.info("saved %s (epoch %d, step %d)", path, self.state.epoch, self.state.global_step)
        return path

    def restore(self, ckpt: dict, source: str = "<checkpoint>", changes: list[str] | None = None) -> None:
        """Continue exactly where ``ckpt`` (ours, already loaded into the model) stopped; with accepted setting
        ``changes`` (`utils.resume.check_resume`), continue from its data position on the new schedule."""
        bad = non_finite_optimizer_state(ckpt["optimizer"], self.optimizer, self.model)
        scale = ckpt["scaler"].get("scale") if ckpt["scaler"] else None
        if isinstance(scale, float) and not math.isfinite(scale):
            bad.append("the gradient scaler's scale")
        if bad:  # the first step would write them on into checkpoint_latest.pt, and the loss check name no cause
            raise CheckpointError(f"{source}: non-finite (NaN or inf) values in the optimiser state: {bad}; "
                                  "use an earlier checkpoint")
        fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        note = restore_scaler(self.step.scaler, ckpt, self.precision)
        if note:
            logger.warning("resuming %s: %s", source, note)
        cuda_index = self.dist.device.index if self.dist.device.type == "cuda" else None
        rng, notes = rank_rng_state(ckpt["rng"], self.dist.rank, self.dist.world_size, cuda_index)
        for note in notes:
            logger.warning("resuming %s: %s", source, note)
        if rng is not None:
            set_rng_state(rng, self.dist.device)
        self.step.load_objective_state(ckpt.get("objective") or {}, rng)
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
        # A live bar on a terminal only: the --n_display log lines carry the same figures into log files.
        bar = progress(
            total=self.sampler.batches_per_epoch, initial=state.batch_in_epoch, desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
            enabled=self.dist.is_main, in_files=False, dynamic_ncols=True,
        )
        monitor, window_start = StepMonitor(self.dist.device), time.perf_counter()
        data_time, tic = 0.0, time.perf_counter()
        note_progress(f"loading the batch of step {state.global_step + 1}")
        for batch in self.loader:
            data_time += time.perf_counter() - tic
            note_progress(f"training step {state.global_step + 1}")
            ids = batch["input_ids"].to(self.dist.device, non_blocking=True)
            video = batch["video"].to(self.dist.device, non_blocking=True)
            mask = batch["input_mask"].to(self.dist.device, non_blocking=True)
            video_ids = batch["video_index"].to(self.dist.device, non_blocking=True)
            lr = self.scheduler.step()
            position = (state.epoch, state.batch_in_epoch, self.sampler.batches_per_epoch)
            loss, grad_norm = self.step(ids, video, mask, video_ids, position)  # tensors: nothing is read back here
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
            note_progress(f"loading the batch of step {state.global_step + 1}")
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
        # The figures of the terminal's bar too (step of total, rate, time left), for logs written to files.
        left = round(step_time * (self.total_steps - state.global_step))
        eta = f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
        logger.info(
            "epoch %d step %d/%d | loss %.4f (mean of %d steps %.4f) | lr %.3e | grad norm %.3g | data %.3fs step %.3fs | %.1f samples/s | eta %s",
            state.epoch + 1, state.global_step, self.total_steps, stats.last_loss, stats.steps, stats.mean_loss, lr,
            stats.grad_norm, data_time / stats.steps, step_time, samples, eta,
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
