"""Where the SD-VAE comes from: a local folder, or a Hub id where online, and one-line errors otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from sparseguidance.errors import CheckpointError
from sparseguidance.sampling.vae import load_autoencoder

diffusers = pytest.importorskip("diffusers")


class Loaded:
    """What a stubbed from_pretrained returns."""

    def to(self, device):
        return self

    def eval(self):
        return self


def test_a_hub_id_is_fetched_online(monkeypatch):
    calls = []

    def fetch(spec, **kwargs):
        calls.append((spec, kwargs))
        return Loaded()

    monkeypatch.setattr(diffusers.AutoencoderKL, "from_pretrained", fetch)
    assert isinstance(load_autoencoder("stabilityai/sd-vae-ft-ema"), Loaded)
    assert calls == [("stabilityai/sd-vae-ft-ema", {"local_files_only": False, "low_cpu_mem_usage": False})]


def test_a_hub_id_offline_is_one_line_saying_what_to_do(monkeypatch):
    def offline(spec, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.setattr(diffusers.AutoencoderKL, "from_pretrained", offline)
    with pytest.raises(CheckpointError) as error:
        load_autoencoder("stabilityai/sd-vae-ft-ema")
    message = str(error.value)
    assert "could not be fetched from the Hugging Face Hub (offline, or no such repository: We couldn't" in message
    assert "huggingface-cli download stabilityai/sd-vae-ft-ema --local-dir DIR" in message and "\n" not in message


@pytest.mark.parametrize(
    ("spec", "message"),
    [("folder", "is not an AutoencoderKL folder (it has no config.json)"), ("/no/such/vae", "no such folder")],
)
def test_neither_a_folder_nor_a_hub_id(spec, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_autoencoder(spec)


def test_an_absent_folder_taken_for_a_hub_id_fails_offline_in_one_line(tmp_path):
    """`--vae absent/vae`, no folder here, looks like a Hub id; offline its fetch is one line and exit 2 (the Hub
    client's retries, diffusers' notices and deprecation warnings held back), and nothing is written."""
    (tmp_path / "images" / "0").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(tmp_path / "images" / "0" / "a.png")
    command = [sys.executable, "-m", "sparseguidance", "encode", "images", "lat", "--vae", "absent/vae"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    expected = "sparseguidance encode: error: absent/vae is no local folder and could not be fetched from the Hugging"
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1, result.stderr
    assert "huggingface-cli download absent/vae --local-dir DIR" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]
