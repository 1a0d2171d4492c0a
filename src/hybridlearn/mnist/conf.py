"""The mnist experiments' settings (core.settings): each config group option as a dataclass that holds
every key's type, default, range and help; registered through the `hybridlearn.settings` entry point.

`data=mnist` is MNISTDataConfig, `model=lenet5` LeNet5Config: the LightningModule's training choices,
with the network (`model.net`, LeNet5NetConfig), the MNIST pretraining (`model.pretrain`) and the
augmentations (`model.augment`, `model.tta`) nested in it. Torch-free: read before torch is imported."""

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.io import check_present
from hybridlearn.core.settings import SEED_MAX, check_settings, setting
from hybridlearn.core.settings import register as register_option

MNIST_TRAIN = 60_000  # training images (the validation split is cut from them)
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_TEST = 10_000
VALUE_RANGES = ("unit", "tanh", "standard")
MNIST_MIRRORS = (  # the mirrors torchvision uses
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
VALUE_RANGE_HELP = "unit [0, 1] | tanh [-1, 1] | standard (MNIST mean/std normalised)"


# ------------------------------------------------------------------------------------ data
@dataclass
class MNISTDataConfig:
    """MNIST from the four original IDX .gz files in `$DATA_DIR/mnist/` (fetched when missing), with a
    seeded train/val split of the 60k training images; the 10k test images are kept apart."""

    _target_: str = "hybridlearn.mnist.data.MNISTDataModule"
    data_dir: str = "${paths.data_dir}"
    batch_size: int = setting(128, ge=1, le=MNIST_TRAIN)
    eval_batch_size: int = setting(1000, ge=1, le=MNIST_TRAIN, help="validation/test/predict batches")
    val_size: int = setting(5000, ge=0, le=MNIST_TRAIN - 1, help="held out of the 60k training images (split_seed)")
    value_range: str = setting("standard", choices=VALUE_RANGES, help=VALUE_RANGE_HELP)
    train_subset: Optional[int] = setting(None, ge=1, le=MNIST_TRAIN, help="first N training images (quick runs)")
    test_subset: Optional[int] = setting(None, ge=1, le=MNIST_TEST, help="first N test images (quick runs)")
    split_seed: int = setting(42, ge=0, le=SEED_MAX, help="draws the train/val split")
    shuffle_seed: Optional[int] = setting("${seed}", ge=0, le=SEED_MAX, help="draws the order of training batches")
    mirrors: list[str] = setting(list(MNIST_MIRRORS), help="where missing files are fetched from (md5-checked)")
    download_timeout: Optional[float] = setting(30.0, gt=0, help="seconds for all downloads together")
    drop_last: bool = setting(False, help="drop the last, smaller training batch of each epoch")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        # a corrupt file is refused now, before the run folder; a missing one is fetched by the run
        check_present(Path(node.data_dir) / "mnist", MNIST_FILES, what="MNIST")


# ---------------------------------------------------------------------------- augmentation
@dataclass
class HandwritingAugmentConfig:
    """Random small rotation, shear, scale and shift (one affine warp per image) and stroke-thickness
    changes of the training batches (hybridlearn.mnist.augment.HandwritingAugment)."""

    _target_: str = "hybridlearn.mnist.augment.HandwritingAugment"
    rotate: float = setting(12.0, ge=0, le=180, help="degrees, drawn in [-rotate, rotate]")
    shear: float = setting(8.0, ge=0, lt=90, help="degrees, drawn in [-shear, shear]")
    scale: list[float] = setting([0.85, 1.15], help="[low, high] zoom factors, 0 < low <= high")
    translate: float = setting(0.1, ge=0, le=1, help="shift, a fraction of the image side")
    thickness: float = setting(0.5, ge=0, le=1, help="stroke width: blends up to a 1-pixel dilation/erosion")
    p: float = setting(1.0, ge=0, le=1, help="share of the images augmented")
    value_range: str = setting("${data.value_range}", choices=VALUE_RANGES, help="which value is 'no ink'")
    elastic: float = setting(0.0, ge=0, le=28, help="elastic distortion (Simard 2003), pixels; 0: off")
    elastic_sigma: float = setting(3.0, gt=0, le=28, help="smoothness of the elastic field, pixels")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        scale = list(node.scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ConfigError(f"{path}.scale must be [low, high] with 0 < low <= high (got {scale})")


@dataclass
class TestTimeAugmentConfig:
    """Test-time augmentation of validation, test and predict: the mean softmax over the image and the
    image rotated by each of `rotate` (hybridlearn.mnist.augment.TestTimeAugment)."""

    __test__ = False  # not a pytest test class, despite its name

    _target_: str = "hybridlearn.mnist.augment.TestTimeAugment"
    rotate: list[float] = setting([-8.0, 8.0], help="degrees, |angle| <= 45; []: the image only")
    value_range: str = setting("${data.value_range}", choices=VALUE_RANGES, help="the background filled in")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        if any(abs(r) > 45 for r in node.rotate):
            raise ConfigError(f"{path}.rotate must be small angles in degrees, |angle| <= 45 (got {list(node.rotate)})")


# `+model/augment=mnist`: a mild affine augmentation for experiment=lenet_mnist (off by default; a
# candidate to measure over seeds against the plain run, with trainer.max_epochs=20 for both, since
# augmented batches need more epochs): the common MNIST recipe (rotation 10 degrees, zoom 10 %,
# shift 10 %), without the shear and stroke-width changes meant for other writers' digits.
MNIST_AUGMENT = HandwritingAugmentConfig(rotate=10.0, shear=0.0, scale=[0.9, 1.1], translate=0.1, thickness=0.0)


# ------------------------------------------------------------------------------ pretraining
@dataclass
class MNISTPretrainConfig:
    """`model.pretrained: mnist`: a LeNet-5 of the same network trained on MNIST (Adam + one-cycle) by
    hybridlearn.mnist.pretrain, cached in `cache_dir` by a hash of the network and these settings
    (not the folders), so every later run with the same settings reuses it."""

    data_dir: str = "${paths.data_dir}"
    cache_dir: str = "${paths.cache_dir}"
    epochs: int = setting(2, ge=1, le=10_000)
    lr: float = setting(0.002, gt=0, help="Adam's peak learning rate (one-cycle)")
    batch_size: int = setting(128, ge=1, le=MNIST_TRAIN)
    value_range: str = setting("standard", choices=VALUE_RANGES, help="the MNIST images' range: the data's")
    augment: Any = setting(True, help="true: HandwritingAugment's defaults | false: none | {elastic: 1.5, ...}")
    seed: int = setting(0, ge=0, le=SEED_MAX, help="of the pretraining (cached per seed)")
    subset: Optional[int] = setting(None, ge=1, le=MNIST_TRAIN, help="first N MNIST images only (quick tests)")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        pretrain_augment_settings(node.augment, node.value_range, f"{path}.augment")


def pretrain_augment_settings(augment: Any, value_range: str, path: str) -> DictConfig | None:
    """`model.pretrain.augment` (true / false / HandwritingAugment settings, the rest their defaults) as
    a HandwritingAugmentConfig node, checked against its declarations; None for false."""
    if augment is False:
        return None
    if augment is not True and not isinstance(augment, (dict, DictConfig)):
        raise ConfigError(
            f"{path} must be true, false or augmentation settings like {{elastic: 1.5}} (got {augment!r})"
        )
    node = OmegaConf.structured(HandwritingAugmentConfig(value_range=value_range))
    try:
        node = OmegaConf.merge(node, {} if augment is True else augment)
    except OmegaConfBaseException as e:
        keys = ", ".join(f.name for f in fields(HandwritingAugmentConfig) if f.name not in ("_target_", "value_range"))
        raise ConfigError(f"{path}: {str(e).splitlines()[0]} (keys: {keys})") from None
    check_settings(node, path)
    return node


# ---------------------------------------------------------------------------------- LeNet-5
@dataclass
class LeNet5NetConfig:
    """The network (hybridlearn.mnist.lenet.LeNet5Net): conv 5x5 -> 6, subsample, conv 5x5 -> 16,
    subsample, 120, 84, classes (LeCun et al. 1998)."""

    _target_: str = "hybridlearn.mnist.lenet.LeNet5Net"
    in_size: int = setting(28, ge=1, le=4096, help="input side, pixels (28: MNIST; 32: LeNet's own)")
    in_channels: int = setting(1, ge=1, le=64)
    num_classes: int = setting(10, ge=2, le=100_000)
    activation: str = setting("relu", choices=("relu", "tanh", "sigmoid"), help="LeCun 1998 used a scaled tanh")
    pool: str = setting("max", choices=("max", "avg"), help="LeCun's subsampling is a trainable average")
    first_padding: int = setting(2, ge=0, le=64, help="2: a 28x28 input seen at LeNet's 32x32 geometry")
    width: float = setting(1.0, gt=0, le=16, help="scales channels and units (1 = LeCun's 6/16/120/84)")
    dropout: float = setting(0.0, ge=0, lt=1, help="> 0: dropout after the two hidden fully connected layers")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        if feature_side(node.in_size, node.first_padding) < 1:
            raise ConfigError(
                f"{path}.in_size={node.in_size} with {path}.first_padding={node.first_padding} is too small for "
                "LeNet-5 (two 5x5 convolutions and two 2x2 subsamplings); give in_size >= 12 - 2 * first_padding"
            )


def feature_side(in_size: int, first_padding: int) -> int:
    """The side of LeNet-5's last feature maps (5 for 28x28 inputs with padding 2)."""
    return ((in_size + 2 * first_padding - 4) // 2 - 4) // 2


FINITE_SCHEDULES = ("onecycle", "cosine")  # both are planned over the whole fit's steps


@dataclass
class LeNet5Config:
    """LeNet-5 as a LightningModule (hybridlearn.mnist.lenet.LeNet5): the network and its training."""

    _target_: str = "hybridlearn.mnist.lenet.LeNet5"
    net: LeNet5NetConfig = setting(LeNet5NetConfig())
    ensemble: int = setting(
        1, ge=1, le=16, help="> 1: an ensemble of that many networks in one checkpoint (each its own pretraining seed)"
    )
    optimizer: str = setting("adam", choices=("adam", "sgd"), help="sgd: momentum 0.9")
    lr: float = setting(0.002, gt=0, help="the learning rate (one-cycle: its peak)")
    weight_decay: float = setting(0.0, ge=0)
    scheduler: Optional[str] = setting("onecycle", choices=(None, *FINITE_SCHEDULES), help="stepped per batch")
    compile: bool = setting(False, help="torch.compile the network")
    init: str = setting("torch", choices=("torch", "keras"), help="keras: Glorot-uniform weights, zero biases")
    pretrained: Optional[str] = setting(None, help="mnist (trained on the fly, see pretrain) | a LeNet-5 .ckpt/.pt")
    pretrain: MNISTPretrainConfig = setting(MNISTPretrainConfig(), help="the MNIST pretraining of pretrained: mnist")
    freeze: Optional[str] = setting(None, choices=(None, "features", "all_but_head"), help="features: the convs")
    # null: off. An experiment's YAML sets them like any node (`augment: {p: 0.9}`); on the command line
    # `+model/augment=handwriting` / `+model/tta=rotations` add them, then `model.augment.p=0.9` etc.
    augment: Optional[HandwritingAugmentConfig] = setting(None, help="augmentation of the training batches")
    tta: Optional[TestTimeAugmentConfig] = setting(None, help="test-time augmentation of val/test/predict")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        epochs = OmegaConf.select(root, "trainer.max_epochs", default=None)
        steps = OmegaConf.select(root, "trainer.max_steps", default=-1)
        if node.scheduler in FINITE_SCHEDULES and epochs == -1 and steps == -1:
            raise ConfigError(
                f"{path}.scheduler={node.scheduler} plans its learning rate over the whole fit, but "
                "trainer.max_epochs=-1 (until stopped) gives it no end; set trainer.max_epochs (or "
                f"trainer.max_steps), or {path}.scheduler=null"
            )
        pretrained = node.pretrained
        if node.ensemble > 1 and pretrained and pretrained != "mnist":
            raise ConfigError(
                f"{path}.ensemble={node.ensemble} needs {path}.pretrained=mnist (each member from its own "
                f"pretraining seed) or null (from scratch): one file would start every member alike"
            )
        if pretrained and pretrained != "mnist" and not Path(pretrained).expanduser().is_file():
            raise ConfigError(
                f"{path}.pretrained={pretrained} is not a file; give a LeNet-5 .ckpt (e.g. <lenet_mnist run>/"
                "checkpoints/last.ckpt), mnist (pretrained on the fly) or null"
            )


def register() -> None:
    """Store this package's config group options in Hydra's ConfigStore."""
    register_option("data", "mnist", MNISTDataConfig)
    register_option("model", "lenet5", LeNet5Config)
    # optional parts of `model`, null by default (a typed null cannot be merged into from the command line)
    register_option("model/augment", "handwriting", HandwritingAugmentConfig)
    register_option("model/augment", "mnist", MNIST_AUGMENT)
    register_option("model/tta", "rotations", TestTimeAugmentConfig)
