"""Bad inputs to every subcommand, run in-process: exit code 2, one line on stderr naming the problem, nothing on
stdout, no traceback, and no file created or changed anywhere (the run's folder, the fixtures, the defaults).

Each row is a command line (placeholders in braces are the fixtures below) and a piece of the expected message.
Every row runs with `torch.jit.load` made to fail the test: no bad input may reach TorchScript's loader.
"""

from __future__ import annotations

import json
import pickle
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny_vae, tiny_model
from PIL import Image
from safetensors.torch import load_file, save_file
from training_fixtures import tiny_train_data, write_latents

from sparseguidance.checkpoints import save_model
from sparseguidance.cli import main
from sparseguidance.metrics.frechet import Gaussian
from sparseguidance.metrics.inception import TAG as INCEPTION_TAG
from sparseguidance.metrics.mnist_features import SHIPPED
from sparseguidance.metrics.reference import ReferenceStats, save_reference


class Payload:
    """A pickle that, if unpickled, creates the file `marker` (what a hostile checkpoint would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Every file the rows name, in one folder `w` that no row may change; keys are names with `_` for `.` and `-`."""
    w = tmp_path_factory.mktemp("world")
    (w / "afile.txt").write_text("a regular file\n")
    for name in ("afolder", "empty", "dir.png", "dir.npz", "dir.json", "dir.safetensors", "sib.json"):
        (w / name).mkdir()
    (w / "blocked_shards").write_text("a file where a shard folder goes\n")

    save_model(tiny_model(routes=((1, 2),), train_gamma=0.5), w / "model.safetensors")
    save_model(tiny_model(in_channels=4), w / "latent.safetensors")
    nan = tiny_model()
    with torch.no_grad():
        nan.blocks[0].mlp.fc1.weight[0, 0] = float("nan")
    save_model(nan, w / "nan.safetensors")
    (w / "junk.safetensors").write_text("not weights\n")
    (w / "junk.pt").write_bytes(b"not a checkpoint")
    (w / "pickle.pt").write_bytes(pickle.dumps({"model": Payload(w / "pwned")}))
    torch.save({"model": Payload(w / "pwned")}, w / "pickle-zip.pt")
    with warnings.catch_warnings():  # torch.jit.script is deprecated; here it only makes a TorchScript file
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(w / "script.pt"))

    digits = np.random.default_rng(0).integers(0, 256, size=(12, 32, 32, 1), dtype=np.uint8)
    np.savez(w / "samples.npz", arr_0=digits, arr_1=np.arange(12) % 10)
    np.savez(w / "nolabels.npz", arr_0=digits)
    np.savez(w / "float.npz", arr_0=digits.astype(np.float32))
    np.savez(w / "badlabels.npz", arr_0=digits, arr_1=np.arange(5))
    np.savez(w / "object.npz", arr_0=np.array([{"a": 1}], dtype=object))
    (w / "trunc.npz").write_bytes((w / "samples.npz").read_bytes()[:5000])
    (w / "trunc.safetensors").write_bytes((w / "model.safetensors").read_bytes()[:5000])
    (w / "trunc.json").write_text((w / "model.json").read_text())
    (w / "badlatents").mkdir()
    (w / "badlatents" / "shard.npz").write_bytes((w / "samples.npz").read_bytes()[:5000])
    assert main(["ref-stats", str(w / "samples.npz"), "--features", "mnist", "--out", str(w / "ref.npz")]) == 0
    with np.load(w / "ref.npz") as archive:
        np.savez(w / "nanref.npz", **{**archive, "mu": archive["mu"] * np.nan})
    save_reference(w / "incref.npz", ReferenceStats(INCEPTION_TAG, Gaussian(np.zeros(3), np.eye(3))))
    (w / "junk.npz").write_text("not an npz\n")
    weights = load_file(SHIPPED)
    save_file({k: v * float("nan") for k, v in weights.items()}, w / "nancls.safetensors")
    (w / "nancls.json").write_text(SHIPPED.with_suffix(".json").read_text())

    config = tiny_train_data(write_latents(w / "latents"))
    (w / "train.yaml").write_text(json.dumps(config))
    (w / "strbool.yaml").write_text(json.dumps({**config, "data": {**config["data"], "hflip": "false"}}))
    (w / "list.yaml").write_text("- 1\n- 2\n")
    (w / "nomodel.yaml").write_text("train:\n  steps: 2\n")
    (w / "broken.yaml").write_text("model: [1, 2\n")
    for c in ("0", "1"):
        (w / "images" / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), color=(40 * i,) * 3).save(w / "images" / c / f"{i}.png")
    return {"w": w} | {p.name.replace(".", "_").replace("-", "_"): p for p in w.iterdir()}


SYS = "/sys/sparseguidance-out"  # root may write almost anywhere, but not in /sys
ENCODE = "encode {images} {o}/lat --vae {w}/vae"
TRAIN = "train --config {train_yaml} --out {o}/run --no-progress"
SAMPLE = "sample {model_safetensors} --num-images 2 --steps 1 --no-progress --out {o}/s.npz"
EVAL = "eval {samples_npz} --ref {ref_npz} --features mnist --no-progress --out {o}/r.json"
REF = "ref-stats {samples_npz} --features mnist --no-progress --out {o}/ref.npz"
DEMO = "demo --classes 3,7 --steps 1 --num-images 2 --threads 1 --no-progress --out {o}/d.png"
STUDY = "study --preset quick --out {o}/study --cache {o}/cache"


def sampling(checkpoint: str) -> str:
    """The SAMPLE row with another checkpoint."""
    return SAMPLE.replace("{model_safetensors}", checkpoint)


FEATURES = "train-features --epochs 1 --threads 1 --out {o}/c.safetensors"

CASES: list[tuple[str, str]] = [
    # ------------------------------------------------------------------------------------------- flops
    ("flops", "give one of --model NAME and --checkpoint PATH"),
    ("flops --model SiT-S/2 --checkpoint {model_safetensors}", "give one of --model NAME and --checkpoint PATH"),
    ("flops --model SiT-XXL/2", "invalid choice"),
    ("flops --model SiT-S/2 --input-size 0", "input_size must be a positive integer"),
    ("flops --model SiT-S/2 --input-size -8", "input_size must be a positive integer"),
    ("flops --model SiT-S/2 --input-size abc", "invalid int value"),
    ("flops --model SiT-S/2 --input-size 33", "not divisible by patch_size"),
    ("flops --model SiT-S/2 --in-channels 0", "in_channels must be a positive integer"),
    ("flops --model SiT-S/2 --steps 0", "--steps must be from 1 to 100,000"),
    ("flops --model SiT-S/2 --steps -3", "--steps must be from 1 to 100,000"),
    ("flops --model SiT-S/2 --steps 99999999999999999999", "--steps must be from 1 to 100,000"),
    ("flops --model SiT-S/2 --route 5-2", "outside the model's depth"),
    ("flops --model SiT-S/2 --route 2-99", "outside the model's depth"),
    ("flops --model SiT-S/2 --route abc", "expected START-END"),
    ("flops --model SiT-S/2 --route 1-2 --route 2-3", "must not overlap"),
    ("flops --model SiT-S/2 --decoder 8x512x0", "mask decoder needs"),
    ("flops --model SiT-S/2 --decoder 8x500x16", "width divisible by heads"),
    ("flops --model SiT-S/2 --decoder 8x512", "expected DEPTHxWIDTHxHEADS"),
    ("flops --model SiT-S/2 --route 1-2 --decoder 2x64x2", "either routed (routes) or masked"),
    ("flops --model SiT-S/2 --guidance sg --gamma-strong 1.5", "must lie in [0, 1)"),
    ("flops --model SiT-S/2 --guidance sg --gamma-strong nan", "must lie in [0, 1)"),
    ("flops --model SiT-S/2 --guidance sg --gamma-weak inf", "must lie in [0, 1)"),
    ("flops --model SiT-S/2 --guidance sg --gamma-strong 0.9 --gamma-weak 0.5", "γ_strong ≤ γ_weak"),
    ("flops --model SiT-S/2 --guidance sg --gamma-strong 0.2:x", "must be a number or start:end"),
    ("flops --model SiT-S/2 --guidance sg --gamma-strong 0.1:0.2:0.3", "must be a number or start:end"),
    ("flops --model SiT-S/2 --guidance cfg --interval 0.8:0.2", "0 ≤ t_lo ≤ t_hi ≤ 1"),
    ("flops --model SiT-S/2 --guidance cfg --interval nan:1", "guidance interval must be [a finite number"),
    ("flops --model SiT-S/2 --guidance cfg --interval 0:inf", "guidance interval must be [a finite number"),
    ("flops --model SiT-S/2 --guidance cfg --interval 0.5", "expected LO:HI"),
    ("flops --model SiT-S/2 --guidance ag --weak-model SiT-nope", "invalid choice"),
    ("flops --model SiT-S/2 --guidance bogus", "invalid choice"),
    ("flops --model SiT-S/2 --gamma-schedule cubic", "invalid choice"),
    ("flops --model SiT-S/2 --guidance ag --weak-route 9-1", "outside the model's depth"),
    # ------------------------------------------------------------------------------------------ sample
    ("sample", "required"),
    ("sample {model_safetensors}", "required: --out"),
    (SAMPLE + " --num-images 0", "expected a whole number from 1 to 10,000,000, got '0'"),
    (SAMPLE + " --num-images -5", "expected a whole number from 1"),
    (SAMPLE + " --num-images 1e9", "expected a whole number from 1"),
    (SAMPLE + " --num-images 100000000", "expected a whole number from 1 to 10,000,000"),
    (SAMPLE + " --num-images abc", "expected a whole number"),
    (SAMPLE + " --seed -1", "expected a whole number ≥ 0"),
    (SAMPLE + " --seed 1.5", "expected a whole number ≥ 0"),
    (SAMPLE + " --steps 0", "expected a whole number from 1 to 100,000"),
    (SAMPLE + " --steps -1", "expected a whole number from 1 to 100,000"),
    (SAMPLE + " --steps 99999999999999999999", "expected a whole number from 1 to 100,000"),
    (SAMPLE + " --batch-size 0", "expected a whole number ≥ 1"),
    (SAMPLE + " --shard-size 0", "expected a whole number ≥ 1"),
    (SAMPLE + " --guidance cfg --scale nan", "expected a finite number"),
    (SAMPLE + " --guidance cfg --scale inf", "expected a finite number"),
    (SAMPLE + " --guidance cfg --scale=-inf", "expected a finite number"),
    (SAMPLE + " --guidance cfg --scale abc", "expected a finite number"),
    (SAMPLE + " --classes 7", "classes must be 'all', 'random' or a list"),
    (SAMPLE + " --classes -1", "classes must be 'all', 'random' or a list"),
    (SAMPLE + " --classes 1,,2", "expected all, random or a comma list"),
    (SAMPLE + " --classes none", "expected all, random or a comma list"),
    (SAMPLE + " --guidance ag", "needs --weak-checkpoint"),
    (SAMPLE + " --guidance sg --weak-checkpoint {model_safetensors}", "does not use --weak-checkpoint"),
    (SAMPLE + " --guidance sg --gamma-strong 0.9 --gamma-weak 0.5", "γ_strong ≤ γ_weak"),
    (SAMPLE + " --guidance sg --gamma-strong 1", "must lie in [0, 1)"),
    (SAMPLE + " --guidance cfg --interval 2:3", "0 ≤ t_lo ≤ t_hi ≤ 1"),
    (SAMPLE + " --sampler rk4", "invalid choice"),
    (SAMPLE + " --which best", "invalid choice"),
    (SAMPLE + " --route 1-2", "--route applies to a .pt checkpoint"),
    (sampling("{w}/absent.safetensors"), "does not exist"),
    (sampling("{nan_safetensors}"), "blocks.0.mlp.fc1.weight holds NaN or infinite values"),
    (sampling("mnist-routing@abc"), "the part after @ is a training step"),
    (sampling("mnist-routing@123"), "has no snapshot of step 123"),
    (sampling("{junk_safetensors}"), "is missing: a .safetensors checkpoint needs its JSON"),
    (sampling("{junk_pt}"), "is corrupt, truncated or not a PyTorch checkpoint"),
    (sampling("{trunc_safetensors}"), "is corrupt or truncated"),
    (sampling("{pickle_pt}"), "is corrupt, truncated or not a PyTorch checkpoint"),
    (sampling("{pickle_zip_pt}"), "is corrupt, truncated or not a PyTorch checkpoint"),
    (sampling("{script_pt}"), "is corrupt, truncated or not a PyTorch checkpoint"),
    (sampling("{latent_safetensors}"), "give --vae PATH"),
    (sampling("{latent_safetensors}") + " --vae {w}/absent", "no such folder; give an AutoencoderKL folder or a Hub"),
    (sampling("{latent_safetensors}") + " --vae {empty}", "is not an AutoencoderKL folder (it has no config.json)"),
    (SAMPLE + " --guidance ag --weak-checkpoint {w}/absent.safetensors", "does not exist"),
    (SAMPLE.replace("s.npz", "s.jpg"), "write NAME.png (a grid), NAME.npz (ADM arrays) or a folder of PNGs"),
    (SAMPLE.replace("s.npz", "s.json"), "write NAME.png (a grid), NAME.npz (ADM arrays) or a folder of PNGs"),
    (SAMPLE.replace("s.npz", "s.PNG"), "write NAME.png (a grid), NAME.npz (ADM arrays) or a folder of PNGs"),
    (SAMPLE.replace("{o}/s.npz", "{dir_png}"), "is a folder; give a file name"),
    (SAMPLE.replace("{o}/s.npz", "{dir_npz}"), "is a folder; give a file name"),
    (SAMPLE.replace("{o}/s.npz", "{afile_txt}/s.png"), "is a file, not a folder"),
    (SAMPLE.replace("{o}/s.npz", "{afile_txt}/s.npz"), "is a file, not a folder"),
    (SAMPLE.replace("{o}/s.npz", "{afile_txt}/pngs"), "is a file, not a folder"),
    (SAMPLE.replace("{o}/s.npz", "{afile_txt}"), "write NAME.png (a grid), NAME.npz (ADM arrays) or a folder of PNGs"),
    (SAMPLE.replace("{o}/s.npz", "{blocked_shards}"), "is a file, not a folder"),  # no suffix: a folder of PNGs
    (SAMPLE.replace("{o}/s.npz", "{w}/blocked.npz"), "(its shard folder)"),
    (SAMPLE.replace("{o}/s.npz", SYS + ".png"), "cannot write in /sys"),
    (SAMPLE.replace("{o}/s.npz", SYS + ".npz"), "cannot write in /sys"),
    (SAMPLE.replace("{o}/s.npz", SYS), "cannot write in /sys"),
    (SAMPLE.replace("{o}/s.npz", "/proc/sparseguidance.npz"), "cannot write in /proc"),
    # -------------------------------------------------------------------------------------------- eval
    ("eval {samples_npz}", "required: --ref"),
    (EVAL.replace("--features mnist", "--features resnet"), "invalid choice"),
    (EVAL + " --metrics fid,bogus", "expected a comma-separated subset"),
    (EVAL + " --metrics ,", "expected a comma-separated subset"),
    (EVAL + " --batch-size 0", "batch size must be at least 1"),
    (EVAL + " --batch-size -1", "batch size must be at least 1"),
    (EVAL + " --batch-size x", "invalid int value"),
    (EVAL + " --metrics sfid", "sFID needs spatial features"),
    (EVAL.replace("{samples_npz}", "{w}/absent.npz"), "is neither an .npz file nor an image folder"),
    (EVAL.replace("{samples_npz}", "mnist5k:nope"), "unknown MNIST-5k split"),
    (EVAL.replace("{samples_npz}", "{float_npz}"), "expected uint8 images"),
    (EVAL.replace("{samples_npz}", "{badlabels_npz}"), "labels must be 12 non-negative integers"),
    (EVAL.replace("{samples_npz}", "{nolabels_npz}") + " --metrics acc", "accuracy needs the requested labels"),
    (EVAL.replace("{samples_npz}", "{empty}"), "holds no images"),
    (EVAL.replace("{samples_npz}", "{trunc_npz}"), "cannot read"),
    (EVAL.replace("{samples_npz}", "{object_npz}"), "Object arrays cannot be loaded"),
    (EVAL.replace("{ref_npz}", "{trunc_npz}"), "cannot read"),
    (EVAL.replace("{ref_npz}", "{nanref_npz}"), "hold NaN or infinite values"),
    (EVAL.replace("{ref_npz}", "{junk_npz}"), "cannot read"),
    (EVAL.replace("{ref_npz}", "{incref_npz}"), "features of different networks are not comparable"),
    (EVAL.replace("{ref_npz}", "{w}/absent.npz"), "is neither an .npz file nor an image folder"),
    (EVAL.replace("mnist", "inception") + " --weights {script_pt}", "TorchScript archive, which runs code"),
    (EVAL.replace("mnist", "inception") + " --weights {pickle_pt}", "cannot read Inception weights"),
    (EVAL.replace("mnist", "inception") + " --weights {pickle_zip_pt}", "cannot read Inception weights"),
    (EVAL.replace("mnist", "inception") + " --weights {junk_pt}", "cannot read Inception weights"),
    (EVAL.replace("mnist", "inception") + " --weights {junk_safetensors}", "cannot read Inception weights"),
    (EVAL.replace("mnist", "inception") + " --weights {w}/absent.pth", "do not exist"),
    (EVAL + " --weights {nancls_safetensors}", "holds NaN or infinite values"),
    (EVAL + " --weights {w}/absent.safetensors", "are missing"),
    (EVAL.replace("r.json", "r.txt"), "expected a .json file"),
    (EVAL.replace("{o}/r.json", "{dir_json}"), "is a folder; give a file name"),
    (EVAL.replace("{o}/r.json", "{afile_txt}/r.json"), "is a file, not a folder"),
    (EVAL.replace("{o}/r.json", SYS + ".json"), "cannot write in /sys"),
    # --------------------------------------------------------------------------------------- ref-stats
    ("ref-stats {samples_npz}", "required: --out"),
    (REF.replace("ref.npz", "ref.json"), "expected a .npz file"),
    (REF.replace("{o}/ref.npz", "{dir_npz}"), "is a folder; give a file name"),
    (REF.replace("{o}/ref.npz", "{afile_txt}/ref.npz"), "is a file, not a folder"),
    (REF.replace("{o}/ref.npz", SYS + ".npz"), "cannot write in /sys"),
    (REF.replace("{samples_npz}", "{ref_npz}"), "already holds statistics"),
    (REF.replace("{samples_npz}", "{w}/absent"), "is neither an .npz file nor an image folder"),
    (REF.replace("{samples_npz}", "mnist5k:test"), "unknown MNIST-5k split"),
    (REF.replace("{samples_npz}", "{empty}"), "holds no images"),
    (REF.replace("{samples_npz}", "{trunc_npz}"), "cannot read"),
    (REF + " --batch-size 0", "batch size must be at least 1"),
    (REF.replace("mnist", "inception") + " --weights {script_pt}", "TorchScript archive, which runs code"),
    (REF + " --weights {nancls_safetensors}", "holds NaN or infinite values"),
    # ------------------------------------------------------------------------------------------- train
    ("train", "required: --config"),
    (TRAIN.replace("{train_yaml}", "{w}/absent.yaml"), "does not exist"),
    (TRAIN.replace("{train_yaml}", "{broken_yaml}"), "not valid YAML"),
    (TRAIN.replace("{train_yaml}", "{list_yaml}"), "needs a model section"),
    (TRAIN.replace("{train_yaml}", "{nomodel_yaml}"), "needs a model section"),
    (TRAIN.replace("{train_yaml}", "{strbool_yaml}"), "data.hflip must be true or false, got 'false'"),
    (TRAIN + " --steps 0", "train.steps must be a positive integer"),
    (TRAIN + " --steps=-5", "train.steps must be a positive integer"),
    (TRAIN + " --set train.lr=nan", "train.lr must be a finite number, got nan"),
    (TRAIN + " --set train.lr=.inf", "train.lr must be a finite number, got inf"),
    (TRAIN + " --set train.lr=-1", "train.lr must be > 0"),
    (TRAIN + " --set train.lr=abc", "expected a number"),
    (TRAIN + """ --set "train.ema_warmup='false'" """, "train.ema_warmup must be true or false, got 'false'"),
    (TRAIN + " --set train.ema_warmup=1", "train.ema_warmup must be true or false"),
    (TRAIN + """ --set "data.hflip='no'" """, "data.hflip must be true or false, got 'no'"),
    (TRAIN + " --set train.batch_size=0", "train.batch_size must be a positive integer"),
    (TRAIN + " --set train.batch_size=2.5", "train.batch_size must be a whole number"),
    (TRAIN + " --set train.batch_size=true", "train.batch_size must be a whole number"),
    (TRAIN + " --set train.steps=1e3", "train.steps must be a whole number, got '1e3'"),
    (TRAIN + " --set train.betas=[0.9]", "train.betas must be [a finite number, a finite number]"),
    (TRAIN + " --set train.betas=[0.9,a]", "expected a number"),
    (TRAIN + " --set train.betas=[0.9,1.5]", "train.betas must be two numbers in [0, 1)"),
    (TRAIN + " --set train.ema_decay=1", "ema_decay in [0, 1)"),
    (TRAIN + " --set train.grad_clip=-1", "train.grad_clip must be ≥ 0"),
    (TRAIN + " --set train.warmup_steps=-1", "train.warmup_steps must be an integer ≥ 0"),
    (TRAIN + " --set train.seed=-1", "train.seed must be an integer ≥ 0"),
    (TRAIN + " --set train.seed=18446744073709551616", "train.seed must be at most 2**64 − 1"),
    (TRAIN + " --set train.lr_schedule=linear", "train.lr_schedule must be one of"),
    (TRAIN + " --set train.precision=fp8", "train.precision must be one of"),
    (TRAIN + " --set train.min_lr=1", "train.min_lr in [0, lr]"),
    (TRAIN + " --set train.init_from=5", "train.init_from must be a string"),
    (TRAIN + " --set train.init_from={w}/absent.safetensors", "does not exist"),
    (TRAIN + " --set train.init_from={nan_safetensors}", "holds NaN or infinite values"),
    (TRAIN + " --set model.depth=0", "model.depth must be a positive integer"),
    (TRAIN + " --set model.mlp_ratio=0", "model.mlp_ratio must be > 0"),
    (TRAIN + " --set model.mlp_ratio=-2", "model.mlp_ratio must be > 0"),
    (TRAIN + " --set model.mlp_ratio=.nan", "model.mlp_ratio must be a finite number"),
    (TRAIN + " --set model.hidden_size=33", "not divisible by num_heads"),
    (TRAIN + " --set model.time_scale=0", "model.time_scale must be positive"),
    (TRAIN + " --set model.time_scale=.inf", "model.time_scale must be a finite number"),
    (TRAIN + """ --set "model.learn_sigma='false'" """, "model.learn_sigma must be true or false"),
    (TRAIN + " --set model.train_gamma=1", "must lie in [0, 1)"),
    (TRAIN + " --set model.routes=[[1,5]]", "outside the model's depth"),
    (TRAIN + " --set model.routes=[[1]]", "model.routes must be a list of [a whole number, a whole number]"),
    (TRAIN + " --set model.num_classes=0", "model.num_classes must be a positive integer"),
    (TRAIN + " --set model.num_classes=5", "the data has 3 classes; the model has 5"),
    (TRAIN + " --set model.input_size=16", "the model takes (1, 16, 16)"),
    (TRAIN + " --set model.name=SiT-nope", "unknown model 'SiT-nope'"),
    (TRAIN + " --set objective.logit_std=0", "objective.logit_std must be > 0"),
    (TRAIN + " --set objective.logit_mean=.nan", "objective.logit_mean must be a finite number"),
    (TRAIN + " --set objective.label_dropout=2", "objective.label_dropout must lie in [0, 1]"),
    (TRAIN + " --set objective.mask_weight=.inf", "objective.mask_weight must be a finite number"),
    (TRAIN + " --set objective.time_sampling=beta", "objective.time_sampling must be one of"),
    (TRAIN + " --set objective.dense_fraction=-0.5", "objective.dense_fraction must lie in [0, 1]"),
    (TRAIN + " --set objective.sparse_gammas=[0.5,1]", "objective.sparse_gammas must lie in [0, 1)"),
    (TRAIN + " --set data.num_workers=-1", "data.num_workers must be from 0 to 64"),
    (TRAIN + " --set data.num_workers=100000", "data.num_workers must be from 0 to 64, got 100000"),
    (TRAIN + """ --set "data.num_workers='2'" """, "data.num_workers must be a whole number, got '2'"),
    (TRAIN + " --set data.path={w}/absent", "does not exist"),
    (TRAIN + " --set data.path={badlatents}", "cannot read latent shard"),
    (TRAIN + " --set data.source=web", "data.source must be one of"),
    (TRAIN + " --set data.split=train", "data.split applies to source mnist5k or mnist5k-captions only"),
    (TRAIN + " --set train.lrr=1", "unknown key(s) lrr"),
    (TRAIN + " --set nokey", "must look like key.path=value"),
    (TRAIN + " --set train=5", "expected a mapping"),
    (TRAIN + " --set train.lr.x=1", "lr is not a section"),
    (TRAIN.replace("{o}/run", "{afile_txt}"), "is a file, not a folder"),
    (TRAIN.replace("{o}/run", "{afile_txt}/run"), "is a file, not a folder"),
    (TRAIN.replace("{o}/run", SYS), "cannot write in /sys"),
    # ------------------------------------------------------------------------------------------ encode
    ("encode {images} {o}/lat", "required: --vae"),
    (ENCODE + " --image-size 0", "expected a whole number ≥ 8"),
    (ENCODE + " --image-size 4", "expected a whole number ≥ 8"),
    (ENCODE + " --batch-size 0", "expected a whole number ≥ 1"),
    (ENCODE + " --shard-size=-1", "expected a whole number ≥ 1"),
    (ENCODE + " --shard-size 0", "expected a whole number ≥ 1"),
    (ENCODE.replace("{w}/vae", "{w}/absent"), "no such folder; give an AutoencoderKL folder or a Hub id"),
    (ENCODE.replace("{w}/vae", "{empty}"), "is not an AutoencoderKL folder (it has no config.json)"),
    (ENCODE.replace("{w}/vae", "{afile_txt}"), "is not an AutoencoderKL folder (it has no config.json)"),
    (ENCODE.replace("{o}/lat", "{afile_txt}"), "is a file, not a folder"),
    (ENCODE.replace("{o}/lat", "{afile_txt}/lat"), "is a file, not a folder"),
    (ENCODE.replace("{o}/lat", SYS), "cannot write in /sys"),
    (ENCODE.replace("{images}", "{w}/absent"), "image folder"),
    (ENCODE.replace("{images}", "{empty}"), "has no class sub-folders"),
    # -------------------------------------------------------------------------------------------- demo
    (DEMO.replace("--num-images 2", "--num-images 1"), "num_images must be at least 2"),
    (DEMO.replace("--num-images 2", "--num-images 100000000"), "at most 10,000,000"),
    (DEMO.replace("--num-images 2", "--num-images 3") + " --per-class 2", "num_images must be at least 4"),
    (DEMO.replace("--num-images 2", "--num-images abc"), "invalid int value"),
    (DEMO + " --gamma-strong 0.9 --gamma-weak 0.5", "SG needs gamma_strong < gamma_weak"),
    (DEMO + " --device x", "unknown device 'x'"),
    (DEMO + " --precision fp64", "invalid choice"),
    (DEMO + " --compile fast", "invalid choice"),
    (DEMO + " --cfg-scale inf", "cfg_scale must be a finite number"),
    (DEMO + " --sg-scale 0.5", "ω ≥ 1"),
    (DEMO + " --gamma-weak 1", "must lie in [0, 1)"),
    (DEMO + " --gamma-strong nan", "gamma_strong must be a finite number"),
    (DEMO + " --per-class 0", "per_class must be at least 1"),
    (DEMO + " --steps 0", "steps must be at least 1"),
    (DEMO + " --steps 99999999999999999999", "steps must be from 1 to 100,000"),
    (DEMO + " --batch-size 0", "batch_size must be at least 1"),
    (DEMO + " --seed -1", "seed must be ≥ 0, got -1"),
    (DEMO + " --classes 11", "classes must be 'all', 'random' or a list"),
    (DEMO + " --classes random", "the demo shows fixed classes"),
    (DEMO + " --model mnist-nope", "'mnist-nope' is neither a file nor a shipped model; did you mean"),
    (DEMO + " --model mnist-dense", "is dense"),
    (DEMO + " --model {nan_safetensors}", "holds NaN or infinite values"),
    (DEMO + " --threads 0", "--threads must be at least 1"),
    (DEMO + " --threads 1000000", "--threads must be at most 1,024, got 1,000,000"),
    (DEMO.replace("d.png", "d.jpg"), "expected a .png file"),
    (DEMO.replace("{o}/d.png", "{dir_png}"), "is a folder; give a file name"),
    (DEMO.replace("{o}/d.png", "{afile_txt}/d.png"), "is a file, not a folder"),
    (DEMO.replace("{o}/d.png", SYS + ".png"), "cannot write in /sys"),
    (DEMO + " --json {o}/d.txt", "expected a .json file"),
    (DEMO + " --json {dir_json}", "is a folder; give a file name"),
    (DEMO + " --json {afile_txt}/d.json", "is a file, not a folder"),
    (DEMO + " --json " + SYS + ".json", "cannot write in /sys"),
    # ------------------------------------------------------------------------------------------- study
    ("study --preset huge", "invalid choice"),
    (STUDY + " --set steps=0", "steps must be a whole number ≥ 1"),
    (STUDY + " --set steps=99999999999999999999", "steps must be at most 100,000"),
    (STUDY + " --set scales=[.inf]", "scales must be a list of a finite number"),
    (STUDY + " --set scales=[]", "scales must be a non-empty list"),
    (STUDY + " --set scales=[1,a]", "scales: expected a number, got 'a'"),
    (STUDY + " --set weak_fraction=.nan", "weak_fraction must be a finite number"),
    (STUDY + " --set final_seed_sets=1", "final_seed_sets must be ≥ 2"),
    (STUDY + " --set final_images=100000000", "final_images must be at most 10,000,000"),
    (STUDY + " --set tune_images=true", "tune_images must be a whole number"),
    (STUDY + " --set sampler=rk4", "sampler must be one of"),
    (STUDY + " --set routing_sg=[0.9,0.5]", "unknown key(s) routing_sg"),  # study v2 searches the γ grid
    (STUDY + " --set heat_strong=[0.95] --set heat_weak=[0.5]", "routing γ grid needs a cell with γ_strong < γ_weak"),
    (STUDY + " --set heat_weak=[1]", "heat_weak must lie in [0, 1)"),
    (STUDY + " --set sg_scales=[0]", "sg_scales: every ω must be > 0"),
    (STUDY + " --set snapshot_seed_sets=3", "snapshot_seed_sets must be 1..final_seed_sets"),
    (STUDY + " --set bogus=1", "unknown key(s) bogus"),
    (STUDY + " --threads 0", "--threads must be at least 1"),
    (STUDY + " --threads 99999999999999999999", "--threads must be at most 1,024"),
    (STUDY + " --set device=x", "unknown device 'x'"),
    (STUDY + " --device x", "unknown device 'x'"),
    (STUDY.replace("{o}/study", "{afile_txt}"), "is a file, not a folder"),
    (STUDY.replace("{o}/study", SYS), "cannot write in /sys"),
    (STUDY.replace("{o}/cache", "{afile_txt}/cache"), "is a file, not a folder"),
    # ---------------------------------------------------------------------------------- train-features
    (FEATURES.replace("--epochs 1", "--epochs 0"), "epochs, batch_size ≥ 1"),
    (FEATURES + " --lr nan", "lr must be a finite number"),
    (FEATURES + " --lr -1", "lr > 0"),
    (FEATURES + " --batch-size 0", "epochs, batch_size ≥ 1"),
    (FEATURES + " --seed -1", "seed must be from 0 to 2**64 − 1"),
    (FEATURES + " --seed 18446744073709551616", "seed must be from 0 to 2**64 − 1"),
    (FEATURES.replace("c.safetensors", "c.pt"), "expected a .safetensors file"),
    (FEATURES.replace("{o}/c.safetensors", "{dir_safetensors}"), "is a folder; give a file name"),
    (FEATURES.replace("{o}/c.safetensors", "{afile_txt}/c.safetensors"), "is a file, not a folder"),
    (FEATURES.replace("{o}/c.safetensors", SYS + ".safetensors"), "cannot write in /sys"),
    (FEATURES.replace("{o}/c.safetensors", "{w}/sib.safetensors"), "(its JSON beside it)"),
]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with the bytes of its files: what no row may change."""
    return {str(p): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def vae(world):
    """A tiny diffusers AutoencoderKL folder at {w}/vae (for the encode rows that get past loading it)."""
    save_tiny_vae(world["w"] / "vae")
    return world["w"] / "vae"


def test_the_table_is_large_and_every_command_is_in_it():
    commands = {template.split()[0] for template, _ in CASES}
    assert len(CASES) >= 150 and commands == {
        "flops",
        "sample",
        "eval",
        "ref-stats",
        "train",
        "encode",
        "demo",
        "study",
        "train-features",
    }


@pytest.mark.parametrize(("template", "message"), CASES, ids=[template for template, _ in CASES])
def test_a_bad_input_fails_in_one_line_and_writes_nothing(template, message, world, vae, tmp_path, monkeypatch, capsys):
    def never_jit_load(*args, **kwargs):
        pytest.fail(f"torch.jit.load reached with {args[0]}")

    monkeypatch.setattr(torch.jit, "load", never_jit_load)
    out = tmp_path / "o"
    out.mkdir()
    monkeypatch.chdir(out)  # default outputs (runs/…, demo.png) land here, where the row must leave nothing
    before = snapshot(world["w"])
    names = {key: str(path) for key, path in world.items()} | {"o": str(out)}
    try:
        code = main(shlex.split(template.format(**names)))
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert message in captured.err, captured.err
    assert captured.err.startswith("sparseguidance") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not list(out.iterdir()), "created " + ", ".join(p.name for p in out.iterdir())
    assert snapshot(world["w"]) == before


def test_an_os_error_during_a_run_is_one_line_naming_the_path(monkeypatch, capsys):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", "/data/out/shard-00003.npz")

    monkeypatch.setattr("sparseguidance.cli.flops.report", disk_full)
    assert main(["flops", "--model", "SiT-S/2"]) == 2
    err = capsys.readouterr().err
    assert err == "sparseguidance flops: error: /data/out/shard-00003.npz: No space left on device\n"


def test_few_samples_give_one_warning_line_and_the_results(world, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["eval", str(world["samples_npz"]), "--ref", str(world["ref_npz"]), "--features", "mnist", "--no-progress"]
    assert main([*args, "--metrics", "fid", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "sparseguidance eval: warning: FID of 12 samples in 128 feature dimensions" in err and "Traceback" not in err
    assert all(line.startswith("sparseguidance eval: warning:") for line in err.splitlines())
    assert "fid" in json.loads(out.read_text())["metrics"]
    assert main([*args, "--metrics", "acc", "--out", str(out)]) == 0  # accuracy does not depend on a covariance
    assert "only 12 samples" not in capsys.readouterr().err


def test_an_image_too_large_to_decode_safely_is_one_line(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses images of more than twice this: 16×16 is
    args = ["eval", str(world["images"]), "--ref", str(world["ref_npz"]), "--features", "mnist", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and "decompression bomb" in err and err.count("\n") == 1
