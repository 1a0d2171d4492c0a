"""The gan experiments' settings (core.settings): each config group option as a dataclass that holds
every key's type, default, range and help; registered through the `hybridlearn.settings` entry point.

    model=mlp_gan            MLPGANConfig  the paper's MNIST GAN (hybridlearn.gan.model.MLPGAN):
                             generator MLPGeneratorConfig, discriminator MLPDiscriminatorConfig
    model=dcgan              DCGANConfig   a DCGAN-style GAN for 28x28 images (beyond the paper):
                             generator DCGeneratorConfig, discriminator DCDiscriminatorConfig
    callbacks=gan_samples    GANSampleGridConfig  the sample grids and GIF (`callbacks.gan_samples`)

Both models share GANConfig's training settings (optimizers, loss, D:G ratio, label smoothing, EMA,
LeNet-FID `model.fid`); each picks its own networks, whose `_target_` is part of their config. The
networks are plain nn.Modules (hybridlearn.gan.nets) built from `model.generator` and
`model.discriminator` and handed to the GAN LightningModule. Torch-free: read before torch is imported.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.settings import SEED_MAX, setting
from hybridlearn.core.settings import register as store
from hybridlearn.mnist.conf import MNIST_TRAIN

LOSSES = ("nonsaturating", "hinge")  # hybridlearn.gan.losses
OPTIMIZER_IMPLS = ("fused", "foreach", "forloop")  # torch.optim.Adam's (benchmarks/results_gan.md)
MAX_GRID = 10_000  # images in one PNG grid or .pt (generate.py -n, task=predict): 10k 28x28 is ~8 MB
MAX_WIDTH = 1 << 16  # units or channels of one layer
FID_SHAPE = [1, 28, 28]  # what the LeNet-FID's MNIST classifier reads


# ------------------------------------------------------------------- checks a type cannot say
def _sizes(v: Any) -> Optional[str]:
    return None if all(1 <= x <= MAX_WIDTH for x in v) else f"must hold layer sizes in [1, {MAX_WIDTH}]"


def _channels(v: Any) -> Optional[str]:
    return _sizes(v) if len(v) else "must list at least one channel count"


def _img_shape(v: Any) -> Optional[str]:
    ok = len(v) == 3 and all(1 <= x <= 4096 for x in v)
    return None if ok else "must be [channels, height, width], each in [1, 4096]"


def _epochs(v: Any) -> Optional[str]:
    return None if all(x >= 1 for x in v) else "must hold epochs >= 1 (1-based)"


def _halvings_fit(node: DictConfig, path: str) -> None:
    """A DCGAN network of k stride-2 layers needs image sides divisible by 2**k."""
    k, (_, h, w) = len(node.channels), list(node.img_shape)
    if h % 2**k or w % 2**k:
        raise ConfigError(
            f"{path}.channels: {k} stride-2 layers need image sides divisible by {2**k} (got {h}x{w}); "
            f"list fewer channels or change {path}.img_shape"
        )


# ---------------------------------------------------------------------------------- networks
@dataclass
class MLPGeneratorConfig:
    """The paper's generator (hybridlearn.gan.nets.MLPGenerator): latent -> hidden... -> image,
    LeakyReLU after each hidden layer, tanh output (images in [-1, 1]). Paper: 128-256-512-1024-784."""

    _target_: str = "hybridlearn.gan.nets.MLPGenerator"
    latent_dim: int = setting(128, ge=1, le=1_000_000, help="the size of the input noise")
    hidden: list[int] = setting([256, 512, 1024], check=_sizes, help="units of the hidden layers")
    img_shape: list[int] = setting(list(FID_SHAPE), check=_img_shape, help="[channels, height, width]")
    negative_slope: float = setting(0.2, ge=0, le=1, help="LeakyReLU after every hidden layer")


@dataclass
class MLPDiscriminatorConfig:
    """The paper's discriminator (hybridlearn.gan.nets.MLPDiscriminator): image -> hidden... -> 1 logit,
    LeakyReLU + dropout after each hidden layer. Paper: 784-1024-512-256-1, dropout 0.3."""

    _target_: str = "hybridlearn.gan.nets.MLPDiscriminator"
    img_shape: list[int] = setting("${..generator.img_shape}", check=_img_shape, help="the generator's")
    hidden: list[int] = setting([1024, 512, 256], check=_sizes, help="units of the hidden layers")
    negative_slope: float = setting(0.2, ge=0, le=1)
    dropout: float = setting(0.3, ge=0, lt=1, help="after each hidden layer (masks from the GAN's private RNG)")
    spectral_norm: bool = setting(False, help="beyond the paper: every layer spectrally normalised (Miyato 2018)")


@dataclass
class DCGeneratorConfig:
    """DCGAN generator (Radford et al. 2016, sized for MNIST; hybridlearn.gan.nets.DCGenerator): z ->
    linear -> channels[0] x 7x7 -> convT 4x4/2 -> channels[1] x 14x14 -> convT 4x4/2 -> 1x28x28,
    BatchNorm + ReLU between, tanh output."""

    _target_: str = "hybridlearn.gan.nets.DCGenerator"
    latent_dim: int = setting(128, ge=1, le=1_000_000, help="the size of the input noise")
    channels: list[int] = setting([64, 32], check=_channels, help="feature maps, smallest first (7x7, 14x14)")
    img_shape: list[int] = setting(list(FID_SHAPE), check=_img_shape, help="[channels, height, width]")
    batch_norm: bool = setting(True, help="BatchNorm before each ReLU")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        _halvings_fit(node, path)


@dataclass
class DCDiscriminatorConfig:
    """DCGAN discriminator (hybridlearn.gan.nets.DCDiscriminator): conv 4x4/2 -> channels[0] x 14x14 ->
    conv 4x4/2 -> channels[1] x 7x7 -> linear -> 1 logit; LeakyReLU, no BatchNorm (D sees real and
    fake in one batch; spectral norm is its normaliser when on)."""

    _target_: str = "hybridlearn.gan.nets.DCDiscriminator"
    img_shape: list[int] = setting("${..generator.img_shape}", check=_img_shape, help="the generator's")
    channels: list[int] = setting([32, 64], check=_channels, help="feature maps, largest first (14x14, 7x7)")
    negative_slope: float = setting(0.2, ge=0, le=1)
    dropout: float = setting(0.0, ge=0, lt=1, help="after each convolution (masks from the GAN's private RNG)")
    spectral_norm: bool = setting(False, help="every layer spectrally normalised (Miyato et al. 2018)")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        _halvings_fit(node, path)


# ---------------------------------------------------------------------------------- LeNet-FID
@dataclass
class FIDConfig:
    """`model.fid`: when and how the LeNet-FID is measured (hybridlearn.gan.metrics): FID in the 84-d
    feature space of an MNIST LeNet-5, against training images (`fid`), held-out training images
    (`val/fid`, when the data has a val split) and the test images (`test/fid`)."""

    enabled: bool = True
    every_n_epochs: int = setting(1, ge=1, le=1_000_000, help="an FID after every n-th epoch")
    num_samples: int = setting(10000, ge=2, le=1_000_000, help="generated images per evaluation (= MNIST test)")
    num_real: int = setting(10000, ge=2, le=1_000_000, help="training images of the real reference (and val's)")
    batch_size: int = setting(1000, ge=1, le=1_000_000)
    seed: int = setting(1234, ge=0, le=SEED_MAX - 100, help="the latent vectors of every evaluation (draw d: seed + d)")
    test_draws: int = setting(
        3, ge=1, le=100, help="test/fid = mean over this many sample draws, test/fid_std their spread"
    )
    classifier_ckpt: Optional[str] = setting(
        None, help="a LeNet-5 .ckpt (experiment=lenet_mnist); null: the MNIST LeNet-5 pretraining (cached)"
    )
    cache_dir: Optional[str] = setting("${paths.cache_dir}", help="where that pretraining is cached")
    mnist_dir: Optional[str] = setting("${paths.data_dir}", help="the data folder holding mnist/ to train it")
    classifier_train_size: int = setting(60000, ge=1, le=MNIST_TRAIN, help="its MNIST images (no augmentation)")
    classifier_epochs: int = setting(1, ge=1, le=10_000, help="its epochs")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        ckpt = node.classifier_ckpt
        if ckpt and not Path(ckpt).expanduser().is_file():
            raise ConfigError(
                f"{path}.classifier_ckpt={ckpt} is not a file; give a LeNet-5 .ckpt (e.g. <lenet_mnist run>/"
                "checkpoints/last.ckpt), or null for the MNIST LeNet-5 pretraining"
            )
        if node.enabled and not ckpt and not (node.cache_dir and node.mnist_dir):
            raise ConfigError(
                f"{path}.cache_dir and {path}.mnist_dir must be set to train the FID classifier (or give "
                f"{path}.classifier_ckpt, or set {path}.enabled=false)"
            )


# ---------------------------------------------------------------------------------- the GANs
@dataclass
class GANConfig:
    """The GAN LightningModule (hybridlearn.gan.model.GAN): its training, for any generator and
    discriminator. Per batch one D step on real + fake, then a G step through the frozen D (Adam both).
    Options beyond the paper, their defaults = the paper's model: loss, d_steps, label_smoothing,
    r1_gamma / r1_every, ema_decay, the networks' spectral_norm."""

    _target_: str = "hybridlearn.gan.model.GAN"
    _convert_: str = "all"  # plain lists/dicts in hparams, so checkpoints load with weights_only=True
    generator: Any = None  # each model's own network configs (below)
    discriminator: Any = None
    g_lr: float = setting(0.0002, gt=0, le=1, help="the generator's Adam learning rate")
    d_lr: float = setting(0.0002, gt=0, le=1, help="the discriminator's Adam learning rate")
    b1: float = setting(0.5, ge=0, lt=1, help="Adam's beta1 (Lightning's / DCGAN's GAN setting)")
    b2: float = setting(0.999, ge=0, lt=1, help="Adam's beta2")
    optimizer_impl: str = setting("fused", choices=OPTIMIZER_IMPLS, help="see benchmarks/results_gan.md")
    reuse_fake: bool = setting(False, help="the G step reuses the D step's fakes (one G forward less per batch)")
    compile: bool = setting(False, help="torch.compile both networks")
    num_fixed: int = setting(64, ge=1, le=1_000_000, help="latent vectors of the sample grids (saved in checkpoints)")
    fixed_seed: int = setting(0, ge=0, le=SEED_MAX, help="draws them")
    loss: str = setting("nonsaturating", choices=LOSSES, help="nonsaturating (BCE, -log D(G(z)) for G) | hinge")
    d_steps: int = setting(1, ge=1, le=100, help="D:G update ratio: a G step after every d_steps-th D step")
    label_smoothing: float = setting(
        0.0, ge=0, le=0.5, help="one-sided: D's real targets are 1 - this (e.g. 0.1); fakes stay 0 (BCE only)"
    )
    r1_gamma: float = setting(
        0.0, ge=0, le=1_000_000, help="R1 penalty gamma/2 E||grad D(x)||^2 on real images in D's loss (0: off)"
    )
    r1_every: int = setting(
        1, ge=1, le=1_000_000, help="lazy R1: the penalty, times this, on every n-th D step only (StyleGAN2: 16)"
    )
    ema_decay: Optional[float] = setting(
        None, ge=0, lt=1, help="e.g. 0.999: samples, FID, best checkpoint, predict, generate.py use an EMA of G"
    )
    n_predict: int = setting(64, ge=1, le=MAX_GRID, help="task=predict: images generated into samples.pt/.png")
    predict_seed: int = setting(0, ge=0, le=SEED_MAX, help="their latent vectors")
    fid: FIDConfig = setting(FIDConfig(), help="the LeNet-FID")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        if node.loss == "hinge" and node.label_smoothing:
            raise ConfigError(
                f"{path}.label_smoothing={node.label_smoothing} sets BCE targets; with {path}.loss=hinge set it to 0"
            )
        g_shape, d_shape = list(node.generator.img_shape), list(node.discriminator.img_shape)
        if g_shape != d_shape:
            raise ConfigError(
                f"{path}.discriminator.img_shape={d_shape} but {path}.generator.img_shape={g_shape}; leave "
                f"{path}.discriminator.img_shape at its default (the generator's)"
            )
        if node.fid.enabled and g_shape != FID_SHAPE:
            raise ConfigError(
                f"{path}.fid measures 28x28 grey digits (an MNIST LeNet-5), not {path}.generator.img_shape={g_shape}; "
                f"set {path}.fid.enabled=false"
            )
        value_range = OmegaConf.select(root, "data.value_range", default=None)
        if value_range not in (None, "tanh"):
            raise ConfigError(
                f"data.value_range={value_range}, but the generator's images are in [-1, 1] (tanh); "
                "set data.value_range=tanh"
            )


@dataclass
class MLPGANConfig(GANConfig):
    """The paper's MNIST GAN (hybridlearn.gan.model.MLPGAN): G 128-256-512-1024-784 tanh, D
    784-1024-512-256-1 (LeakyReLU 0.2, dropout 0.3); Adam 2e-4, betas (0.5, 0.999)."""

    _target_: str = "hybridlearn.gan.model.MLPGAN"
    generator: MLPGeneratorConfig = setting(MLPGeneratorConfig())
    discriminator: MLPDiscriminatorConfig = setting(MLPDiscriminatorConfig())


@dataclass
class DCGANConfig(GANConfig):
    """A DCGAN-style GAN for 28x28 images (beyond the paper): the GAN LightningModule and training
    options of model=mlp_gan with convolutional networks, sized so that an epoch costs about what the
    MLP GAN's does (benchmarks/bench_gan.py --dcgan)."""

    _target_: str = "hybridlearn.gan.model.GAN"
    generator: DCGeneratorConfig = setting(DCGeneratorConfig())
    discriminator: DCDiscriminatorConfig = setting(DCDiscriminatorConfig())


# ---------------------------------------------------------------------------------- callbacks
@dataclass
class GANSampleGridConfig:
    """Sample grids of the fixed latent vectors (the paper's fig. 14; hybridlearn.gan.callbacks): every
    `every_n_epochs` epochs, at each of `epochs` and at the last epoch, `<dirpath>/epoch_NNNN.png`, and
    `<dirpath>/training.gif` animating them; also logged to TensorBoard / W&B when those are on."""

    _target_: str = "hybridlearn.gan.callbacks.GANSampleGrid"
    dirpath: str = "${paths.output_dir}/samples"
    every_n_epochs: int = setting(10, ge=0, le=1_000_000, help="0: only the listed epochs")
    epochs: list[int] = setting([1, 100, 200], check=_epochs, help="1-based epochs that get a grid (fig. 14's)")
    at_start: bool = setting(True, help="epoch_0000.png: the untrained generator")
    nrow: int = setting(8, ge=1, le=1000, help="images per grid row")
    gif: bool = setting(True, help="rewrite training.gif at each new grid")
    gif_ms: int = setting(300, ge=10, le=60_000, help="milliseconds per GIF frame")


def register() -> None:
    """Store this package's config group options in Hydra's ConfigStore."""
    store("model", "mlp_gan", MLPGANConfig)
    store("model", "dcgan", DCGANConfig)
    store("callbacks", "gan_samples", {"gan_samples": GANSampleGridConfig})
