"""Large models: FSDP2 sharding, activation checkpointing, and the full state dicts that checkpoints hold.

FSDP2 (`torch.distributed.fsdp.fully_shard`) shards each transformer block, then the root (embedders, final
layer), over all processes: every parameter, its gradient and its AdamW moments live as 1/N of the tensor
on each rank, and a block's full weights exist only while that block runs. The EMA is a second module
sharded by the same plan, so its shards line up with the model's and the update is local to each rank
(no gathers per step).

Checkpoints keep the single-process layout whatever ran them: full state dicts gathered to rank 0's CPU,
the optimizer keyed by parameter index like `Optimizer.state_dict()`. So a run resumes under FSDP or DDP
alike, and `sample` reads an FSDP run's files as any other.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

from sparseguidance.models import ModelConfig, create_model

# Full tensors, on rank 0's CPU only (the other ranks get empty dicts): what torch.save writes.
GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
# Every rank reads the same full state (memory-mapped) and keeps its own slice.
SCATTER = StateDictOptions(full_state_dict=True)


def transformer_blocks(model: nn.Module) -> Iterator[nn.Module]:
    """Every block of every `blocks` list in the model (the trunk's, and a decoder's when it has one)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] == "blocks":
            yield from module


def checkpoint_activations(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them.

    The block's own forward is wrapped (parameter names stay as they are). A block's inputs are tokens and
    conditioning only; the token subsets are drawn outside the blocks, so recomputing draws nothing again.
    """
    for block in transformer_blocks(model):
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


def shard(model: nn.Module, device: torch.device) -> None:
    """FSDP2 over all processes of the default group: each transformer block, then the root."""
    # FSDP2 warns when a module returns a view, in case an in-place op on it skips the backward hook. The
    # velocity is a channel slice of the output, and the loss only reads it out of place: nothing to warn of.
    warnings.filterwarnings("ignore", r"FSDP2-wrapped module \(FSDP\w+\) returned a view tensor", UserWarning)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a sharded tensor (the tensor itself when it is not sharded)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a (possibly sharded or replicated) tensor."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def model_state(model: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    """The full state dict (sharded: gathered by every rank, held by rank 0 alone)."""
    return get_model_state_dict(model, options=GATHER) if sharded else model.state_dict()


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], sharded: bool) -> None:
    """Load a full state dict (sharded: every rank passes the full state and keeps its slice)."""
    if sharded:
        set_model_state_dict(model, state, options=SCATTER)
    else:
        model.load_state_dict(state)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, sharded: bool) -> dict[str, Any]:
    """`optimizer.state_dict()`'s layout with full tensors (sharded: gathered, held by rank 0 alone)."""
    if not sharded:
        return optimizer.state_dict()
    by_name = get_optimizer_state_dict(model, optimizer, options=GATHER)
    if not by_name:  # ranks other than 0
        return {}
    names = [name for group in by_name["param_groups"] for name in group["params"]]
    index = {name: i for i, name in enumerate(names)}
    return {
        "state": {index[name]: value for name, value in by_name["state"].items()},
        "param_groups": [{**group, "params": [index[n] for n in group["params"]]} for group in by_name["param_groups"]],
    }


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], sharded: bool
) -> None:
    """Load `optimizer_state`'s layout (sharded: every rank passes the full state and keeps its slice)."""
    if not sharded:
        optimizer.load_state_dict(state)
        return
    # The optimizer was built on model.parameters(), so index i is the model's i-th parameter.
    names = [name for name, _ in model.named_parameters()]
    by_name = {
        "state": {names[i]: value for i, value in state["state"].items()},
        "param_groups": [{**group, "params": [names[i] for i in group["params"]]} for group in state["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=SCATTER)
    for group, stored in zip(optimizer.param_groups, state["param_groups"], strict=True):
        # As Optimizer.load_state_dict does: the stored hyperparameters as they were (torch's scatter turns
        # the betas tuple into a list, which a later checkpoint would then store).
        group.update({key: value for key, value in stored.items() if key != "params"})


def unsharded(config: ModelConfig, state: dict[str, torch.Tensor]) -> nn.Module:
    """A plain model holding a full state dict's tensors (no copy, no initialisation): for `save_model`."""
    with torch.device("meta"):
        model = create_model(config)
    model.load_state_dict(state, assign=True)
    return model
