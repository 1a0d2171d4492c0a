"""The mnist settings (hybridlearn.mnist.conf): every kind of declaration refuses a bad value in one line
naming the key, before torch is imported; the rules between keys (max_epochs=-1 with a planned
schedule); objects built from the declarations have their defaults."""

from __future__ import annotations

import pytest
from conftest import assert_config_refused, assert_refused_without_torch, build, compose_cfg
from hydra.errors import ConfigCompositionException

from hybridlearn.core.config import validate
from hybridlearn.core.errors import ConfigError
from hybridlearn.mnist.conf import (
    HandwritingAugmentConfig,
    LeNet5Config,
    LeNet5NetConfig,
    MNISTDataConfig,
    TestTimeAugmentConfig,
)

BAD = [
    # integer ranges (data)
    ("data.batch_size=0", "data.batch_size must be >= 1 and <= 60000 (got 0)"),
    ("data.eval_batch_size=60001", "data.eval_batch_size must be >= 1 and <= 60000 (got 60001)"),
    ("data.val_size=60000", "data.val_size must be >= 0 and <= 59999 (got 60000)"),
    ("data.train_subset=0", "data.train_subset must be >= 1"),
    ("data.test_subset=0", "data.test_subset must be >= 1"),
    # choices
    ("data.value_range=bogus", "data.value_range must be one of unit, tanh, standard (got 'bogus')"),
    ("model.net.activation=gelu", "model.net.activation must be one of relu, tanh, sigmoid"),
    ("model.net.pool=sum", "model.net.pool must be one of max, avg"),
    ("model.optimizer=rmsprop", "model.optimizer must be one of adam, sgd"),
    ("model.scheduler=step", "model.scheduler must be one of null, onecycle, cosine"),
    ("model.init=he", "model.init must be one of torch, keras"),
    ("model.freeze=head", "model.freeze must be one of null, features, all_but_head"),
    ("model.pretrain.value_range=bogus", "model.pretrain.value_range must be one of unit, tanh, standard"),
    # number ranges (model)
    ("model.lr=0", "model.lr must be > 0 (got 0.0)"),
    ("model.net.width=0", "model.net.width must be > 0 and <= 16"),
    ("model.net.width=16.5", "model.net.width must be > 0 and <= 16"),
    ("model.net.dropout=1", "model.net.dropout must be >= 0 and < 1"),
    ("model.pretrain.epochs=0", "model.pretrain.epochs must be >= 1"),
    ("model.weight_decay=-1", "model.weight_decay must be >= 0"),
    ("model.lr=inf", "model.lr must be a finite number"),
    # nested option settings (null by default), and rules within one setting
    ("+model/augment=handwriting model.augment.p=1.5", "model.augment.p must be >= 0 and <= 1 (got 1.5)"),
    (
        "+model/augment=handwriting model.augment.scale=[1.2,0.8]",
        "model.augment.scale must be [low, high] with 0 < low",
    ),
    (
        "+model/tta=rotations model.tta.rotate=[-8,90]",
        "model.tta.rotate must be small angles in degrees, |angle| <= 45",
    ),
    ("model.net.in_size=4", "model.net.in_size=4 with model.net.first_padding=2 is too small for LeNet-5"),
    # a mapping checked against another declaration, and a file
    ("model.pretrain.augment={elastc:1.0}", "model.pretrain.augment: Key 'elastc' not in 'HandwritingAugmentConfig'"),
    ("model.pretrain.augment={elastic:30}", "model.pretrain.augment.elastic must be >= 0 and <= 28"),
    ("model.pretrain.augment=maybe", "model.pretrain.augment must be true, false or augmentation settings"),
    ("model.pretrained=/no/such.ckpt", "model.pretrained=/no/such.ckpt is not a file"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_is_one_line_naming_the_key(override, message, tmp_path):
    assert_config_refused(["experiment=lenet_mnist", *override.split()], message, tmp_path)


@pytest.mark.parametrize(
    "override",
    ["data.batch_size=2.5", "model.compile=maybe", "model.net.activaton=relu", "model.activation=relu"],
)
def test_a_wrong_type_or_key_is_refused_while_composing(override, tmp_path):
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["experiment=lenet_mnist", override], tmp_path)


def test_the_cli_answers_a_bad_value_in_one_line_without_importing_torch(tmp_path):
    assert_refused_without_torch(
        ["experiment=lenet_mnist", "data.batch_size=0"], "data.batch_size must be >= 1 and <= 60000 (got 0)", tmp_path
    )


def test_until_stopped_needs_a_schedule_without_an_end(tmp_path):
    """trainer.max_epochs=-1 ("until stopped"): the one-cycle and cosine schedules are planned over the
    whole fit, so they are refused (one line saying what to do); without a schedule, or with
    max_steps bounding the fit, it is a valid run."""
    for scheduler in ("onecycle", "cosine"):
        cfg = compose_cfg(["experiment=lenet_mnist", "trainer.max_epochs=-1", f"model.scheduler={scheduler}"], tmp_path)
        with pytest.raises(ConfigError) as e:
            validate(cfg)
        msg = str(e.value)
        assert msg.startswith(f"model.scheduler={scheduler} ") and "\n" not in msg
        assert "trainer.max_epochs=-1" in msg and "set trainer.max_epochs" in msg and "model.scheduler=null" in msg
    for ok in (["model.scheduler=null"], ["trainer.max_steps=500"]):
        validate(compose_cfg(["experiment=lenet_mnist", "trainer.max_epochs=-1", *ok], tmp_path))


def test_every_lenet_experiment_composes_and_validates(tmp_path):
    for exp in ("lenet_mnist", "mnist", "lenet_digits", "lenet_digits_transfer", "digits_study"):
        validate(compose_cfg([f"experiment={exp}"], tmp_path))
    cfg = compose_cfg(["experiment=lenet_digits_transfer"], tmp_path)
    assert cfg.model.augment.value_range == cfg.data.value_range == cfg.model.tta.value_range == "standard"
    assert cfg.model.pretrain.cache_dir == cfg.paths.cache_dir  # the folders come from `paths`
    cfg = compose_cfg(["experiment=lenet_mnist", "+model/augment=mnist"], tmp_path)  # the candidate, off by default
    validate(cfg)
    assert (
        cfg.model.augment.rotate == 10 and cfg.model.augment.shear == 0 and cfg.model.augment.value_range == "standard"
    )


def test_objects_built_from_the_declarations(data_dir):
    """The Python API builds from the dataclasses: their defaults, the network handed to the module."""
    model = build(LeNet5Config(lr=0.01, net=LeNet5NetConfig(in_size=32, first_padding=0, width=2.0)))
    assert model.hparams.lr == 0.01 and model.hparams.scheduler == "onecycle" and model.augment is model.tta is None
    assert model.net.in_size == 32 and model.net.features[0].out_channels == 12 and model.net.head.out_features == 10
    assert model.hybridlearn_config["net"]["width"] == 2.0  # what a checkpoint rebuilds it from
    assert "net" not in model.hparams
    aug = build(
        LeNet5Config(augment=HandwritingAugmentConfig(), tta=TestTimeAugmentConfig()), data={"value_range": "unit"}
    )
    assert aug.augment.bg == aug.tta.bg == 0.0 and aug.tta.rotate == [-8.0, 8.0] and aug.augment.p == 1.0
    dm = build(MNISTDataConfig(batch_size=64), seed=7)
    assert dm.batch_size == 64 and dm.hparams.shuffle_seed == 7 and dm.hparams.val_size == 5000
