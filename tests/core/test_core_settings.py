"""core.settings: a setting declared once (type, default, range, help) is checked in one way, before
torch is imported: types by OmegaConf while composing, ranges, choices, finite numbers, unknown keys
and the rules between keys by check_settings."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import pytest
from conftest import compose_cfg
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from hybridlearn.core.conf import RunConfig, TrainerConfig
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.settings import check_settings, help_of, positive_int_or, setting


@dataclass
class Inner:
    k: int = setting(3, ge=1, le=10)


@dataclass
class Toy:
    lr: float = setting(0.1, gt=0, help="step size")
    n: int = setting(2, ge=0, lt=5)
    mode: str = setting("a", choices=("a", "b"))
    maybe: Optional[int] = setting(None, ge=1)
    devices: Any = setting(1, check=positive_int_or("auto"))
    hidden: list[float] = setting([8.0, 4.0])
    inner: Inner = setting(Inner())

    @staticmethod
    def rules(node, path, root):
        if node.n == 4 and node.mode == "b":
            raise ConfigError(f"{path}.n=4 needs {path}.mode=a")


def toy(**values) -> Any:
    return OmegaConf.merge(OmegaConf.structured(Toy), values)


def test_defaults_pass_and_each_declaration_is_checked():
    check_settings(toy(), "model")
    assert help_of(next(f for f in dataclasses.fields(Toy) if f.name == "lr")) == "step size"
    bad = [
        ({"lr": 0.0}, r"model.lr must be > 0 \(got 0.0\)"),
        ({"lr": math.inf}, r"model.lr must be a finite number \(got inf\)"),
        ({"n": 5}, r"model.n must be >= 0 and < 5 \(got 5\)"),
        ({"mode": "c"}, r"model.mode must be one of a, b \(got 'c'\)"),
        ({"maybe": 0}, r"model.maybe must be >= 1 \(got 0\)"),
        ({"devices": "all"}, r"model.devices must be a positive integer or auto \(got 'all'\)"),
        ({"devices": 0}, r"model.devices must be a positive integer or auto \(got 0\)"),
        ({"inner": {"k": 11}}, r"model.inner.k must be >= 1 and <= 10 \(got 11\)"),
        ({"hidden": [8.0, math.nan]}, r"model.hidden\[1\] must be a finite number"),
        ({"n": 4, "mode": "b"}, r"model.n=4 needs model.mode=a"),
    ]
    for values, needle in bad:
        with pytest.raises(ConfigError, match=needle):
            check_settings(toy(**values), "model")
    check_settings(toy(maybe=None, devices="auto"), "model")  # null passes a range; a word its check


def test_types_are_checked_while_composing():
    for values in ({"n": 2.5}, {"lr": "fast"}, {"inner": {"k": "x"}}):
        with pytest.raises(ValidationError):
            toy(**values)


def test_a_key_added_with_plus_is_named_with_the_closest_setting():
    node = toy()
    OmegaConf.set_struct(node, False)
    node.mdoe = "a"
    with pytest.raises(ConfigError, match=r"model.mdoe is not a setting of model \(Toy\); did you mean mode\?"):
        check_settings(node, "model")


def test_missing_value_names_the_key():
    node = toy()
    node.mode = "???"
    with pytest.raises(ConfigError, match=r"model.mode is required"):
        check_settings(node, "model")


def test_composed_run_config_is_typed_and_checked(tmp_path):
    cfg = compose_cfg(["experiment=lenet_mnist"], tmp_path)
    assert OmegaConf.get_type(cfg) is RunConfig and OmegaConf.get_type(cfg.trainer) is TrainerConfig
    check_settings(cfg)
    for override, needle in [
        ("seed=-1", r"seed must be >= 0 and <= 4294967295"),
        ("trainer.max_epochs=0", r"trainer.max_epochs must be a positive integer or -1"),
        ("task_name=..", r"task_name must be a file name"),
        ("trainer.devices=999", r"trainer.devices=999, but this machine has \d+ cpu device"),
        ("+trainer.fooo=1", r"trainer.fooo is not a setting of trainer \(TrainerConfig\)"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            check_settings(compose_cfg(["experiment=lenet_mnist", override], tmp_path))


def test_trainer_settings_are_lightning_trainer_arguments():
    """The declared trainer keys exist in Lightning's Trainer (a renamed argument fails here)."""
    import inspect

    import lightning as L

    args = set(inspect.signature(L.Trainer.__init__).parameters)
    declared = {f.name for f in dataclasses.fields(TrainerConfig)} - {"_target_"}
    assert declared <= args, declared - args
