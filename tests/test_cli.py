"""The command line itself: lazy subcommand imports, --threads on every command that computes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import sparseguidance
from sparseguidance.cli import COMMANDS, COMPUTING, build_parser, main, summary

PACKAGE = Path(sparseguidance.__file__).resolve().parent
DOCS = Path(__file__).resolve().parents[1] / "docs"

HELP_WITHOUT_TORCH = """
import contextlib, io, sys
from sparseguidance.cli import main

with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
    main(["--help"])
print(sorted(name for name in sys.modules if name == "torch" or name.startswith("sparseguidance.cli.")))
print(out.getvalue())
"""


def test_help_lists_every_command_without_importing_them_or_torch():
    result = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH], capture_output=True, text=True, check=True)
    imported, help_text = result.stdout.split("\n", 1)
    assert imported == "[]"
    for name, module in COMMANDS.items():
        assert name in help_text and summary(module).split()[0] in help_text


def test_every_command_that_computes_takes_threads():
    parser = build_parser()
    for name in COMMANDS:
        options = parser._subparsers._group_actions[0].choices[name]._option_string_actions
        assert ("--threads" in options) == (name in COMPUTING), name


@pytest.mark.parametrize(("threads", "expected"), [(["--threads", "2"], 2), ([], 1)])
def test_threads_are_set_before_the_command_runs(threads, expected, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = []

    def train(*args, **kwargs) -> SimpleNamespace:
        seen.append(torch.get_num_threads())
        return SimpleNamespace(dist=SimpleNamespace(is_main=False))

    monkeypatch.setattr("sparseguidance.cli.train.train", train)
    config = tmp_path / "c.yaml"
    config.write_text("model: {name: DiT-S/2}")
    try:
        assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), *threads]) == 0
    finally:
        torch.set_num_threads(1)
    assert seen == [expected]


def test_threads_below_one_are_a_one_line_error(capsys):
    assert main(["train", "--config", "none.yaml", "--threads", "0"]) == 2
    assert capsys.readouterr().err == "sparseguidance train: error: --threads must be at least 1, got 0\n"


@pytest.mark.parametrize("command", ["train-features", "study"])
def test_default_outputs_are_neither_in_the_package_nor_in_the_committed_docs(command, monkeypatch):
    monkeypatch.chdir(DOCS.parent)  # relative defaults resolve against the repository, where docs/ is
    out = build_parser(command).parse_args([command]).out.resolve()
    assert not out.is_relative_to(PACKAGE) and not out.is_relative_to(DOCS)


def test_a_failed_allocation_is_one_line_and_other_runtime_errors_keep_their_traceback(monkeypatch, capsys):
    def allocate(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: 4 TB")

    monkeypatch.setattr("sparseguidance.cli.flops.run", allocate)
    assert main(["flops", "--model", "SiT-S/2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparseguidance flops: error: not enough memory (") and len(err.splitlines()) == 1

    def bug(args):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr("sparseguidance.cli.flops.run", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        main(["flops", "--model", "SiT-S/2"])
