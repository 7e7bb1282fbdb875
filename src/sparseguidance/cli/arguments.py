"""Argument types shared by the subcommands; a malformed value is one line naming the expected form."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from sparseguidance.devices import COMPILE_MODES, PRECISIONS
from sparseguidance.errors import ConfigError
from sparseguidance.guidance import GUIDANCE_METHODS, SCHEDULE_KINDS, Guidance, make_guidance, parse_schedule
from sparseguidance.models import MaskDecoderConfig


def _numbers(text: str, separator: str, count: int, kind: type, form: str) -> list:
    try:
        parts = [kind(part) for part in text.lower().split(separator)]
    except ValueError:
        parts = []
    if len(parts) != count:
        raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}")
    return parts


def whole(least: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from `least` (to `most`), e.g. `type=whole(1)` for a count."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least or (most is not None and value > most):
            bound = f"≥ {least}" if most is None else f"from {least} to {most:,}"
            raise argparse.ArgumentTypeError(f"expected a whole number {bound}, got {text!r}")
        return value

    return parse


def finite(text: str) -> float:
    """An argparse type: a finite number (not nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def parse_route(text: str) -> tuple[int, int]:
    """`2-24` -> (2, 24): blocks 2..24, 0-based and inclusive."""
    start, end = _numbers(text, "-", 2, int, "START-END (0-based blocks, inclusive), e.g. 2-24")
    return start, end


def parse_decoder(text: str) -> MaskDecoderConfig:
    """`8x512x16` -> MaskDecoderConfig(depth=8, width=512, heads=16)."""
    depth, width, heads = _numbers(text, "x", 3, int, "DEPTHxWIDTHxHEADS, e.g. 8x512x16")
    try:
        return MaskDecoderConfig(depth, width, heads)
    except ConfigError as e:  # argparse would hide the reason of a ValueError behind "invalid value"
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_interval(text: str) -> tuple[float, float]:
    """`0.2:0.8` -> (0.2, 0.8): guide only for t in [0.2, 0.8]."""
    lo, hi = _numbers(text, ":", 2, float, "LO:HI, e.g. 0.2:0.8")
    return lo, hi


def add_guidance_arguments(parser: argparse.ArgumentParser) -> None:
    """--guidance, --gamma-strong, --gamma-weak, --gamma-schedule, --interval (read back by guidance_from_args)."""
    parser.add_argument("--guidance", choices=list(GUIDANCE_METHODS), default="none")
    parser.add_argument("--gamma-strong", metavar="G|START:END", help="γ of the strong branch")
    parser.add_argument("--gamma-weak", metavar="G|START:END", help="γ of the weak branch")
    parser.add_argument(
        "--gamma-schedule",
        choices=SCHEDULE_KINDS,
        default="constant",
        help="how START:END values move over the steps (default: linear when given START:END)",
    )
    parser.add_argument(
        "--interval",
        type=parse_interval,
        default=(0.0, 1.0),
        metavar="LO:HI",
        help="guide only for t in [LO, HI] (t = 0 noise, 1 data)",
    )


def guidance_from_args(args: argparse.Namespace, scale: float = 1.0) -> Guidance:
    """The Guidance that the arguments of add_guidance_arguments describe, at guidance scale ω = `scale`."""
    strong, weak = (
        parse_schedule(text, args.gamma_schedule, label) if text is not None else None
        for text, label in ((args.gamma_strong, "--gamma-strong"), (args.gamma_weak, "--gamma-weak"))
    )
    return make_guidance(args.guidance, scale, strong, weak, args.interval)


def add_device_arguments(parser: argparse.ArgumentParser, what: str = "the models") -> None:
    """--device, --precision, --compile and --no-tf32: where and how `what` runs (devices.use_device reads them)."""
    parser.add_argument(
        "--device", help="cpu, cuda, cuda:N or mps (default: CUDA when available, the local rank's GPU; else cpu)"
    )
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp32",
        help=f"fp32 (default), or bf16 / fp16 autocast of {what}",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="auto",
        choices=list(COMPILE_MODES),
        help=f"torch.compile {what}: auto (torch's default), dynamic (one graph for every token count) or static "
        "(one graph per shape); the first batch pays the compilation",
    )
    parser.add_argument(
        "--no-tf32", dest="tf32", action="store_false", help="full-precision float32 matmuls on CUDA (default: TF32)"
    )
