"""Config loading: nested frozen dataclasses from YAML, unknown keys refused, overrides."""

from __future__ import annotations

import pytest

from sparseguidance.config import apply_overrides, from_dict, load_yaml, to_dict
from sparseguidance.errors import ConfigError
from sparseguidance.models import MaskDecoderConfig, ModelConfig


def test_nested_config_round_trip():
    data = {"depth": 6, "routes": [[1, 3]], "train_gamma": 0.5, "hidden_size": 64, "num_heads": 4}
    config = from_dict(ModelConfig, data)
    assert config.routes == ((1, 3),) and config.train_gamma == 0.5
    again = from_dict(ModelConfig, to_dict(config))
    assert again == config
    masked = from_dict(ModelConfig, {"decoder": {"depth": 2, "width": 64, "heads": 4}})
    assert masked.decoder == MaskDecoderConfig(2, 64, 4)


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) hiden_size"):
        from_dict(ModelConfig, {"hiden_size": 3})
    with pytest.raises(ConfigError, match=r"decoder: unknown key\(s\) widht"):
        from_dict(ModelConfig, {"decoder": {"widht": 3}})


def test_yaml_with_overrides(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("depth: 6\nroutes: [[1, 2]]\n")
    config = load_yaml(ModelConfig, path, ["depth=8", "routes=[[2, 5]]"])
    assert config.depth == 8 and config.routes == ((2, 5),)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(ModelConfig, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["depth"])
    path.write_text("depth: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(ModelConfig, path)
