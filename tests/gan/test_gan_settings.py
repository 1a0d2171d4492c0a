"""The gan settings (hybridlearn.gan.conf): every kind of declaration and every rule between keys refuses
a bad value in one line naming the key, before torch is imported; every gan experiment composes; the
objects built from the declarations are the paper's."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_config_refused, assert_refused_without_torch, build, compose_cfg
from hydra.errors import ConfigCompositionException

from hybridlearn.core.config import validate
from hybridlearn.gan.conf import FIDConfig, MLPGANConfig
from hybridlearn.gan.model import MLPGAN

REFUSED = [
    # declarations: ranges and choices of the training settings
    ("gan_mnist", "model.g_lr=-1", "model.g_lr must be > 0 and <= 1 (got -1.0)"),
    ("gan_mnist", "model.d_lr=0", "model.d_lr must be > 0 and <= 1 (got 0.0)"),
    ("gan_mnist", "model.b1=1", "model.b1 must be >= 0 and < 1 (got 1.0)"),
    ("gan_mnist", "model.b2=-0.1", "model.b2 must be >= 0 and < 1 (got -0.1)"),
    ("gan_mnist", "model.ema_decay=1", "model.ema_decay must be >= 0 and < 1 (got 1.0)"),
    ("gan_mnist", "model.d_steps=0", "model.d_steps must be >= 1 and <= 100 (got 0)"),
    ("gan_mnist", "model.r1_gamma=-1", "model.r1_gamma must be >= 0 and <= 1000000 (got -1.0)"),
    ("gan_mnist", "model.r1_every=0", "model.r1_every must be >= 1 and <= 1000000 (got 0)"),
    ("gan_mnist", "model.label_smoothing=0.7", "model.label_smoothing must be >= 0 and <= 0.5 (got 0.7)"),
    ("gan_mnist", "model.loss=wgan", "model.loss must be one of nonsaturating, hinge (got 'wgan')"),
    ("gan_mnist", "model.optimizer_impl=sgd", "model.optimizer_impl must be one of fused, foreach, forloop"),
    ("gan_mnist", "model.n_predict=10001", "model.n_predict must be >= 1 and <= 10000 (got 10001)"),
    ("gan_mnist", "model.g_lr=nan", "model.g_lr must be a finite number"),
    # the networks' declarations (each network config its own dataclass)
    ("gan_mnist", "model.generator.latent_dim=0", "model.generator.latent_dim must be >= 1"),
    ("gan_mnist", "model.generator.hidden=[256,0]", "model.generator.hidden must hold layer sizes in [1, 65536]"),
    ("gan_mnist", "model.discriminator.dropout=1", "model.discriminator.dropout must be >= 0 and < 1 (got 1.0)"),
    ("gan_mnist", "model.generator.img_shape=[28,28]", "model.generator.img_shape must be [channels, height, width]"),
    ("gan_mnist_dcgan", "model.generator.channels=[]", "model.generator.channels must list at least one channel"),
    ("gan_mnist_dcgan", "model.discriminator.dropout=-0.1", "model.discriminator.dropout must be >= 0 and < 1"),
    # the LeNet-FID and the sample grids
    ("gan_mnist", "model.fid.num_samples=1", "model.fid.num_samples must be >= 2 and <= 1000000 (got 1)"),
    ("gan_mnist", "model.fid.num_real=0", "model.fid.num_real must be >= 2"),
    ("gan_mnist", "model.fid.batch_size=0", "model.fid.batch_size must be >= 1"),
    ("gan_mnist", "model.fid.every_n_epochs=0", "model.fid.every_n_epochs must be >= 1"),
    ("gan_mnist", "model.fid.test_draws=0", "model.fid.test_draws must be >= 1 and <= 100 (got 0)"),
    ("gan_mnist", "model.fid.classifier_train_size=60001", "model.fid.classifier_train_size must be >= 1 and <= 60000"),
    ("gan_mnist", "callbacks.gan_samples.every_n_epochs=-1", "callbacks.gan_samples.every_n_epochs must be >= 0"),
    ("gan_mnist", "callbacks.gan_samples.epochs=[1,0]", "callbacks.gan_samples.epochs must hold epochs >= 1"),
    ("gan_digits", "callbacks.gan_samples.nrow=0", "callbacks.gan_samples.nrow must be >= 1"),
    # keys added with + that are no setting, named with the dataclass they are not in
    ("gan_mnist", "+model.typo=1", "model.typo is not a setting of model (MLPGANConfig)"),
    ("gan_mnist", "+model.fid.num_sample=10", "model.fid.num_sample is not a setting of model.fid (FIDConfig); did"),
    ("gan_mnist_dcgan", "+model.generator.hidden=[8]", "model.generator.hidden is not a setting of model.generator"),
    ("gan_mnist", "+callbacks.gan_samples.gif_fps=5", "callbacks.gan_samples.gif_fps is not a setting"),
    # the data settings of the experiments (data=mnist: hybridlearn.mnist.conf)
    ("gan_mnist", "data.batch_size=0", "data.batch_size must be >= 1 and <= 60000 (got 0)"),
    # rules between keys
    ("gan_mnist", "model.loss=hinge model.label_smoothing=0.1", "with model.loss=hinge set it to 0"),
    (
        "gan_mnist_modern",
        "model.label_smoothing=0.1",
        "model.label_smoothing=0.1 sets BCE targets; with model.loss=hinge",
    ),
    ("gan_mnist", "model.discriminator.img_shape=[1,32,32]", "model.discriminator.img_shape=[1, 32, 32] but model.gen"),
    ("gan_mnist", "model.generator.img_shape=[3,28,28]", "model.fid measures 28x28 grey digits"),
    ("gan_mnist_dcgan", "model.generator.channels=[8,8,8]", "divisible by 8 (got 28x28)"),
    ("gan_mnist_dcgan", "model.discriminator.channels=[8,8,8]", "model.discriminator.channels: 3 stride-2 layers"),
    ("gan_mnist", "data.value_range=standard", "data.value_range=standard, but the generator's images are in [-1, 1]"),
    ("gan_mnist", "model.fid.classifier_ckpt=/no/such.ckpt", "model.fid.classifier_ckpt=/no/such.ckpt is not a file"),
    ("gan_mnist", "model.fid.cache_dir=null", "model.fid.cache_dir and model.fid.mnist_dir must be set"),
]


@pytest.mark.parametrize("experiment, override, message", REFUSED, ids=[r[1] for r in REFUSED])
def test_a_bad_value_is_one_line_naming_the_key(experiment, override, message, tmp_path):
    assert_config_refused([f"experiment={experiment}", *override.split()], message, tmp_path)


@pytest.mark.parametrize("override", ["model.d_steps=1.5", "model.compile=maybe", "model.generator.hidden=wide"])
def test_a_wrong_type_is_refused_while_composing(override, tmp_path):
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["experiment=gan_mnist", override], tmp_path)


def test_the_cli_answers_a_bad_value_in_one_line_without_importing_torch(tmp_path):
    assert_refused_without_torch(
        ["experiment=gan_mnist", "model.g_lr=-1"], "model.g_lr must be > 0 and <= 1 (got -1.0)", tmp_path
    )


def test_every_gan_experiment_composes_and_validates(tmp_path):
    for exp in ("gan", "gan_mnist", "gan_mnist_modern", "gan_mnist_dcgan", "gan_digits"):
        cfg = compose_cfg([f"experiment={exp}"], tmp_path)
        validate(cfg)
        assert cfg.callbacks.gan_samples.dirpath.endswith("/samples") and cfg.data.value_range == "tanh"
    cfg = compose_cfg(["hparams_search=gan_optuna", "experiment=gan_mnist_dcgan"], tmp_path)
    validate(cfg)
    assert cfg.model.fid.every_n_epochs == cfg.trainer.max_epochs == 20 and cfg.model.generator.channels == [64, 32]
    assert cfg.model.fid.cache_dir == cfg.paths.cache_dir  # the folders come from `paths`


def test_the_paper_gan_built_from_its_declarations():
    """The Python API builds from the dataclasses: the paper's networks and training settings, and
    MLPGAN given no networks builds the same ones (same weights from the same seed)."""
    torch.manual_seed(0)
    model = build(MLPGANConfig(fid=FIDConfig(enabled=False)))
    hp = model.hparams
    assert (hp.g_lr, hp.d_lr, hp.b1, hp.b2, hp.loss, hp.d_steps, hp.ema_decay) == (
        2e-4,
        2e-4,
        0.5,
        0.999,
        "nonsaturating",
        1,
        None,
    )
    assert hp.generator["hidden"] == [256, 512, 1024] and hp.discriminator["dropout"] == 0.3
    assert model.hybridlearn_config["discriminator"]["img_shape"] == [1, 28, 28]  # what a checkpoint rebuilds it from
    torch.manual_seed(0)
    bare = MLPGAN(**{k: v for k, v in hp.items() if k not in ("generator", "discriminator")})
    assert bare.hparams == hp
    sd = bare.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
