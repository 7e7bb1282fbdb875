"""Sample images with a guidance method: a PNG grid, per-image PNGs, or a resumable sharded ADM npz."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from sparseguidance.checkpoints import Loaded, open_checkpoint
from sparseguidance.cli.arguments import (
    add_device_arguments,
    add_guidance_arguments,
    finite,
    guidance_from_args,
    parse_route,
    whole,
)
from sparseguidance.conditions import Condition
from sparseguidance.data import IMAGE_SUFFIXES
from sparseguidance.devices import compile_model, use_device
from sparseguidance.errors import ConfigError
from sparseguidance.files import atomic_write, check_output_file, check_output_folder
from sparseguidance.guidance import Guidance
from sparseguidance.images import to_uint8
from sparseguidance.locks import hold
from sparseguidance.models.prediction import PREDICTIONS, unwrap
from sparseguidance.pretrained import resolve_checkpoint
from sparseguidance.sampling.outputs import (
    check_manifest,
    merge_shards,
    rank_shards,
    save_grid,
    save_pngs,
    shard_folder,
    shard_path,
    shard_range,
    write_shard,
)
from sparseguidance.sampling.sampler import (
    CLASS_CHOICES,
    INTEGRATORS,
    MAX_IMAGES,
    MAX_STEPS,
    Cost,
    class_labels,
    generate,
)
from sparseguidance.text import prompt_conditions, read_prompt_file, stored_text_config

PIXEL_CHANNELS = (1, 3)  # models with other channel counts sample SD-VAE latents, decoded with --vae


def parse_classes(text: str) -> list[int] | str:
    """`all`, `random`, or a comma list such as `1,207,360`."""
    if text in CLASS_CHOICES:
        return text
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected all, random or a comma list of classes, got {text!r}") from None


def output_path(text: str) -> Path:
    """--out: NAME.png (a grid), NAME.npz, or a folder; a path with another suffix (x.jpg) is refused."""
    path = Path(text)
    if path.suffix not in ("", ".png", ".npz") and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r}: write NAME.png (a grid), NAME.npz (ADM arrays) or a folder of PNGs (a name without a suffix)"
        )
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sparseguidance sample`."""
    parser.add_argument(
        "checkpoint",
        help="our .safetensors (+ .json), a released DiT/SiT/TREAD .pt, or a shipped model (mnist-routing[@STEP])",
    )
    parser.add_argument(
        "--out", required=True, type=output_path, metavar="PATH", help="NAME.png: a grid; NAME.npz: ADM npz; DIR: PNGs"
    )
    parser.add_argument("--which", choices=("ema", "model"), default="ema", help="weights of a .pt (default ema)")
    parser.add_argument("--route", action="append", type=parse_route, metavar="START-END", help="routes for a .pt")
    parser.add_argument("--train-gamma", type=float, metavar="G", help="a .pt's training selection ratio (routing)")
    parser.add_argument(
        "--prediction",
        choices=list(PREDICTIONS),
        help="what the checkpoints' networks predict where a file cannot tell (default: read off the file or name)",
    )
    add_guidance_arguments(parser)
    parser.add_argument(
        "--scale", type=finite, default=1.5, metavar="Ω", help="guidance scale ω; 1 = strong branch alone"
    )
    parser.add_argument(
        "--weak-checkpoint",
        metavar="PATH",
        help="the auxiliary model of ag and ag+sg (e.g. an early checkpoint, mnist-routing@1000)",
    )
    parser.add_argument("--weak-route", action="append", type=parse_route, metavar="START-END", help="its routes")
    parser.add_argument(
        "--classes",
        type=parse_classes,
        default="random",
        metavar="LIST|all|random",
        help="all, random (default) or 1,2,3",
    )
    parser.add_argument(
        "--prompt", action="append", metavar="TEXT", help="a text-to-image model's prompt (repeat for several)"
    )
    parser.add_argument("--prompt-file", type=Path, metavar="FILE", help="prompts, one a line; image k gets k mod P")
    parser.add_argument(
        "--text-encoder",
        metavar="DIR",
        help="a text model's encoder folder (default: the one its checkpoint names, else all-MiniLM-L6-v2)",
    )
    # --num-images, not --num: torchrun would take --num as an ambiguous abbreviation of its own --numa-binding
    parser.add_argument("--num-images", type=whole(1, MAX_IMAGES), default=16, help="number of images (default 16)")
    parser.add_argument("--seed", type=whole(0), default=0, help="image k depends only on (seed, k) (default 0)")
    parser.add_argument("--steps", type=whole(1, MAX_STEPS), default=40, help="sampling steps (default 40)")
    parser.add_argument("--sampler", choices=list(INTEGRATORS), default="euler", help="integrator (default euler)")
    parser.add_argument("--batch-size", type=whole(1), default=32, help="images per batch; does not change them")
    parser.add_argument("--shard-size", type=whole(1), default=1000, help="images per npz shard (default 1000)")
    parser.add_argument(
        "--vae",
        metavar="DIR|OWNER/NAME",
        help="decode latents: a diffusers AutoencoderKL folder, or a Hub id where online (stabilityai/sd-vae-ft-ema)",
    )
    add_device_arguments(parser)
    parser.add_argument(
        "--no-share",
        dest="share",
        action="store_false",
        help="run every branch whole (default: SG's branches share their dense prefix; the images are the same)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")


def load(
    path: str,
    routes: list[tuple[int, int]] | None,
    which: str,
    device: str,
    prediction: str | None = None,
    train_gamma: float | None = None,
) -> nn.Module:
    """A checkpoint as a velocity model (routes, training γ and prediction for a .pt); says what it predicts."""
    loaded = open_checkpoint(path, device, which, prediction=prediction, routes=routes, train_gamma=train_gamma)
    print(predicts(path, loaded), file=sys.stderr)
    return loaded.model


def predicts(path: str, loaded: Loaded) -> str:
    """`PATH: predicts velocity (…); stored in its JSON`: what sample and inspect say of each checkpoint."""
    return f"{path}: predicts {loaded.describe()}"


def check_routed(role: str, model: nn.Module, guidance: Guidance, path: str) -> None:
    """Raise ConfigError, naming --route, when guidance runs a dense .pt model at a sparse γ."""
    branches = [b for b in (guidance.strong, guidance.weak) if b is not None and b.model == role]
    gammas = [g for b in branches for g in (b.gamma.start, b.gamma.end)]
    if any(gammas) and model.config.sparsity == "dense" and Path(path).suffix != ".safetensors":
        raise ConfigError(
            f"guidance {guidance.name!r} runs the {role} model at a sparse γ, but {path} stores no routes (TREAD "
            "keeps them in its Hydra config, e.g. 2-8 at 0.5 for DiT-B/2): give --route START-END and --train-gamma"
        )


def load_models(args: argparse.Namespace, guidance: Guidance, device: str) -> tuple[dict[str, nn.Module], list[str]]:
    """{"main": …} plus {"weak": …} for ag and ag+sg, and a line for each saying what it predicts.

    The caller prints those lines once every input is checked, so that a bad input is one line on stderr.
    """
    if guidance.uses_weak_model != (args.weak_checkpoint is not None):
        need = "needs" if guidance.uses_weak_model else "does not use"
        raise ConfigError(f"guidance {guidance.name!r} {need} --weak-checkpoint")
    paths = {  # --prediction is for both checkpoints, --train-gamma (metadata) for the main one
        "main": (args.checkpoint, args.route, args.train_gamma),
        "weak": (args.weak_checkpoint, args.weak_route, None),
    }
    models, notes = {}, []
    for role, (path, routes, train_gamma) in paths.items():
        if path is not None:
            loaded = open_checkpoint(
                path, device, args.which, prediction=args.prediction, routes=routes, train_gamma=train_gamma
            )
            check_routed(role, loaded.model, guidance, path)
            models[role] = loaded.model
            notes.append(predicts(path, loaded))
    return models, notes


def distributed() -> tuple[int, int]:
    """(rank, world size): under torchrun one process group, used only for the barrier before the merge."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world


def settings(args: argparse.Namespace, guidance: Guidance) -> dict[str, Any]:
    """Everything that decides the images (not batch size or device), to keep shards of different runs apart."""
    return {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "weak_checkpoint": str(Path(args.weak_checkpoint).resolve()) if args.weak_checkpoint else None,
        "which": args.which,
        "routes": args.route,
        "weak_routes": args.weak_route,
        "guidance": {"name": guidance.name, **dataclasses.asdict(guidance)},
        "classes": args.classes,
        **({"prompts": args.prompts} if args.prompts else {}),  # only when given: earlier shard folders still resume
        "num_images": args.num_images,
        "seed": args.seed,
        "steps": args.steps,
        "sampler": args.sampler,
        "precision": args.precision,
        "shard_size": args.shard_size,
        "vae": args.vae,
        # recorded only when given, so that shard folders of earlier versions still resume
        **{k: v for k, v in (("train_gamma", args.train_gamma), ("prediction", args.prediction)) if v is not None},
    }


def conditions(args: argparse.Namespace, config: Any, device: str) -> tuple[Condition, torch.Tensor]:
    """Each image's condition and its id in the outputs: class labels (both), or prompts and their line numbers."""
    ids = torch.arange(args.num_images)
    text_model = getattr(config, "text_width", None) is not None
    if not text_model:
        if args.prompts or args.text_encoder:
            raise ConfigError("--prompt, --prompt-file and --text-encoder are for text-to-image models; use --classes")
        labels = class_labels(args.classes, ids, config.num_classes, args.seed)
        return labels, labels
    if not args.prompts:
        raise ConfigError(f"{args.checkpoint} is a text-to-image model: give --prompt TEXT or --prompt-file FILE")
    text = stored_text_config(args.checkpoint, args.text_encoder)
    prompts = prompt_conditions(args.prompts, args.num_images, text, device)
    if prompts.width != config.text_width:
        raise ConfigError(
            f"the text encoder {text.describe()} gives states of width {prompts.width}; the model takes "
            f"{config.text_width}: give the encoder it was trained with (--text-encoder DIR)"
        )
    return prompts, ids % len(args.prompts)


def check_out(out: Path) -> None:
    """Raise ConfigError unless --out can take a PNG grid (.png), an npz and its shard folder, or image files."""
    if out.suffix == ".npz":
        check_output_file(out, (".npz",))
        check_output_folder(shard_folder(out), "--out (its shard folder)")
    elif out.suffix.lower() in (*IMAGE_SUFFIXES, ".json", ".pt", ".safetensors"):
        check_output_file(out, (".png",))  # a grid is a PNG; a folder of images has no file suffix
    else:
        check_output_folder(out)


def run(args: argparse.Namespace) -> int:
    """Sample, write the output, print a summary."""
    check_out(args.out)
    args.prompts = [*(args.prompt or []), *(read_prompt_file(args.prompt_file) if args.prompt_file else [])]
    if any(not p.strip() for p in args.prompts):
        raise ConfigError("--prompt: an empty prompt; the empty prompt is CFG's unconditional branch, not an image's")
    rank, world = distributed()
    device = str(use_device(args.device, args.tf32))
    guidance = guidance_from_args(args, args.scale)
    args.checkpoint = str(resolve_checkpoint(args.checkpoint))  # a shipped name becomes its file
    if args.weak_checkpoint is not None:
        args.weak_checkpoint = str(resolve_checkpoint(args.weak_checkpoint))
    models, notes = load_models(args, guidance, device)
    if args.compile is not None:
        for model in models.values():
            compile_model(model, args.compile)
    config = models["main"].config
    decode = None
    if config.in_channels not in PIXEL_CHANNELS:
        if args.vae is None:
            raise ConfigError(f"the model samples {config.in_channels}-channel latents: give --vae PATH to decode")
        from sparseguidance.sampling.vae import load_vae  # diffusers is an optional extra

        decode = load_vae(args.vae, device)
    labels, ids = conditions(args, config, device)
    for note in notes:
        print(note, file=sys.stderr)
    options = dict(seed=args.seed, steps=args.steps, sampler=args.sampler, batch_size=args.batch_size, decode=decode)
    options |= dict(share=args.share, precision=args.precision)
    progress = not args.no_progress and rank == 0
    start = time.perf_counter()
    if args.out.suffix == ".npz":
        folder = shard_folder(args.out)  # rank 0 holds its lock: a second job on the same --out refuses
        with hold(folder, f"shard set {folder}") if rank == 0 else nullcontext():
            count, cost = sample_shards(args, guidance, models, labels, ids, options, rank, world, progress)
    else:
        if world > 1:
            raise ConfigError("under torchrun write an .npz (sharded); PNG outputs are for one process")
        samples = generate(guidance, models, labels, progress=progress, **options)
        images = to_uint8(samples.images)
        if args.out.suffix == ".png":
            save_grid(args.out, images)
        else:
            save_pngs(args.out, images, ids.numpy(), samples.indices.numpy())
            if args.prompts:  # file names carry the prompt's line number in this list
                atomic_write(args.out / "prompts.txt", lambda tmp: Path(tmp).write_text("\n".join(args.prompts) + "\n"))
        count, cost = args.num_images, samples.cost
    if rank == 0:
        report(args, guidance, models, count, cost, time.perf_counter() - start)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def sample_shards(
    args: argparse.Namespace,
    guidance: Guidance,
    models: dict[str, nn.Module],
    labels: Condition,
    ids: torch.Tensor,
    options: dict[str, Any],
    rank: int,
    world: int,
    progress: bool,
) -> tuple[int, Cost | None]:
    """Write this rank's unfinished shards, then (rank 0, after every rank) merge them into --out."""
    folder = shard_folder(args.out)
    check_manifest(folder, settings(args, guidance))
    todo = [
        s for s in rank_shards(args.num_images, args.shard_size, rank, world) if not shard_path(folder, s).is_file()
    ]
    ranges = [shard_range(s, args.num_images, args.shard_size) for s in todo]
    count, cost = 0, None
    with tqdm(total=sum(map(len, ranges)), unit="img", disable=not progress) as bar:
        for shard, indices in zip(todo, ranges, strict=True):
            samples = generate(
                guidance, models, labels[indices.start : indices.stop], indices=indices, progress=bar, **options
            )
            shard_ids = ids[indices.start : indices.stop].numpy()
            write_shard(folder, shard, to_uint8(samples.images), shard_ids, samples.indices.numpy())
            count, cost = count + len(indices), samples.cost  # every image takes the same forwards
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        merge_shards(folder, args.num_images, args.shard_size, args.out)
    return count, cost


def report(
    args: argparse.Namespace,
    guidance: Guidance,
    models: dict[str, nn.Module],
    count: int,
    cost: Cost | None,
    seconds: float,
) -> None:
    """Print the summary: JSON with --json, one line otherwise."""
    predictions = {role: unwrap(model)[1] for role, model in models.items()}
    summary = {
        "out": str(args.out),
        "guidance": guidance.name,
        "prediction": {role: {"name": p.name, **dataclasses.asdict(p)} for role, p in predictions.items()},
        "sampler": args.sampler,
        "steps": args.steps,
        "total": args.num_images,
        "count": count,  # sampled by this run (rank 0's share under torchrun); finished shards are skipped
        **(cost.as_dict() if cost is not None else {}),
        "wall_s": seconds,
        "images_per_s": count / seconds if seconds > 0 else None,
    }
    if args.json:
        print(json.dumps(summary))
        return
    line = f"wrote {args.out}: sampled {count} of {args.num_images} images in {seconds:.1f} s"
    if cost is not None:
        line += f", NFE {cost.nfe:g}, {cost.flops.paper / 1e9:.2f} GFLOPs/image (paper convention)"
    print(line)
