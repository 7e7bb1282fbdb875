"""The `sparseguidance` command: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

from sparseguidance.errors import SparseGuidanceError

# Subcommand name -> module; each module defines `add_arguments(parser)` and `run(args) -> int`,
# and its docstring's first line is the subcommand's help.
COMMANDS: dict[str, str] = {
    "flops": "sparseguidance.cli.flops",
    "eval": "sparseguidance.cli.eval",
    "ref-stats": "sparseguidance.cli.ref_stats",
    "train-features": "sparseguidance.cli.train_features",
    "sample": "sparseguidance.cli.sample",
    "train": "sparseguidance.cli.train",
    "encode": "sparseguidance.cli.encode",
    "demo": "sparseguidance.cli.demo",
    "study": "sparseguidance.cli.study",
}


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (the usage itself is under --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = Parser(
        prog="sparseguidance",
        description="Token-sparse diffusion transformers and Sparse Guidance.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or "").strip().splitlines()[0]
        command = sub.add_parser(name, help=summary, description=summary)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; user errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        with one_line_warnings(args.command):
            return int(args.run(args) or 0)
    except SparseGuidanceError as e:
        print(f"sparseguidance {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder removed under a running job: the path and the reason
        where = f"{e.filename}: " if e.filename else ""
        print(f"sparseguidance {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sparseguidance {args.command}: interrupted", file=sys.stderr)
        return 130


@contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Show warnings as `sparseguidance COMMAND: warning: …` lines, without the source line Python adds."""

    def show(message: Warning | str, *_: object, **__: object) -> None:
        print(f"sparseguidance {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
