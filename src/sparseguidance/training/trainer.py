"""The training loop: AdamW with warm-up, gradient clipping, bf16 autocast on GPU, EMA, checkpoints, exact resume,
DDP or FSDP2 (training.sharding), activation checkpointing.

A run directory holds:
    config.yaml                 the resolved TrainConfig
    log.jsonl, loss.png         one record per `log_every` steps (loss, lr, grad norm, images/s, step time)
    checkpoints/latest.pt       full state (model, EMA, optimizer, step, RNG, data position), written atomically;
    checkpoints/previous.pt     the one before, used (with a warning) when latest.pt is missing or damaged
    snapshots/step-NNNNNNN.safetensors   EMA weights every `snapshot_every` steps (weak models for AutoGuidance)
    model.safetensors           the final EMA weights (what `sample` loads)

Exact resume: every random draw of step s comes from a generator seeded by (seed, s, rank), and the data
order is a function of (seed, epoch, offset); so restarting from a checkpoint replays the same steps.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from sparseguidance.checkpoints import atomic_write, load_model, save_model
from sparseguidance.config import to_dict
from sparseguidance.data import build_dataset, check_dataset
from sparseguidance.errors import CheckpointError, ConfigError, TrainingError
from sparseguidance.locks import hold
from sparseguidance.models import DiT, create_model
from sparseguidance.models.prediction import Velocity, unwrap
from sparseguidance.pretrained import resolve_checkpoint
from sparseguidance.text import caption_table
from sparseguidance.training.config import OptimConfig, TrainConfig, train_config_from_dict
from sparseguidance.training.distributed import (
    Distributed,
    GlobalBatchSampler,
    Position,
    close_distributed,
    init_distributed,
)
from sparseguidance.training.objective import flow_matching_loss
from sparseguidance.training.runlog import append_log, plot_loss, truncate_log
from sparseguidance.training.sharding import (
    checkpoint_activations,
    full,
    load_model_state,
    load_optimizer_state,
    local,
    model_state,
    optimizer_state,
    shard,
    unsharded,
)

CHECKPOINTS = ("latest.pt", "previous.pt")  # newest first
# Settings a resumed run may change without --allow-changes: how far to train (`--steps`), when to write, where to run.
FREE_CHANGES = (
    "train.steps",
    "train.log_every",
    "train.checkpoint_every",
    "train.snapshot_every",
    "train.device",
    "train.fsdp",
    "train.activation_checkpointing",
    "data.num_workers",
)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STATE_KEYS = ("step", "model", "ema", "optimizer", "rng", "data", "config", "elapsed_s")


# --------------------------------------------------------------------------------------- pure pieces
def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator of every random draw of one step on one rank (noise, t, label dropout, tokens, flips)."""
    digest = hashlib.blake2b(f"{seed}/{step}/{rank}".encode(), digest_size=8).digest()
    return torch.Generator(device).manual_seed(int.from_bytes(digest, "little") >> 1)


def lr_at(step: int, config: OptimConfig) -> float:
    """Learning rate of 0-based step `step`: linear warm-up, then constant or cosine down to min_lr."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def ema_decay_at(step: int, config: OptimConfig) -> float:
    """EMA decay of 0-based step `step`; with warm-up, the average starts short so early snapshots are usable."""
    # Without it, 0.999 keeps 0.999^1500 = 22 % of the (zero-output) initial weights after 1,500 steps.
    return min(config.ema_decay, (1 + step) / (10 + step)) if config.ema_warmup else config.ema_decay


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, parameter by parameter (buffers are fixed and never change).

    Under FSDP both are sharded by the same plan, so each rank updates its own slices: no communication.
    """
    for average, current in zip(ema.parameters(), model.parameters(), strict=True):
        local(average).lerp_(local(current.detach()), 1 - decay)


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability ½."""
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


# ------------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    """Write latest.pt atomically; once the new state is fully written, the current one becomes previous.pt."""
    latest, previous = (directory / name for name in CHECKPOINTS)

    def write(tmp: str) -> None:
        torch.save(state, tmp)
        if latest.exists():  # a second name for the current file, so a usable latest.pt exists at every moment
            link = previous.with_name(f".{previous.name}.link.tmp")
            os.link(latest, link)
            os.replace(link, previous)

    atomic_write(latest, write)


def load_checkpoint(directory: Path, mmap: bool = False) -> dict[str, Any] | None:
    """The newest readable trainer state (latest.pt, else previous.pt with a warning); None if there is none.

    `mmap`: map the file instead of reading it, so that the ranks of one machine share one copy in the page cache
    (FSDP: every rank reads the full state and keeps only its slices).
    """
    problems = []
    for path in (directory / name for name in CHECKPOINTS):
        if not path.exists():
            problems.append(f"{path} is missing")
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            missing = [key for key in STATE_KEYS if key not in state]
            if missing:
                raise KeyError(f"no {', '.join(missing)}")
        except Exception as e:  # a truncated zip, a foreign pickle, a file that is not ours
            problems.append(f"{path} is unreadable ({type(e).__name__}: {e})")
            continue
        if problems:
            warnings.warn(f"{problems[0]}; resuming from {path} (step {state['step']})", RuntimeWarning, stacklevel=2)
        return state
    if all(p.endswith("is missing") for p in problems):
        return None
    raise CheckpointError("no usable checkpoint to resume from: " + "; ".join(problems))


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": 1}}` -> `{"train.lr": 1}`."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(saved: dict[str, Any], wanted: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Settings that differ between a checkpoint's config and this run's: {key: (saved, wanted)}."""
    try:  # through the current TrainConfig, so that a key added since (with its default) is no change
        saved = to_dict(train_config_from_dict(saved))
    except ConfigError:
        pass
    before, after = flatten(saved), flatten(to_dict(wanted))
    return {
        k: (before.get(k), after.get(k)) for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)
    }


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """`train.lr: 0.001 -> 0.002; …`."""
    return "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())


def check_resume_config(
    state: dict[str, Any], config: TrainConfig, directory: Path, allow_changes: bool
) -> dict[str, tuple[Any, Any]]:
    """Settings changed since the checkpoint, but FREE_CHANGES; refuses a new model, and the rest unless allowed."""
    changes = {k: pair for k, pair in config_changes(state["config"], config).items() if k not in FREE_CHANGES}
    listed = describe_changes(changes)
    if any(key.startswith("model.") for key in changes):
        raise CheckpointError(f"{directory} holds a run of a different model ({listed}); choose another --out")
    if changes and not allow_changes:
        raise CheckpointError(
            f"{directory} holds a run with other settings ({listed}): resume with the same settings, "
            "choose another --out, or pass --allow-changes (recorded in the run's log)"
        )
    return changes


# --------------------------------------------------------------------------------------------- trainer
class Trainer:
    """One training run in one process (rank) of a possibly distributed job."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        dist_info: Distributed,
        progress: bool = True,
        allow_changes: bool = False,
    ):
        self.config, self.dist, self.progress, self.allow_changes = config, dist_info, progress, allow_changes
        self.run_dir = Path(run_dir)
        self.checkpoints, self.snapshots = self.run_dir / "checkpoints", self.run_dir / "snapshots"
        self.log_path = self.run_dir / "log.jsonl"
        self.dataset = build_dataset(config.data)
        shape = (config.model.in_channels, config.model.input_size, config.model.input_size)
        check_dataset(self.dataset, shape, getattr(config.model, "num_classes", None))
        text_width = getattr(
            config.model, "text_width", None
        )  # text models: captions encoded once, looked up per batch
        self.captions = (
            caption_table(self.dataset.captions, config.text, text_width, dist_info.device) if text_width else None
        )
        torch.manual_seed(config.train.seed)  # the same initial weights on every rank
        self.model: DiT = create_model(config.model).to(dist_info.device)
        if config.train.init_from:
            self.model.load_state_dict(initial_weights(config).state_dict())
        self.ema: DiT = copy.deepcopy(self.model).requires_grad_(False)
        opt = config.train
        self.sharded = opt.fsdp
        if self.sharded and not dist.is_initialized():
            raise ConfigError("train.fsdp needs a process group: run through train(), or init_distributed(group=True)")
        if opt.activation_checkpointing:
            checkpoint_activations(self.model)
        if self.sharded:  # before the optimizer, which must hold the sharded parameters
            shard(self.model, dist_info.device)
            shard(self.ema, dist_info.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=opt.lr,
            betas=opt.betas,
            weight_decay=opt.weight_decay,
            fused=dist_info.device.type == "cuda",
        )
        self.step, self.position, self.elapsed, self.saved_step = 0, Position(), 0.0, -1
        self.changes: dict[str, tuple[Any, Any]] = {}  # settings changed since the checkpoint resumed from
        self.earlier_config: dict[str, Any] | None = None
        self.stop_signal: int | None = None  # set by SIGINT / SIGTERM: save, then stop after this step
        self.resume()
        self.net = self.wrap(self.model)

    def wrap(self, model: DiT) -> nn.Module:
        """DistributedDataParallel around the model when there are several processes (FSDP: sharded already)."""
        if self.dist.world == 1 or self.sharded:
            return model
        device_ids = [self.dist.device] if self.dist.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    # ------------------------------------------------------------------------------- state in and out
    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly (FSDP: every rank gathers, rank 0's is complete)."""
        return {
            "step": self.step,
            "model": model_state(self.model, self.sharded),
            "ema": model_state(self.ema, self.sharded),
            "optimizer": optimizer_state(self.model, self.optimizer, self.sharded),
            # Step draws come from step_generator(seed, step, rank); the global generator is kept for
            # whatever else draws from it (DataLoader worker seeds).
            "rng": {"seed": self.config.train.seed, "torch": torch.get_rng_state()},
            "data": {"epoch": self.position.epoch, "offset": self.position.offset},
            "config": to_dict(self.config),
            "elapsed_s": self.elapsed,
        }

    def resume(self) -> None:
        """Continue from the run directory's checkpoint, if it has one."""
        state = load_checkpoint(self.checkpoints, mmap=self.sharded)
        if state is None:
            return
        self.changes = check_resume_config(state, self.config, self.run_dir, self.allow_changes)
        self.earlier_config = state["config"]
        load_model_state(self.model, state["model"], self.sharded)
        load_model_state(self.ema, state["ema"], self.sharded)
        load_optimizer_state(self.model, self.optimizer, state["optimizer"], self.sharded)
        torch.set_rng_state(state["rng"]["torch"])
        self.step = self.saved_step = int(state["step"])
        self.position = Position(**state["data"])
        self.elapsed = float(state["elapsed_s"])
        if self.dist.is_main:
            print(f"{self.run_dir}: resuming from step {self.step} of {self.config.train.steps}", file=sys.stderr)

    def prepare_run_dir(self) -> None:
        """Write the resolved config; drop log records and temporary files an interrupted run left behind."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(to_dict(self.config), sort_keys=False)
        atomic_write(self.run_dir / "config.yaml", lambda tmp: Path(tmp).write_text(text))
        truncate_log(self.log_path, self.step)
        for leftover in self.run_dir.rglob(".*.tmp"):  # atomic writes killed before their rename
            leftover.unlink()
        if self.changes:
            self.record_changes()

    def record_changes(self) -> None:
        """Note the settings changed on resume in the log, and keep the earlier config in config-history.jsonl."""
        changes, listed = {key: list(pair) for key, pair in self.changes.items()}, describe_changes(self.changes)
        print(f"{self.run_dir}: settings changed at step {self.step}: {listed}", file=sys.stderr)
        append_log(self.log_path, {"step": self.step, "event": "settings changed", "changes": changes})
        entry = {"step": self.step, "time": time.time(), "changes": changes, "earlier_config": self.earlier_config}
        with open(self.run_dir / "config-history.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")

    @property
    def gathers(self) -> bool:
        """Whether this rank takes part in saving: rank 0 writes; under FSDP every rank gathers with it."""
        return self.dist.is_main or self.sharded

    def checkpoint(self) -> None:
        """Save the full state and redraw the loss curve (called on every rank; rank 0 writes)."""
        if self.gathers:
            self.check_weights()
            state = self.state()
            if self.dist.is_main:
                save_checkpoint(self.checkpoints, state)
                plot_loss(self.log_path, self.run_dir / "loss.png", title=self.run_dir.name)
        self.saved_step = self.step

    def snapshot(self, path: Path) -> None:
        """Save the EMA weights in our safetensors + JSON format (called on every rank; rank 0 writes)."""
        if not self.gathers:
            return
        self.check_weights()
        state = model_state(self.ema, self.sharded)  # FSDP: every rank gathers, rank 0 receives
        if self.dist.is_main:
            ema = unsharded(self.model.config, state) if self.sharded else self.ema
            text = {"text": to_dict(self.config.text)} if self.captions is not None else {}
            save_model(ema, path, {"step": self.step, "weights": "ema", "run": str(self.run_dir), **text})

    # ------------------------------------------------------------------------------------------ loop
    def loader(self) -> DataLoader:
        """Batches of this rank, endless, from the saved data position on."""
        opt, d = self.config.train, self.dist
        sampler = GlobalBatchSampler(len(self.dataset), opt.batch_size, d.rank, d.world, opt.seed, self.position)
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            collate_fn=as_batch,
            num_workers=self.config.data.num_workers,
            pin_memory=d.device.type == "cuda",
        )

    def autocast(self) -> AbstractContextManager[Any]:
        """bf16 autocast where the config asks for it (auto: on GPU only)."""
        precision, device = self.config.train.precision, self.dist.device.type
        if precision == "bf16" or (precision == "auto" and device == "cuda"):
            return torch.autocast(device, dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimizer step on a batch; returns the detached loss terms and the gradient norm."""
        opt, device = self.config.train, self.dist.device
        generator = step_generator(opt.seed, self.step, self.dist.rank, device)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        y = self.captions[y] if self.captions is not None else y  # caption ids -> prompt states
        if self.config.data.hflip:
            x = random_hflip(x, generator)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, opt)
        with self.autocast():
            terms = flow_matching_loss(self.net, self.model.config, x, y, self.config.objective, generator)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        max_norm = opt.grad_clip if opt.grad_clip > 0 else math.inf  # inf: measure the norm, clip nothing
        grad_norm = full(nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))  # FSDP: the norm over all shards
        self.optimizer.step()
        update_ema(self.ema, self.model, ema_decay_at(self.step, opt))
        self.step += 1
        self.position = self.position.advance(len(self.dataset), opt.batch_size)
        return {**{k: v.detach() for k, v in terms.items()}, "grad_norm": grad_norm.detach()}

    def run(self) -> Trainer:
        """Train up to `train.steps`, logging, checkpointing and snapshotting on the way; returns self."""
        opt, main = self.config.train, self.dist.is_main
        if main:
            self.prepare_run_dir()
        bar = tqdm(
            total=opt.steps,
            initial=self.step,
            disable=not (self.progress and main),
            unit="step",
            dynamic_ncols=True,
            desc=self.run_dir.name,
        )
        window = Window()
        batches = iter(self.loader())
        while self.step < opt.steps:
            window.add(self.train_step(*next(batches)))
            bar.update(1)
            if self.step % opt.log_every == 0 or self.step == opt.steps:
                self.log(window.close(self.dist.world), bar)
            with window.paused():  # saving is not training: keep it out of images/s and step time
                if opt.snapshot_every and self.step % opt.snapshot_every == 0:
                    self.snapshot(self.snapshots / f"step-{self.step:07d}.safetensors")
                if self.step % opt.checkpoint_every == 0:
                    self.checkpoint()
            if self.stop_requested():  # SIGINT / SIGTERM under stop_on_signals
                bar.close()
                self.stop()
        bar.close()
        self.finish()
        return self

    @contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """While inside, SIGINT / SIGTERM end `run` after the current step, saved; a second signal acts at once."""
        if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
            yield
            return
        previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}

        def request(number: int, frame: Any) -> None:
            self.stop_signal = number
            for other, handler in previous.items():
                signal.signal(other, handler)

        for number in STOP_SIGNALS:
            signal.signal(number, request)
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def stop_requested(self) -> bool:
        """Whether a signal asked to stop; under DDP all ranks agree, at log steps, so they stop at the same step."""
        if self.dist.world == 1:
            return self.stop_signal is not None
        if self.step % self.config.train.log_every:
            return False
        flag = torch.tensor([float(self.stop_signal is not None)], device=self.dist.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def stop(self) -> NoReturn:
        """Save this step's full state (rank 0), say how to resume, and stop with KeyboardInterrupt (exit 130)."""
        name = signal.Signals(self.stop_signal).name if self.stop_signal else "a signal to another rank"
        if self.saved_step != self.step:
            self.checkpoint()
        if self.dist.is_main:
            print(
                f"{self.run_dir}: stopped by {name}; saved step {self.step} of {self.config.train.steps}, "
                "rerun the same command to resume",
                file=sys.stderr,
            )
        raise KeyboardInterrupt(name)

    def log(self, means: dict[str, float], bar: tqdm) -> None:
        """Write one log record (rank 0) and show loss and images/s on the progress bar."""
        step_time = means.pop("step_time_s")
        images_per_s = self.config.train.batch_size / step_time
        self.elapsed += means.pop("window_s")
        record = {
            "step": self.step,
            "epoch": self.position.epoch,
            **means,
            "lr": lr_at(self.step - 1, self.config.train),
            "images_per_s": images_per_s,
            "step_time_s": step_time,
            "elapsed_s": self.elapsed,
        }
        if not math.isfinite(means["loss"]):
            raise self.diverged(f"the loss is {means['loss']}")
        bar.set_postfix(loss=f"{means['loss']:.4f}", img_s=f"{images_per_s:.1f}")
        if self.dist.is_main:
            append_log(self.log_path, record)

    def check_weights(self) -> None:
        """Raise TrainingError before a save when the weights are no longer finite: nothing diverged is written.

        Under FSDP each rank checks its shards and all agree, so that every rank stops.
        """
        finite = torch.tensor([float(all(torch.isfinite(local(p)).all() for p in self.model.parameters()))])
        if self.sharded:
            finite = finite.to(self.dist.device)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not finite.item():
            raise self.diverged("the weights hold NaN or infinite values")

    def diverged(self, problem: str) -> TrainingError:
        """The error that stops a diverged run, naming the last good checkpoint (which is left as it was)."""
        kept = f"step {self.saved_step}, {self.checkpoints / CHECKPOINTS[0]}" if self.saved_step >= 0 else "none yet"
        return TrainingError(
            f"training diverged by step {self.step}: {problem}. Stopped without saving; last good checkpoint: "
            f"{kept}. Lower train.lr or set train.grad_clip, then run again"
        )

    def finish(self) -> None:
        """Save the final EMA weights and, unless this step is saved already, the full state (every rank calls)."""
        if self.saved_step != self.step:
            self.checkpoint()
        self.snapshot(self.run_dir / "model.safetensors")


def initial_weights(config: TrainConfig) -> DiT:
    """The model a fine-tuning run starts from (`train.init_from`); its architecture must be the run's."""
    start, prediction = unwrap(load_model(resolve_checkpoint(config.train.init_from)))
    if type(prediction) is not Velocity:
        raise CheckpointError(f"train.init_from {config.train.init_from} predicts {prediction.name}; we train velocity")
    changes = config_changes({**to_dict(config), "model": to_dict(start.config)}, config)
    if changes:
        raise CheckpointError(
            f"train.init_from {config.train.init_from} is a different model ({describe_changes(changes)})"
        )
    return start


def as_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """DataLoader collate: the dataset's __getitems__ already returns the stacked batch."""
    return batch


class Window:
    """Loss terms and wall time accumulated between two log records."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new window now."""
        self.sums: dict[str, torch.Tensor] = {}
        self.count, self.start = 0, time.perf_counter()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the time spent inside out of the window."""
        start = time.perf_counter()
        yield
        self.start += time.perf_counter() - start

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        """Add one step's terms (kept on the device: no synchronisation per step)."""
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0) + value.float()
        self.count += 1

    def close(self, world: int) -> dict[str, float]:
        """Means over the window and over all ranks, the mean step time, the window's wall time; then reset."""
        names = sorted(self.sums)
        totals = torch.stack([self.sums[n] for n in names])
        if world > 1:
            dist.all_reduce(totals)
        means = dict(zip(names, (totals / (self.count * world)).tolist(), strict=True))
        seconds = time.perf_counter() - self.start  # after the reduction: it waited for the device
        means.update(step_time_s=seconds / self.count, window_s=seconds)
        self.reset()
        return means


def train(config: TrainConfig, run_dir: str | Path, progress: bool = True, allow_changes: bool = False) -> Trainer:
    """Train (or resume) a run in `run_dir`, holding its lock; under torchrun each process calls this (DDP or FSDP).

    `allow_changes`: resume even where settings differ from the checkpoint's (recorded in the run's log).
    """
    dist_info = init_distributed(config.train.device, group=config.train.fsdp)
    try:
        with hold(run_dir, f"run folder {run_dir}") if dist_info.is_main else nullcontext():
            trainer = Trainer(config, run_dir, dist_info, progress, allow_changes)
            with trainer.stop_on_signals():
                return trainer.run()
    finally:
        close_distributed()
