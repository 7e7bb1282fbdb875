"""Two gloo processes under torchrun on the CPU: DistributedDataParallel keeps the ranks' weights identical."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from training_fixtures import assert_same_weights, tiny_train_data, write_latents

EACH_RANK = """
import json, os, sys
import torch
from sparseguidance.training import train, train_config_from_dict

trainer = train(train_config_from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False)
weights = {"model": trainer.model.state_dict(), "ema": trainer.ema.state_dict(), "world": trainer.dist.world}
torch.save(weights, os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
"""


def test_two_gloo_processes_hold_identical_weights(tmp_path):
    config = tiny_train_data(write_latents(tmp_path / "latents"), steps=3, checkpoint_every=3, snapshot_every=0)
    script = tmp_path / "each_rank.py"
    script.write_text(EACH_RANK)
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        json.dumps(config),
        str(run_dir),
    ]
    result = subprocess.run(command, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    ranks = [torch.load(run_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert_same_weights(ranks[0]["model"], ranks[1]["model"])
    assert_same_weights(ranks[0]["ema"], ranks[1]["ema"])
    saved = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)  # rank 0 writes the run dir
    assert saved["step"] == 3
    assert_same_weights(saved["model"], ranks[0]["model"])
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 3
