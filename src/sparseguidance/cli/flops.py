"""FLOPs of one forward and one guided sampling step, in the paper's convention and in full.

DiT/SiT and TR-DiT names alike (`--model TR-DiT-2.5B`); a TR-DiT's count assumes `--text-tokens` prompt tokens
and leaves out the text encoder, which runs once per prompt.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from sparseguidance.checkpoints import read_checkpoint
from sparseguidance.cli.arguments import add_guidance_arguments, guidance_from_args, parse_decoder, parse_route, whole
from sparseguidance.errors import ConfigError
from sparseguidance.flops import TEXT_TOKENS, euler_step_flops, forward_flops
from sparseguidance.guidance import Guidance
from sparseguidance.models import ALL_MODEL_NAMES, AnyModelConfig, MaskDecoderConfig, TRDiTConfig, model_config
from sparseguidance.pretrained import resolve_checkpoint
from sparseguidance.sampling.sampler import MAX_STEPS

TEXT_NOTE = "the text encoder runs once per prompt and is not counted"
SHARE_NOTE = {  # what the counts assume about the dense prefix (embeddings, blocks before the first route)
    True: "counted once for branches of one model and condition (SG's two), as sampling runs it; "
    "--no-share: the paper's count",
    False: "counted in every branch (--no-share): the paper's count",
}


def add_model_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """--model / --route / --decoder (with a prefix such as `weak-` for the auxiliary model)."""
    dash = f"--{prefix}"
    parser.add_argument(
        f"{dash}model",
        choices=ALL_MODEL_NAMES,
        metavar="NAME",
        help="registry name, e.g. SiT-XL/2 or TR-DiT-2.5B" + (" (default: same as the main model)" if prefix else ""),
    )
    parser.add_argument(
        f"{dash}route",
        action="append",
        type=parse_route,
        metavar="START-END",
        help="routed blocks, 0-based and inclusive (repeatable), e.g. 2-24 (default: the model's own, if any)",
    )
    parser.add_argument(
        f"{dash}decoder",
        type=parse_decoder,
        metavar="DxWxH",
        help="masking: the decoder's depth x width x heads, e.g. 8x512x16",
    )


def build_config(
    name: str,
    routes: list[tuple[int, int]] | None,
    decoder: MaskDecoderConfig | None,
    input_size: int | None,
    in_channels: int | None,
) -> AnyModelConfig:
    """The model config that the command-line arguments describe (what they leave out: the named model's)."""
    given = {"decoder": decoder, "input_size": input_size, "in_channels": in_channels}
    overrides = {key: value for key, value in given.items() if value is not None}
    return model_config(name, **overrides, **({"routes": tuple(routes)} if routes else {}))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sparseguidance flops`."""
    add_model_arguments(parser)
    parser.add_argument("--checkpoint", metavar="PATH", help="instead of --model: the architecture of a checkpoint")
    add_model_arguments(parser, "weak-")
    parser.add_argument(
        "--input-size", type=int, help="spatial size of the (latent) input (default: the model's; 32 for DiT/SiT)"
    )
    parser.add_argument("--in-channels", type=int, help="input channels (default: the model's; 4 = SD-VAE latents)")
    parser.add_argument(
        "--text-tokens",
        type=whole(0),
        default=TEXT_TOKENS,
        help=f"TR-DiT: prompt tokens per sample, the padded length (default {TEXT_TOKENS})",
    )
    add_guidance_arguments(parser)
    parser.add_argument("--steps", type=int, default=40, help="Euler steps (default 40)")
    parser.add_argument(
        "--no-share",
        dest="share",
        action="store_false",
        help="count every branch whole, as the paper does (default: SG's two branches share their dense prefix, "
        "as `sample` runs them)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def report(
    guidance: Guidance,
    main: AnyModelConfig,
    weak: AnyModelConfig | None,
    num_steps: int,
    share: bool = True,
    text_tokens: int = TEXT_TOKENS,
) -> dict[str, Any]:
    """FLOPs summary of a guided Euler sampler: per dense forward, per step (mean) and per image, in GFLOPs."""
    if not 1 <= num_steps <= MAX_STEPS:
        raise ConfigError(f"--steps must be from 1 to {MAX_STEPS:,}, got {num_steps}")
    step = euler_step_flops(guidance, main, weak, num_steps, share, text_tokens)
    text = any(isinstance(c, TRDiTConfig) for c in (main, weak))
    return {
        "guidance": guidance.name,
        "steps": num_steps,
        "shared_prefix": share,
        **({"text_tokens": text_tokens} if text else {}),
        **step.as_dict("gflops"),
        **(step * num_steps).as_dict("gflops_per_image"),
        **forward_flops(main, text_tokens=text_tokens).as_dict("dense_forward_gflops"),
        "convention": {
            "paper": "1 per multiply-add of linear layers, attention matmuls not counted",
            "full": "2 per multiply-add, attention matmuls included",
            "shared_prefix": SHARE_NOTE[share],
            **({"text": f"connector and cross-attention on {text_tokens} prompt tokens; {TEXT_NOTE}"} if text else {}),
        },
    }


def main_config(args: argparse.Namespace) -> tuple[str, AnyModelConfig, dict[str, Any]]:
    """(label, config, what it predicts) of --model, or of --checkpoint (read off the file, --route for a .pt)."""
    if (args.model is None) == (args.checkpoint is None):
        raise ConfigError("give one of --model NAME and --checkpoint PATH")
    if args.checkpoint is None:
        return args.model, build_config(args.model, args.route, args.decoder, args.input_size, args.in_channels), {}
    stored = read_checkpoint(resolve_checkpoint(args.checkpoint), routes=args.route)
    prediction = stored.prediction.name if stored.prediction is not None else "unknown (give sample --prediction)"
    return args.checkpoint, stored.config, {"prediction": prediction}


def run(args: argparse.Namespace) -> int:
    """Print the FLOPs of the described sampling setting."""
    label, main, predicts = main_config(args)
    guidance = guidance_from_args(args)
    weak = None
    if guidance.uses_weak_model and (args.weak_model or args.model):
        weak = build_config(
            args.weak_model or args.model,
            args.weak_route or args.route,
            args.weak_decoder or args.decoder,
            args.input_size,
            args.in_channels,
        )
    elif guidance.uses_weak_model:  # the checkpoint's architecture, at its own routes or --weak-route
        weak = dataclasses.replace(main, routes=tuple(args.weak_route or main.routes))
    routes = [list(r) for r in main.routes]
    numbers = report(guidance, main, weak, args.steps, args.share, args.text_tokens)
    summary = {"model": label, "routes": routes, **predicts, **numbers}
    if weak is not None:
        summary["weak_model"] = args.weak_model or label
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{label}  sparsity={main.sparsity}  guidance={guidance.name}  steps={args.steps}")
    if predicts:
        print(f"predicts {predicts['prediction']} (FLOPs are the network's; the adapter adds elementwise work only)")
    print(f"{'':28}{'paper':>12}{'full':>12}   (GFLOPs per sample)")
    for row, key in (
        ("dense forward", "dense_forward_gflops"),
        ("per sampling step", "gflops"),
        ("per image", "gflops_per_image"),
    ):
        print(f"{row:28}{summary[key + '_paper']:12.2f}{summary[key + '_full']:12.2f}")
    print(f"shared prefix: {SHARE_NOTE[args.share]}")
    if "text_tokens" in summary:
        print(f"text: {args.text_tokens} prompt tokens per sample (--text-tokens); {TEXT_NOTE}")
    return 0
