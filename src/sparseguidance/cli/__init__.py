"""The `sparseguidance` command: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

from sparseguidance.errors import ConfigError, SparseGuidanceError

# Subcommand name -> module; each module defines `add_arguments(parser)` and `run(args) -> int`,
# and its docstring's first line is the subcommand's help.
COMMANDS: dict[str, str] = {
    "flops": "sparseguidance.cli.flops",
    "eval": "sparseguidance.cli.eval",
    "ref-stats": "sparseguidance.cli.ref_stats",
    "train-features": "sparseguidance.cli.train_features",
    "sample": "sparseguidance.cli.sample",
    "inspect": "sparseguidance.cli.inspect",
    "train": "sparseguidance.cli.train",
    "encode": "sparseguidance.cli.encode",
    "demo": "sparseguidance.cli.demo",
    "study": "sparseguidance.cli.study",
}

COMPUTING = ("eval", "ref-stats", "train-features", "sample", "train", "encode", "demo", "study")  # take --threads
# One intra-op thread: the shipped models are small, and on a busy 2-core machine two threads made a training
# step of mnist-routing 4–6× slower than one (docs/training.md, "Threads"). OMP_NUM_THREADS, when set, wins.
DEFAULT_THREADS = 1
# More than any machine has (the largest have a few hundred hardware threads); torch.set_num_threads(10**6)
# was accepted and then crashed the process at exit.
MAX_THREADS = 1024


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (the usage itself is under --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def summary(module_name: str) -> str:
    """First line of a module's docstring, read from its source without importing it (torch takes seconds)."""
    spec = importlib.util.find_spec(module_name)
    with open(spec.origin, encoding="utf-8") as f:
        return (ast.get_docstring(ast.parse(f.read())) or "").strip().splitlines()[0]


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every subcommand listed; the arguments of `chosen` (None: all) registered."""
    parser = Parser(
        prog="sparseguidance",
        description="Token-sparse diffusion transformers and Sparse Guidance.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        text = summary(module_name)
        command = sub.add_parser(name, help=text, description=text)
        if chosen in (None, name):  # only the command that runs imports its module
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(run=module.run)
            if name in COMPUTING:
                command.add_argument(
                    "--threads",
                    type=int,
                    metavar="N",
                    help=f"torch CPU threads (default: OMP_NUM_THREADS if set, else {DEFAULT_THREADS})",
                )
    return parser


def set_threads(threads: int | None) -> None:
    """Set torch's CPU threads: `threads`, else OMP_NUM_THREADS (which torch reads itself), else DEFAULT_THREADS."""
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    if threads is not None and threads > MAX_THREADS:
        raise ConfigError(f"--threads must be at most {MAX_THREADS:,}, got {threads:,}")
    if threads is None and "OMP_NUM_THREADS" in os.environ:
        return
    import torch  # here, not at the top: `sparseguidance --help` should not wait for torch

    torch.set_num_threads(threads or DEFAULT_THREADS)


OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "Out of memory")  # torch's allocation failures


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; user errors become one line on stderr and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((word for word in argv if not word.startswith("-")), "")  # the subcommand comes first
    args = build_parser(chosen).parse_args(argv)
    try:
        if args.command in COMPUTING:
            set_threads(args.threads)
        with one_line_warnings(args.command):
            return int(args.run(args) or 0)
    except SparseGuidanceError as e:
        print(f"sparseguidance {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder removed under a running job: the path and the reason
        where = f"{e.filename}: " if e.filename else ""
        print(f"sparseguidance {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:  # torch reports a failed allocation as a RuntimeError
        if not isinstance(e, MemoryError) and not any(text in str(e) for text in OUT_OF_MEMORY):
            raise  # anything else is a bug: keep its traceback
        problem = str(e).strip().splitlines()[0] if str(e).strip() else "out of memory"
        print(f"sparseguidance {args.command}: error: not enough memory ({problem[:160]})", file=sys.stderr)
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
