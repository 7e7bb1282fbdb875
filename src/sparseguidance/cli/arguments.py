"""Argument types shared by the subcommands; a malformed value is one line naming the expected form."""

from __future__ import annotations

import argparse

from sparseguidance.models import MaskDecoderConfig


def _numbers(text: str, separator: str, count: int, kind: type, form: str) -> list:
    try:
        parts = [kind(part) for part in text.lower().split(separator)]
    except ValueError:
        parts = []
    if len(parts) != count:
        raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}")
    return parts


def parse_route(text: str) -> tuple[int, int]:
    """`2-24` -> (2, 24): blocks 2..24, 0-based and inclusive."""
    start, end = _numbers(text, "-", 2, int, "START-END (0-based blocks, inclusive), e.g. 2-24")
    return start, end


def parse_decoder(text: str) -> MaskDecoderConfig:
    """`8x512x16` -> MaskDecoderConfig(depth=8, width=512, heads=16)."""
    depth, width, heads = _numbers(text, "x", 3, int, "DEPTHxWIDTHxHEADS, e.g. 8x512x16")
    return MaskDecoderConfig(depth, width, heads)


def parse_interval(text: str) -> tuple[float, float]:
    """`0.2:0.8` -> (0.2, 0.8): guide only for t in [0.2, 0.8]."""
    lo, hi = _numbers(text, ":", 2, float, "LO:HI, e.g. 0.2:0.8")
    return lo, hi
