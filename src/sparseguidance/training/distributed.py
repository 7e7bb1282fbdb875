"""Devices and data order for one or many processes: torchrun's environment, and a resumable distributed sampler.

The data order is global: epoch e is one permutation of the dataset (seeded by the seed and e), cut into
global batches; rank r takes the r-th slice of each. So the samples of step s do not depend on how many
devices share the work, and a run resumes from (epoch, offset) exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from sparseguidance.errors import ConfigError, DataError


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: rank, number of processes, and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory (rank 0)."""
        return self.rank == 0


def init_distributed(device: str = "auto", group: bool = False) -> Distributed:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and join the process group (NCCL on GPUs, gloo on CPU).

    `group`: form a process group even for one process (FSDP shards over one; the same code path then runs
    under plain `python` and under torchrun). A lone process's group lives in memory: no port, no rendezvous.
    """
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(chosen)
    backend = "nccl" if use_cuda else "gloo"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend)
    elif group and not dist.is_initialized():
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return Distributed(rank, world, chosen)


def close_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass(frozen=True)
class Position:
    """Where the data stream stands: the epoch, and the samples of its permutation already consumed."""

    epoch: int = 0
    offset: int = 0

    def advance(self, size: int, batch: int) -> Position:
        """The position after one global batch; an epoch ends when fewer than a batch of samples remain."""
        offset = self.offset + batch
        return Position(self.epoch + 1, 0) if offset + batch > size else Position(self.epoch, offset)


def epoch_permutation(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the samples in one epoch, the same on every rank."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class GlobalBatchSampler(Sampler[list[int]]):
    """Endless stream of this rank's share of each global batch, from a given position on."""

    def __init__(self, size: int, batch: int, rank: int, world: int, seed: int, start: Position) -> None:
        if batch % world:
            raise ConfigError(f"train.batch_size {batch} must be divisible by the number of processes {world}")
        if size < batch:
            raise DataError(f"the dataset holds {size} samples, fewer than one batch of {batch}")
        self.size, self.batch, self.rank, self.world, self.seed, self.start = size, batch, rank, world, seed, start

    def __iter__(self) -> Iterator[list[int]]:
        position, order, share = self.start, None, self.batch // self.world
        while True:
            if order is None or position.offset == 0:
                order = epoch_permutation(self.size, self.seed, position.epoch)
            lo = position.offset + self.rank * share
            yield order[lo : lo + share].tolist()
            position = position.advance(self.size, self.batch)
