"""FSDP2 and activation checkpointing: two gloo processes under torchrun on the CPU, against DDP on the same batches.

One torchrun launch trains every variant in turn in the same two processes, then a run killed with SIGKILL in
the middle of step 5; a second launch resumes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import tiny_model
from training_fixtures import ONE_THREAD_ENV, assert_same_weights, tiny_train_data, write_latents

from sparseguidance.checkpoints import load_model
from sparseguidance.cli import main
from sparseguidance.errors import ConfigError
from sparseguidance.models import create_model
from sparseguidance.training import (
    ObjectiveConfig,
    flow_matching_loss,
    load_train_config,
    train,
    train_config_from_dict,
)
from sparseguidance.training.distributed import init_distributed
from sparseguidance.training.sharding import checkpoint_activations, transformer_blocks
from sparseguidance.training.trainer import Trainer, step_generator

pytestmark = pytest.mark.skipif(not dist.is_gloo_available(), reason="torch built without gloo")

# Run folder: (the settings it trains with, the settings it resumes with after an exception in step 5, after the
# step-4 checkpoint; None: straight through). Each run also leaves every rank's local gradients of its last step.
VARIANTS = {
    "ddp": ({"fsdp": False}, None),
    "fsdp": ({"fsdp": True}, None),
    "fsdp-checkpointed": ({"fsdp": True, "activation_checkpointing": True}, None),
    "ddp-checkpointed": ({"fsdp": False, "activation_checkpointing": True}, None),
    "ddp-then-fsdp": ({"fsdp": False}, {"fsdp": True}),
    "fsdp-then-ddp": ({"fsdp": True}, {"fsdp": False}),
}
EACH_RANK = """
import json, os, signal, sys
import torch
import sparseguidance.training.trainer as trainer_module
from sparseguidance.training import train, train_config_from_dict
from sparseguidance.training.sharding import local

signal.alarm(180)  # a hung collective must not outlive the test: SIGALRM ends the process (torchrun's workers
# run in sessions of their own, out of reach of the test's timeout)
config, root, variants, last = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
rank, real_update = os.environ["RANK"], trainer_module.update_ema
# One process group for all runs of a launch: joining torchrun's store a second time from the same process
# can pair stale rendezvous keys and hang, so the group each train() would leave at its end stays.
trainer_module.close_distributed = lambda: None


def settings(changes):
    return train_config_from_dict({**config, "train": {**config["train"], **changes}})


def fail_in_step(step, failure):
    calls = []

    def update(*args, **kwargs):  # after the optimizer step: step 5's update is lost with the process
        calls.append(1)
        if len(calls) == step:
            failure()
        real_update(*args, **kwargs)

    trainer_module.update_ema = update


def crash():
    raise RuntimeError("crash in step 5")


for name, (first, then) in variants.items():
    folder = os.path.join(root, name)
    if then is not None:
        fail_in_step(5, crash)
        try:
            train(settings(first), folder, progress=False)
        except RuntimeError as e:
            assert str(e) == "crash in step 5", e
        trainer_module.update_ema = real_update
        first = then
    trainer = train(settings(first), folder, progress=False)  # train.fsdp may change on resume, unasked
    grads = {n: local(p.grad).clone() for n, p in trainer.model.named_parameters()}
    torch.save(grads, os.path.join(folder, f"grads-rank{rank}.pt"))

if last == "kill":  # else resume it
    fail_in_step(5, lambda: os.kill(os.getpid(), signal.SIGKILL))  # like kill -9: no cleanup, no save
trainer = train(settings({"fsdp": True}), os.path.join(root, "killed"), progress=False)
assert trainer.step == 6
torch.distributed.destroy_process_group()
"""


def torchrun(script: Path, config: dict, root: Path, variants: dict, last: str) -> subprocess.CompletedProcess:
    """Two gloo processes on one thread each running `script`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    arguments = [json.dumps(config), str(root), json.dumps(variants), last]
    return subprocess.run([*command, *arguments], capture_output=True, timeout=240, env=ONE_THREAD_ENV)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Every variant trained for 6 steps; then "killed": killed in step 5 by SIGKILL, resumed by a fresh launch."""
    root = tmp_path_factory.mktemp("fsdp")
    config = tiny_train_data(write_latents(root / "latents"))
    script = root / "each_rank.py"
    script.write_text(EACH_RANK)
    first = torchrun(script, config, root, VARIANTS, "kill")
    assert first.returncode != 0, "the killed run should have ended the first launch"
    for name in VARIANTS:  # everything before the kill finished
        assert (root / name / "grads-rank1.pt").exists(), first.stderr.decode()[-4000:]
    killed = torch.load(root / "killed" / "checkpoints" / "latest.pt", weights_only=True)
    assert killed["step"] == 4, first.stderr.decode()[-4000:]
    second = torchrun(script, config, root, {}, "resume")
    assert second.returncode == 0, second.stderr.decode()[-4000:]
    return root


def saved(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "latest.pt", weights_only=True)


def logged(run: Path, key: str) -> list[float]:
    return [json.loads(line)[key] for line in (run / "log.jsonl").read_text().splitlines()]


def grads(run: Path, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(run / f"grads-rank{rank}.pt", weights_only=True)


# FSDP reduce-scatters the same per-rank gradients that DDP all-reduces (with two ranks a sum does not depend
# on its order, and halving is exact), but the clipping norm is summed from per-shard pieces in another order:
# its last bit, hence the clip factor and every update after it, may differ. Measured after six steps: weights
# and EMA within 3e-8, AdamW moments within 4e-9, grad norms one ulp apart, losses equal; so 3× that margin.
CLOSE = {"rtol": 1e-6, "atol": 1e-7}


def assert_close_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], **CLOSE, msg=name)


def assert_close_optimizers(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for index, moments in a["state"].items():
        assert_close_states(moments, b["state"][index])


def test_fsdp_matches_ddp_on_the_same_batches(runs):
    ddp, fsdp = saved(runs / "ddp"), saved(runs / "fsdp")
    assert fsdp["step"] == 6 and fsdp.keys() == ddp.keys()
    assert_close_states(fsdp["model"], ddp["model"])
    assert_close_states(fsdp["ema"], ddp["ema"])
    assert_close_optimizers(fsdp["optimizer"], ddp["optimizer"])
    for key in ("loss", "grad_norm"):  # grad_norm: the global norm over both ranks' shards, as DDP's
        torch.testing.assert_close(logged(runs / "fsdp", key), logged(runs / "ddp", key), **CLOSE)


def test_fsdp_checkpoint_loads_like_any_other(runs):
    state = saved(runs / "fsdp")
    reference = saved(runs / "ddp")
    assert {k: v.shape for k, v in state["model"].items()} == {k: v.shape for k, v in reference["model"].items()}
    assert all(v.device.type == "cpu" and not v.is_meta for v in state["model"].values())
    plain = create_model(load_model(runs / "fsdp" / "model.safetensors").config)
    plain.load_state_dict(state["model"])  # the single-process layout: no prefixes, full tensors
    optimizer = torch.optim.AdamW(plain.parameters())
    optimizer.load_state_dict(state["optimizer"])  # keyed by parameter index, as Optimizer.state_dict()
    assert_same_weights(load_model(runs / "fsdp" / "checkpoints" / "latest.pt").state_dict(), state["ema"])
    assert_same_weights(load_model(runs / "fsdp" / "model.safetensors").state_dict(), state["ema"])
    snapshot = load_model(runs / "fsdp" / "snapshots" / "step-0000003.safetensors")
    assert snapshot.config == plain.config


def test_killed_fsdp_run_resumes_as_if_never_stopped(runs):
    resumed, uninterrupted = saved(runs / "killed"), saved(runs / "fsdp")
    assert_same_weights(resumed["model"], uninterrupted["model"])
    assert_same_weights(resumed["ema"], uninterrupted["ema"])
    assert logged(runs / "killed", "loss") == logged(runs / "fsdp", "loss")
    assert logged(runs / "killed", "step") == [1, 2, 3, 4, 5, 6]


def test_runs_resume_across_ddp_and_fsdp(runs):
    for name in ("ddp-then-fsdp", "fsdp-then-ddp"):
        resumed, reference = saved(runs / name), saved(runs / "ddp")
        assert_close_states(resumed["model"], reference["model"])
        assert_close_states(resumed["ema"], reference["ema"])
        assert_close_optimizers(resumed["optimizer"], reference["optimizer"])
        assert logged(runs / name, "step") == [1, 2, 3, 4, 5, 6]


def test_activation_checkpointing_gives_the_same_gradients(runs):
    for plain, checkpointed in (("fsdp", "fsdp-checkpointed"), ("ddp", "ddp-checkpointed")):
        for rank in (0, 1):  # every rank's own gradients (FSDP: its shards) of the last step, bit for bit
            assert_same_weights(grads(runs / checkpointed, rank), grads(runs / plain, rank))
        assert_same_weights(saved(runs / checkpointed)["model"], saved(runs / plain)["model"])


def test_recomputation_draws_nothing_again():
    """Checkpointed blocks recompute in backward; the token subsets, drawn outside them, are not redrawn."""
    objective = ObjectiveConfig()
    results = []
    for checkpointed in (False, True):
        model = tiny_model(routes=((1, 2),), train_gamma=0.5).train()
        if checkpointed:
            checkpoint_activations(model)
        generator = step_generator(0, 3, 0, torch.device("cpu"))
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        y = torch.tensor([0, 1, 2, 5])
        loss = flow_matching_loss(model, model.config, x, y, objective, generator)["loss"]
        drawn = generator.get_state()
        loss.backward()
        assert torch.equal(generator.get_state(), drawn)  # the backward pass drew nothing
        results.append((loss.detach(), drawn, {n: p.grad for n, p in model.named_parameters()}))
    (loss, drawn, plain), (loss_c, drawn_c, checkpointed) = results
    assert torch.equal(loss, loss_c) and torch.equal(drawn, drawn_c)
    assert_same_weights(checkpointed, plain)
    assert len(list(transformer_blocks(model))) == 4


MASKING = {"routes": [], "decoder": {"depth": 1, "width": 16, "heads": 2}}  # the decoder's blocks are sharded too


@pytest.mark.parametrize("model", [{}, MASKING], ids=["routing", "masking"])
def test_fsdp_in_one_process_forms_its_own_group(model, tmp_path):
    """`train --fsdp` under plain python: FSDP over a one-process group, equal to the unsharded run bit for bit."""
    data = write_latents(tmp_path / "latents")
    config = tmp_path / "tiny.yaml"
    run = tiny_train_data(data, steps=3, checkpoint_every=3, snapshot_every=0)
    config.write_text(json.dumps({**run, "model": {**run["model"], **model}}))
    train(load_train_config(config), tmp_path / "plain", progress=False)
    flags = ["--fsdp", "--activation-checkpointing", "--no-progress"]
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "fsdp"), *flags]) == 0
    assert not dist.is_initialized()  # the group left with the run
    resolved = load_train_config(tmp_path / "fsdp" / "config.yaml").train
    assert resolved.fsdp and resolved.activation_checkpointing
    sharded, plain = saved(tmp_path / "fsdp"), saved(tmp_path / "plain")
    assert_same_weights(sharded["model"], plain["model"])
    assert_same_weights(sharded["ema"], plain["ema"])
    assert sharded["optimizer"]["param_groups"] == plain["optimizer"]["param_groups"]


def test_a_text_to_image_model_shards_and_checkpoints_unchanged(bert: Path, tmp_path):
    """TR-DiT (trunk and text connector blocks) under one-process FSDP with activation checkpointing: unchanged."""
    from test_training_text import text_run

    plain = train(train_config_from_dict(text_run(bert)), tmp_path / "plain", progress=False)
    run = text_run(bert)
    run["train"].update(fsdp=True, activation_checkpointing=True)
    train(train_config_from_dict(run), tmp_path / "fsdp", progress=False)
    assert len(list(transformer_blocks(plain.model))) == 3  # 2 trunk blocks, 1 connector block
    sharded, reference = saved(tmp_path / "fsdp"), saved(tmp_path / "plain")
    assert_same_weights(sharded["model"], reference["model"])
    assert_same_weights(sharded["ema"], reference["ema"])
    weights = load_model(tmp_path / "fsdp" / "model.safetensors")
    assert_same_weights(weights.state_dict(), reference["ema"])


def test_a_trainer_built_by_hand_for_fsdp_needs_a_group(tmp_path):
    config = train_config_from_dict(tiny_train_data(write_latents(tmp_path / "latents"), fsdp=True))
    with pytest.raises(ConfigError, match="train.fsdp needs a process group"):
        Trainer(config, tmp_path / "run", init_distributed("cpu"), progress=False)
