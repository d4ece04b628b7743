"""pipeline.core.config: YAML sections and overrides into checked dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.core.config import ConfigError, from_dict, load_config, to_dict


@dataclass
class Example:
    rate: float = 0.1
    layers: int = 2
    name: str = "x"
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    folder: Path | None = None
    extra: list[str] = field(default_factory=list)


def test_defaults_file_section_and_overrides(tmp_path):
    assert load_config(Example) == Example()
    path = tmp_path / "conf.yaml"
    path.write_text("other: {a: 1}\nexample:\n  rate: 1.0e-3\n  layers: 4\n  sizes: [3, 4]\n")
    config = load_config(
        Example, path, ["name=big", "flag=true", "rate=1e-4", "folder=/data"], section="example"
    )
    assert config == Example(rate=1e-4, layers=4, name="big", flag=True, sizes=(3, 4), folder=Path("/data"))
    assert to_dict(config)["sizes"] == [3, 4] and to_dict(config)["folder"] == "/data"
    flat = tmp_path / "flat.yaml"
    flat.write_text("layers: 6\n")
    assert load_config(Example, flat, section="example").layers == 6  # no such section: the whole file


@pytest.mark.parametrize(
    "override, message",
    [("layers=2.5", "layers must be an integer"), ("flag=maybe", "flag must be true or false"),
     ("rate=fast", "rate must be a number"), ("sizes=3", "sizes must be a list"),
     ("nope=1", r"unknown Example key\(s\) nope; valid keys: extra, flag"), ("layers", "is not key=value")],
)  # fmt: skip
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Example, None, [override])


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(Example, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(Example, bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="scalar.yaml: expected a mapping"):
        load_config(Example, scalar)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("layers: many\n")
    with pytest.raises(ConfigError, match="wrong.yaml: layers must be an integer"):
        load_config(Example, wrong)


def test_from_dict_runs_the_dataclass_checks():
    from pipeline.frontends.fbank import FbankConfig

    with pytest.raises(ConfigError, match="window must be one of"):
        from_dict(FbankConfig, {"window": "kaiser"})


def test_an_experiment_config_without_an_augment_block_keeps_its_defaults(tmp_path):
    from pipeline.training.experiment import load_experiment_config

    path = tmp_path / "student.yaml"
    path.write_text("train:\n  epochs: 3\nstudent:\n  d_model: 64\n  num_heads: 4\n  num_layers: 1\n")
    config = load_experiment_config(path)
    assert config.train.epochs == 3
    assert config.student.d_model == 64
    assert config.augment.noise_prob == 0.0
