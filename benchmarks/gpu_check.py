"""One prepared GPU check: SiT-XL/2 with route 2→24, random weights, bf16 autocast, batch 64 (≤ 8 min, no download).

    python benchmarks/gpu_check.py [--batch 64] [--steps 40] [--repeats 5] [--no-compile] [--out PATH]
    python benchmarks/gpu_check.py --tiny      # a small model on the CPU in seconds: checks that it all runs

Answers, each measured side by side in one run (interleaved repeats, medians, CUDA synchronised):
- forward: dense vs routed at γ 0.5 and 0.9, speedup beside the FLOPs ratio (paper convention);
- sampling: images/s of none, CFG, SG_FLOPS (0.5/0.9) with the shared prefix and without, and CFG+SG, with
  `--steps` Euler steps through `sampling.generate` (per-step time too), beside the FLOPs ratios against CFG;
- training: images/s of a training step (flow matching, backward, clipping, fused AdamW) dense vs routed at
  γ 0.5, beside the FLOPs ratio;
- peak memory of each part; whether `torch.compile` helps SG sampling, and which mode (auto, dynamic, static),
  with the first (compiling) run's time apart.
Writes benchmarks/results/gpu.json (after every part, so a run cut short keeps what it measured) with the
machine, torch, CUDA and commit. Nothing timed is asserted anywhere.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from common import GUIDED, SCALE, SG, against_cfg, guided_gflops, interleaved_medians, random_weights

from sparseguidance.devices import autocast, compile_model, use_device
from sparseguidance.errors import ConfigError
from sparseguidance.flops import forward_flops
from sparseguidance.models import DiT, ModelConfig, create_model, model_config
from sparseguidance.provenance import provenance, write_json
from sparseguidance.sampling import generate
from sparseguidance.training.objective import ObjectiveConfig, flow_matching_loss

RESULTS = Path(__file__).parent / "results" / "gpu.json"
FULL = model_config("SiT-XL/2", routes=((2, 24),), train_gamma=0.5, learn_sigma=False)
COMPILE_BY_S = 300  # no compile mode starts after this many seconds: compiling one takes a minute or two
TINY = ModelConfig(
    input_size=8, in_channels=4, patch_size=2, hidden_size=64, depth=6, num_heads=4, routes=((1, 4),), train_gamma=0.5
)


class Check:
    """The model, its inputs and the device, plus a synchronised timer and the results written so far."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.started, self.device = args, time.perf_counter(), device
        self.config = TINY if args.tiny else FULL
        self.model: DiT = random_weights(create_model(self.config)).to(self.device).eval()
        generator = torch.Generator().manual_seed(0)
        c = self.config
        self.x = torch.randn(args.batch, c.in_channels, c.input_size, c.input_size, generator=generator).to(self.device)
        self.t = torch.rand(args.batch, generator=generator).to(self.device)
        self.y = torch.randint(0, c.num_classes, (args.batch,), generator=generator).to(self.device)
        self.results: dict[str, Any] = {
            **provenance(),
            **device_info(self.device),
            "mode": "tiny (CPU smoke test: the figures mean nothing)" if args.tiny else "full",
            "model": "tiny (6 blocks, width 64, route 1→4)" if args.tiny else "SiT-XL/2",
            "route": [list(r) for r in self.config.routes],
            "input": [c.in_channels, c.input_size, c.input_size],
            "batch": args.batch,
            "precision": args.precision,
            "repeats": args.repeats,
        }

    def timed(self, fn: Callable[[], Any]) -> Callable[[], float]:
        """A run of `fn` that returns its wall time, the device synchronised before and after."""

        def run() -> float:
            synchronize(self.device)
            start = time.perf_counter()
            fn()
            synchronize(self.device)
            return time.perf_counter() - start

        return run

    def peak(self, part: str) -> None:
        """Record the peak memory since the last part (CUDA only), and reset it."""
        if self.device.type == "cuda":
            self.results.setdefault("peak_memory_gib", {})[part] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()

    def save(self) -> None:
        """Write what has been measured so far."""
        self.results["elapsed_s"] = time.perf_counter() - self.started
        write_json(self.args.out, self.results)


def device_info(device: torch.device) -> dict[str, Any]:
    """The accelerator: name, capability, memory, CUDA version (empty on the CPU)."""
    if device.type != "cuda":
        return {"device": str(device)}
    props = torch.cuda.get_device_properties(device)
    return {
        "device": str(device),
        "gpu": props.name,
        "capability": f"{props.major}.{props.minor}",
        "gpu_memory_gib": props.total_memory / 2**30,
        "cuda": torch.version.cuda,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_part(check: Check) -> None:
    """Dense vs routed forward at γ 0.5 and 0.9, beside the FLOPs ratio."""
    model, args = check.model, check.args
    generator = torch.Generator(check.device).manual_seed(0)

    def forward(gamma: float) -> None:
        with torch.inference_mode(), autocast(check.device, args.precision):
            model(check.x, check.t, check.y, gamma=gamma, generator=generator)

    gammas = (0.0, SG.gamma_strong.start, SG.gamma_weak.start)
    medians = interleaved_medians({g: check.timed(partial(forward, g)) for g in gammas}, args.repeats)
    dense_flops = forward_flops(check.config).paper
    rows = []
    for gamma in gammas:
        speedup, ratio = medians[0.0] / medians[gamma], dense_flops / forward_flops(check.config, gamma).paper
        rows.append(
            {
                "gamma": gamma,
                "ms": 1000 * medians[gamma],
                "images_per_s": args.batch / medians[gamma],
                "speedup": speedup,
                "flops_ratio": ratio,
                "speedup_over_flops_ratio": speedup / ratio,
            }
        )
        print(f"forward γ={gamma:<4} {rows[-1]['ms']:8.2f} ms  speedup {speedup:.3f}  FLOPs ratio {ratio:.3f}")
    check.results["forward"] = rows
    check.peak("forward")


def sample_seconds(check: Check, model: DiT, name: str) -> float:
    """Seconds of one batch of `--steps` Euler steps of a method (generate synchronises: it copies to the CPU)."""
    guidance, share = GUIDED[name]
    options = dict(steps=check.args.steps, batch_size=check.args.batch, share=share, precision=check.args.precision)
    return generate(guidance, {"main": model}, check.y.cpu() % 1000, **options).seconds


def sampling_part(check: Check) -> None:
    """Images/s of every method, beside its FLOPs ratio against CFG."""
    args = check.args
    medians = interleaved_medians({n: partial(sample_seconds, check, check.model, n) for n in GUIDED}, args.repeats)
    gflops = guided_gflops(check.config, args.steps)
    rows = []
    for name in GUIDED:
        extra = {"ms_per_step": 1000 * medians[name] / args.steps, "gflops_per_step": gflops[name]}
        rows.append({**against_cfg(name, medians, gflops, args.batch), **extra})
        r = rows[-1]
        print(
            f"sampling {name:12} {r['images_per_s']:8.2f} img/s  speedup vs CFG {r['speedup_vs_cfg']:.3f}  "
            f"FLOPs ratio {r['flops_ratio_vs_cfg']:.3f}"
        )
    check.results["sampling"] = {
        "steps": args.steps,
        "scale": SCALE,
        "gammas": [SG.gamma_strong.start, SG.gamma_weak.start],
        "rows": rows,
    }
    check.peak("sampling")


def training_part(check: Check) -> None:
    """Training step images/s, dense vs routed at γ 0.5 (the same weights; γ 0 is the dense forward)."""
    args, model = check.args, check.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=check.device.type == "cuda")
    generator = torch.Generator(check.device).manual_seed(0)
    configs = {"dense": dataclasses.replace(check.config, train_gamma=0.0), "routed": check.config}

    def step(config: ModelConfig) -> None:
        with autocast(check.device, args.precision):
            loss = flow_matching_loss(model, config, check.x, check.y, ObjectiveConfig(), generator)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    medians = interleaved_medians({n: check.timed(partial(step, c)) for n, c in configs.items()}, args.repeats)
    ratio = forward_flops(check.config).paper / forward_flops(check.config, check.config.train_gamma).paper
    speedup = medians["dense"] / medians["routed"]
    check.results["training"] = {
        "gamma": check.config.train_gamma,
        "step": "flow-matching loss, backward, clip, AdamW (fused on CUDA); no EMA, no data loading",
        "dense_images_per_s": args.batch / medians["dense"],
        "routed_images_per_s": args.batch / medians["routed"],
        "speedup": speedup,
        "flops_ratio": ratio,
        "speedup_over_flops_ratio": speedup / ratio,
    }
    print(f"training dense {args.batch / medians['dense']:.1f} img/s, routed {args.batch / medians['routed']:.1f}")
    print(f"training speedup {speedup:.3f}  FLOPs ratio {ratio:.3f}")
    model.eval()
    check.peak("training")


def compile_part(check: Check) -> None:
    """SG sampling eager vs compiled (auto, dynamic, static): first-run (compiling) time and steady images/s."""
    args = check.args
    backend = "eager" if args.tiny else "inductor"  # the CPU smoke test checks the tracing, not the code generation
    models = {"eager": check.model}
    first: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for mode in ("auto", "dynamic", "static"):
        if time.perf_counter() - check.started > COMPILE_BY_S:
            skipped[mode] = f"not run: {COMPILE_BY_S} s had passed (the check must end within 8 minutes)"
            continue
        torch._dynamo.reset()  # each mode compiles from scratch
        try:
            model = compile_model(copy.deepcopy(check.model), mode, backend)
            first[mode] = sample_seconds(check, model, "sg")
        except Exception as e:  # a compiler failure is a finding to record, not a reason to lose the run
            skipped[mode] = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            continue
        models[mode] = model
        print(f"compile {mode}: first run (compiling) {first[mode]:.1f} s")
    runs = {mode: partial(sample_seconds, check, model, "sg") for mode, model in models.items()}
    medians = interleaved_medians(runs, max(1, args.repeats // 2))
    check.results["compile"] = {
        "backend": backend,
        "method": "sg",
        "rows": [
            {
                "mode": mode,
                "images_per_s": args.batch / medians[mode],
                "speedup_vs_eager": medians["eager"] / medians[mode],
                "first_run_s": first.get(mode),
            }
            for mode in models
        ],
        "skipped": skipped,
    }
    for row in check.results["compile"]["rows"]:
        print(f"compile {row['mode']:8} {row['images_per_s']:8.2f} img/s  speedup {row['speedup_vs_eager']:.3f}")
    check.peak("compile")


def targets(results: dict[str, Any]) -> dict[str, bool]:
    """The issue's GPU targets, from what was measured."""
    found: dict[str, bool] = {}
    if "forward" in results:
        half = next(r for r in results["forward"] if r["gamma"] == 0.5)
        found["routed_forward_speedup_ge_0.9_flops_ratio_at_0.5"] = half["speedup_over_flops_ratio"] >= 0.9
    if "sampling" in results:
        sg = next(r for r in results["sampling"]["rows"] if r["method"] == "sg")
        found["sg_speedup_vs_cfg_ge_0.9_flops_ratio"] = sg["speedup_vs_cfg"] >= 0.9 * sg["flops_ratio_vs_cfg"]
    return found


def main() -> None:
    """Run every part in turn, writing the results file after each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a small model on the CPU: a smoke test in seconds")
    parser.add_argument("--device", help="default: CUDA when available")
    parser.add_argument("--batch", type=int, help="default 64 (tiny: 2)")
    parser.add_argument("--steps", type=int, help="Euler steps per sampling run (default 40; tiny: 2)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats per part (default 5; tiny: 1)")
    parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile part")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    small = {"batch": 2, "steps": 2, "repeats": 1} if args.tiny else {"batch": 64, "steps": 40, "repeats": 5}
    for name, value in small.items():
        setattr(args, name, getattr(args, name) or value)

    try:
        device = use_device("cpu" if args.tiny else args.device)  # TF32 on for what autocast leaves in fp32
    except ConfigError as e:
        parser.error(str(e))
    if device.type == "cpu" and not args.tiny:
        parser.error("no GPU here: the full check runs SiT-XL/2 on CUDA (--tiny runs a small model on the CPU)")
    check = Check(args, device)
    parts = [forward_part, sampling_part, training_part, *([compile_part] if args.compile else [])]
    for part in parts:
        part(check)
        check.results["targets"] = targets(check.results)
        check.save()
    print(f"wrote {args.out} in {time.perf_counter() - check.started:.0f} s")


if __name__ == "__main__":
    main()
