"""The gom experiments' settings (core.settings): each config group option as a dataclass that holds
every key's type, default, range and help; registered through the `hybridlearn.settings` entry point.

    data=gom                      GomDataConfig
    model=gom_mlp                 SigmoidMLPConfig         (net: SigmoidMLPNetConfig)
    model=gom_autoencoder         AutoencoderConfig        (net: AutoencoderNetConfig)
    model=gom_hybrid              HybridRegressorConfig    (net: HybridRegressorNetConfig): the paper's hybrid
    model=gom_origin_classifier   OriginClassifierConfig   (net: OriginClassifierNetConfig): beyond the paper
    grid=gom                      GomGridConfig            the `grid:` of experiment=gom_*_grid / gom_study
    study=gom                     GomStudyConfig           the `study:` of experiment=gom_study
    study=gom_cv                  GomCVConfig              the `study:` of experiment=gom_cv* (the baselines)

The paper's text gives the defaults; the authors' code differs in five named switches (docs/gom.md):
grad_reduction=sum, bias=false, input_layer=true, data.target_scaling=joint, data.n_features=67.
"""

import math
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.settings import SEED_MAX, setting
from hybridlearn.core.settings import register as store

# Feature columns of each UCI file (`data.features` picks one); data.n_features defaults to all of them
# through the resolver `${gom.feature_columns:<set>}`, and the models' inputs follow data.n_features.
FEATURE_COLUMNS = {"default": 68, "chromatic": 116}
FOREST_TARGETS = ("latlon", "unit")  # the CV's random forests: latitude/longitude or 3-D unit vectors
MAX_DEPTH, MAX_WIDTH, MAX_LR = 16, 4096, 10.0
REDUCTIONS = ("mean", "sum")
PRECISION_64 = ("64", "64-true")
PRECISION_HALF = ("16-true", "bf16-true")


# ------------------------------------------------------------------- checks a type cannot say
def _ints_in(lo: int, hi: int):
    def check(v: Any) -> Optional[str]:
        return None if all(lo <= x <= hi for x in v) else f"must hold integers in [{lo}, {hi}]"

    return check


def _lrs(v: Any) -> Optional[str]:
    ok = all(0 < x <= MAX_LR and math.isfinite(x) for x in v)
    return None if ok else f"must hold learning rates in (0, {MAX_LR:g}]"


def _one_of(choices: tuple):
    def check(v: Any) -> Optional[str]:
        return None if all(x in choices for x in v) else f"must hold values of {', '.join(choices)}"

    return check


def _hidden_ranges(v: Any) -> Optional[str]:
    """[[first, last], ...] inclusive ranges or plain ints, all in [1, MAX_WIDTH]."""
    for r in v:
        pair = list(r) if OmegaConf.is_list(r) or isinstance(r, list) else None
        if pair is None and isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= MAX_WIDTH:
            continue
        if pair is not None and len(pair) == 2 and all(isinstance(x, int) for x in pair):
            if 1 <= pair[0] <= pair[1] <= MAX_WIDTH:
                continue
        return f"must hold hidden sizes in [1, {MAX_WIDTH}] or inclusive ranges [first, last] of them"
    return None


def _hidden_or_auto(v: Any) -> Optional[str]:
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_WIDTH):
        return None
    return f"must be auto or a hidden size in [1, {MAX_WIDTH}]"


def _workers(v: Any) -> Optional[str]:
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096):
        return None
    return "must be auto or a number of workers in [1, 4096]"


def _split(v: Any) -> Optional[str]:
    if len(v) != 3 or any(f <= 0 for f in v):
        return "must be three positive fractions train, val, test"
    return None if abs(sum(v) - 1.0) <= 1e-6 else f"must sum to 1 (sums to {sum(v):g})"


def _need_seed(node: DictConfig, path: str) -> None:
    """GOM draws its splits and initial weights from explicit seeds: `seed=null` has no meaning here."""
    if node.seed is None:
        raise ConfigError(f"{path}.seed is null; GOM splits and initial weights need a seed: set seed=<integer>")


def _inputs_follow_data(net: DictConfig, path: str, root: DictConfig) -> None:
    n = OmegaConf.select(root, "data.n_features", default=None)
    if isinstance(n, int) and net.n_inputs != n:
        raise ConfigError(
            f"{path}.net.n_inputs={net.n_inputs} but data.n_features={n}; leave {path}.net.n_inputs at "
            "${data.n_features}"
        )


def _feature_columns(features: str) -> int:
    if features not in FEATURE_COLUMNS:
        raise ConfigError(f"data.features must be one of {', '.join(FEATURE_COLUMNS)} (got {features!r})")
    return FEATURE_COLUMNS[features]


# ------------------------------------------------------------------------------------- data
@dataclass
class GomDataConfig:
    """Geographical Original of Music (UCI 315): $DATA_DIR/gom/<the feature set's file>, downloaded (from
    the UCI zip when needed) and md5-checked when missing. Features and targets min-max scaled with the
    training split's min/max (kept in the model, so predictions map back to degrees)."""

    _target_: str = "hybridlearn.gom.data.GomDataModule"
    data_dir: str = "${paths.data_dir}"
    seed: Optional[int] = setting("${seed}", ge=0, le=SEED_MAX, help="draws the split (CV: the inner val split)")
    features: str = setting(
        "default", choices=tuple(FEATURE_COLUMNS), help="default: the paper's 68 features | chromatic: 116 (+ chroma)"
    )
    n_features: int = setting(
        "${gom.feature_columns:${data.features}}",
        ge=1,
        help="the first n feature columns; default all of the set (authors' code: 67, dropping the last)",
    )
    split: list[float] = setting([0.6, 0.2, 0.2], check=_split, help="train/val/test fractions (uniform, seeded)")
    target_scaling: str = setting(
        "per_column", choices=("per_column", "joint"), help="joint: one min/max for lat and lon (authors' code)"
    )
    batch_size: Optional[int] = setting(
        None, ge=1, help="null: full batch (the paper's gradient descent); an int: minibatches (hybrids)"
    )
    shuffle: bool = True
    dtype: str = setting("float32", choices=("float32", "float64"), help="float64 needs trainer.precision=64-true")
    file: Optional[str] = setting(None, help="a file in the feature set's format instead of its UCI file (no md5)")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        _need_seed(node, path)
        n = FEATURE_COLUMNS[node.features]
        if node.n_features > n:
            raise ConfigError(
                f"{path}.n_features must be <= {n}, the feature columns of {path}.features={node.features} "
                f"(got {node.n_features})"
            )
        # the models' parameters take the trainer's precision; the tensors take data.dtype
        precision = str(OmegaConf.select(root, "trainer.precision", default="32-true"))
        if precision in PRECISION_HALF:
            raise ConfigError(f"trainer.precision={precision}: GOM trains in float32 or float64 (64-true)")
        if (precision in PRECISION_64) != (node.dtype == "float64"):
            raise ConfigError(
                f"{path}.dtype={node.dtype} with trainer.precision={precision}; use {path}.dtype=float64 with "
                "trainer.precision=64-true, or float32 with any other precision"
            )


# ------------------------------------------------------------------------- sigmoid networks
@dataclass
class SigmoidNetConfig:
    """Fully connected, a sigmoid after every layer; weights (and biases) ~ U[-init_range, init_range]
    from a private generator seeded with `seed`: the same start alone or inside the vectorized grid."""

    _target_: str = ""
    n_inputs: int = setting("${data.n_features}", ge=1, help="feature columns (follows data.n_features)")
    bias: bool = setting(True, help="bias terms (authors' code: false)")
    input_layer: bool = setting(False, help="an extra n_in -> n_in sigmoid layer in front (authors' code: true)")
    init_range: float = setting(1.0, gt=0, le=100, help="weights ~ U[-init_range, init_range]")
    seed: Optional[int] = setting("${seed}", ge=0, le=SEED_MAX, help="draws the initial weights")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        _need_seed(node, path)


@dataclass
class SigmoidMLPNetConfig(SigmoidNetConfig):
    """L hidden layers of l sigmoid neurons -> 2 sigmoid outputs, the scaled latitude and longitude."""

    _target_: str = "hybridlearn.gom.nets.SigmoidMLPNet"
    depth: int = setting(1, ge=1, le=MAX_DEPTH, help="hidden layers L (paper grid 1..5)")
    width: int = setting(3, ge=1, le=MAX_WIDTH, help="neurons per hidden layer l (paper grid 1..5)")


@dataclass
class AutoencoderNetConfig(SigmoidNetConfig):
    """n_inputs -> hidden (sigmoid) -> n_inputs (sigmoid): fewer hidden units reduce (M1), more extract (M2)."""

    _target_: str = "hybridlearn.gom.nets.AutoencoderNet"
    hidden: int = setting(19, ge=1, le=MAX_WIDTH, help="M1 (reduction) 1..67, M2 (extraction) 69..136; paper M1*=19")


@dataclass
class EnergyDescentConfig:
    """What the paper's two networks share: full-batch gradient descent on the average instant energy
    E = 1/2 sum_k e_k^2, stopped once it is below `stop_energy`; the inputs follow the data."""

    _target_: str = "???"
    lr: float = setting(0.01, gt=0, le=MAX_LR)
    grad_reduction: str = setting(
        "mean", choices=REDUCTIONS, help="mean: gradient of the average energy (paper) | sum (authors' code)"
    )
    stop_energy: Optional[float] = setting(0.01, ge=0, help="stop once the average training energy < this; null: never")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        _inputs_follow_data(node.net, path, root)


@dataclass
class SigmoidMLPConfig(EnergyDescentConfig):
    """The paper's sigmoid MLP regressor of (scaled) latitude, longitude (EnergyDescentConfig)."""

    _target_: str = "hybridlearn.gom.models.SigmoidMLP"
    lr: float = setting(0.01, gt=0, le=MAX_LR, help="paper grid 0.0001, 0.001, 0.01, 0.1, 0.2, 0.5, 0.9")
    net: SigmoidMLPNetConfig = setting(SigmoidMLPNetConfig())


@dataclass
class AutoencoderConfig(EnergyDescentConfig):
    """The paper's sigmoid autoencoder of the scaled features, trained like the MLP (EnergyDescentConfig)."""

    _target_: str = "hybridlearn.gom.models.Autoencoder"
    lr: float = setting(0.1, gt=0, le=MAX_LR, help="paper grid 0.001, 0.01, 0.1")
    net: AutoencoderNetConfig = setting(AutoencoderNetConfig())


# ------------------------------------------------------------------------------------ hybrids
@dataclass
class AutoencoderPretrainingConfig:
    """The hybrid's autoencoder, trained at fit start with the algorithm of model=gom_autoencoder (the
    vectorized engine, one network); its weights at the epoch of lowest validation energy become the
    frozen encoder whose code feeds the head."""

    hidden: int = setting(19, ge=1, le=MAX_WIDTH, help="code size: M1* = 19 (reduction), M2* = 87 (extraction)")
    lr: float = setting(0.1, gt=0, le=MAX_LR)
    epochs: int = setting(100, ge=1, le=100_000)
    grad_reduction: str = setting("mean", choices=REDUCTIONS, help="sum: authors' code")
    bias: bool = setting(True, help="authors' code: false")
    input_layer: bool = setting(False, help="authors' code: true")
    stop_energy: Optional[float] = setting(0.01, ge=0, help="null: never stop early")
    seed: Optional[int] = setting("${seed}", ge=0, le=SEED_MAX, help="draws the autoencoder's initial weights")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        _need_seed(node, path)


@dataclass
class HybridNetConfig:
    """The hybrid's input, [autoencoder code, scaled features] as chosen, then the head's hidden layers."""

    _target_: str = ""
    n_inputs: int = setting("${data.n_features}", ge=1, help="feature columns (follows data.n_features)")
    code: int = setting("${..autoencoder.hidden}", ge=1, le=MAX_WIDTH, help="follows model.autoencoder.hidden")
    ae_input_layer: bool = setting("${..autoencoder.input_layer}", help="follows model.autoencoder.input_layer")
    use_code: bool = setting(True, help="the autoencoder's code is an input (false: no autoencoder is trained)")
    include_features: bool = setting(False, help="the scaled features are an input too: [code, features]")
    standardize: bool = setting(False, help="z-score the input with the training split's mean and std")
    hidden: list[int] = setting([3], check=_ints_in(1, MAX_WIDTH), help="the head's hidden layers")
    bias: bool = True
    init_range: Optional[float] = setting(1.0, gt=0, le=100, help="sigmoid layers ~ U[-r, r]; null: PyTorch's init")
    seed: Optional[int] = setting("${seed}", ge=0, le=SEED_MAX, help="the head's init is drawn from seed + 1")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        _need_seed(node, path)
        if not node.use_code and not node.include_features:
            raise ConfigError(f"{path}.use_code=false needs {path}.include_features=true (the head needs an input)")
        if len(node.hidden) > MAX_DEPTH:
            raise ConfigError(f"{path}.hidden must have at most {MAX_DEPTH} layers (got {len(node.hidden)})")


@dataclass
class HybridRegressorNetConfig(HybridNetConfig):
    """-> sigmoid hidden layers -> 2 sigmoid outputs, the scaled latitude and longitude (paper: [3])."""

    _target_: str = "hybridlearn.gom.nets.HybridRegressorNet"


@dataclass
class OriginClassifierNetConfig(HybridNetConfig):
    """-> hidden layers (sigmoid with U[-r, r] init, or ReLU), dropout -> logits over the training split's
    distinct origins; `ensemble` members averaged, blended with the k-NN origin histogram."""

    _target_: str = "hybridlearn.gom.nets.OriginClassifierNet"
    include_features: bool = setting(True, help="the scaled features are an input too: [code, features]")
    hidden: list[int] = setting([64], check=_ints_in(1, MAX_WIDTH), help="each member's hidden layers")
    init_range: Optional[float] = setting(None, gt=0, le=100, help="sigmoid layers ~ U[-r, r]; null: PyTorch's init")
    activation: str = setting("sigmoid", choices=("sigmoid", "relu"), help="the hidden units")
    dropout: float = setting(0.2, ge=0, lt=1, help="before each member's softmax layer")
    ensemble: int = setting(1, ge=1, le=256, help="members trained side by side (own init and dropout), averaged")
    max_locations: int = setting(64, ge=1, le=100_000, help="the softmax's size (distinct training origins)")
    knn_blend: float = setting(0.0, ge=0, le=1, help="posterior = (1 - a) model + a k-NN origin histogram")
    knn_k: int = setting(10, ge=1, le=100_000, help="neighbours of that histogram (Euclidean, scaled features)")


@dataclass
class HybridConfig:
    """What both hybrids train: the autoencoder first, then the head by Lightning on minibatches."""

    _target_: str = ""
    autoencoder: AutoencoderPretrainingConfig = setting(AutoencoderPretrainingConfig())
    lr: float = setting(0.01, gt=0, le=MAX_LR, help="the head's learning rate")
    optimizer: str = setting("adam", choices=("adam", "adamw", "sgd"), help="adamw: decoupled weight decay")
    weight_decay: float = setting(0.0, ge=0)
    early_stop_patience: int = setting(
        0, ge=0, le=100_000, help="> 0: stop after this many validations without a lower `early_stop_on`"
    )
    early_stop_on: str = setting("energy", choices=("energy", "loss", "km"), help="the validation metric watched")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        _inputs_follow_data(node.net, path, root)
        if not node.net.use_code:
            return
        for key, ae_key in (("code", "hidden"), ("ae_input_layer", "input_layer")):
            if node.net[key] != node.autoencoder[ae_key]:
                raise ConfigError(
                    f"{path}.net.{key}={node.net[key]} but {path}.autoencoder.{ae_key}={node.autoencoder[ae_key]}; "
                    f"leave {path}.net.{key} at its default (it follows the autoencoder)"
                )


@dataclass
class HybridRegressorConfig(HybridConfig):
    """The paper's hybrid: a pre-trained autoencoder's code -> sigmoid MLP regressor of latitude and
    longitude. Paper/authors: 1 hidden layer of 3 sigmoid neurons, Adam(0.01), MAE, 500 epochs, batch 50."""

    _target_: str = "hybridlearn.gom.hybrid.HybridRegressor"
    loss: str = setting(
        "mae", choices=("mae", "energy", "mse", "km"), help="mae (authors) | energy | mse | km (great-circle)"
    )
    net: HybridRegressorNetConfig = setting(HybridRegressorNetConfig())


@dataclass
class OriginClassifierConfig(HybridConfig):
    """Beyond the paper: a softmax over the training split's origins (33 capitals), cross-entropy; the
    prediction is the origin with the least expected great-circle distance. Defaults: the modern hybrid
    (experiment=gom_hybrid_modern: autoencoder code + features -> 64 sigmoid units)."""

    _target_: str = "hybridlearn.gom.hybrid.OriginClassifier"
    weight_decay: float = setting(0.0001, ge=0)
    early_stop_patience: int = setting(
        30, ge=0, le=100_000, help="> 0: stop after this many validations without a lower `early_stop_on`"
    )
    early_stop_on: str = setting(
        "loss", choices=("energy", "loss", "km"), help="loss: smooth (val km is flat while all map to one origin)"
    )
    label_smoothing: float = setting(0.0, ge=0, lt=1, help="cross-entropy smoothing over the training origins")
    net: OriginClassifierNetConfig = setting(OriginClassifierNetConfig())


# ------------------------------------------------------------------------ grids and studies
@dataclass
class GomGridConfig:
    """The paper's grids in one process: every network trained at once by the vectorized engine (gom.grid),
    with the training switches of the model config (paper defaults)."""

    kinds: list[str] = setting(["mlp"], check=_one_of(("mlp", "autoencoder")), help="the grids to train")
    depths: list[int] = setting([1, 2, 3, 4, 5], check=_ints_in(1, MAX_DEPTH), help="MLP hidden layers")
    widths: list[int] = setting([1, 2, 3, 4, 5], check=_ints_in(1, MAX_WIDTH), help="MLP neurons per layer")
    mlp_lrs: list[float] = setting([0.0001, 0.001, 0.01, 0.1, 0.2, 0.5, 0.9], check=_lrs)
    ae_hidden: list[Any] = setting(
        [[1, 67], [69, 136]], check=_hidden_ranges, help="inclusive ranges (or sizes): M1 (reduction), M2 (extraction)"
    )
    ae_lrs: list[float] = setting([0.001, 0.01, 0.1], check=_lrs)
    epochs: int = setting("${trainer.max_epochs}", ge=1, le=1_000_000, help="full-batch epochs of every network")
    bias: bool = setting("${model.net.bias}", help="the switches of the single-run model config (paper defaults)")
    grad_reduction: str = setting("${model.grad_reduction}", choices=REDUCTIONS)
    input_layer: bool = "${model.net.input_layer}"
    init_range: float = setting("${model.net.init_range}", gt=0, le=100)
    stop_energy: Optional[float] = setting("${model.stop_energy}", ge=0)
    workers: Any = setting(
        "auto", check=_workers, help="chunks of networks trained at once, one core each (auto: the usable cores)"
    )
    chunk_units: int = setting(
        1024, ge=1, le=1 << 30, help="activation rows per chunk (networks x widths): cache-sized"
    )
    threads: Optional[int] = setting(1, ge=1, le=1024, help="torch threads when workers=1 (else one per chunk)")


@dataclass
class GomStudyConfig:
    """experiment=gom_study: which autoencoders the hybrids get after the grids."""

    m1: Any = setting("auto", check=_hidden_or_auto, help="auto: the grid's best reduction autoencoder (paper 19)")
    m1_lr: float = setting(0.1, gt=0, le=MAX_LR, help="its lr when m1 is a size")
    m2: Any = setting("auto", check=_hidden_or_auto, help="auto: the grid's best extraction autoencoder (paper 87)")
    m2_lr: float = setting(0.1, gt=0, le=MAX_LR, help="its lr when m2 is a size")
    hybrid_epochs: int = setting("${trainer.max_epochs}", ge=1, le=1_000_000, help="the regressor's epochs (paper 500)")


@dataclass
class GomCVFastDevRunConfig:
    """debug=fdr asks "does it run?": two folds (at most) and small forests answer it."""

    folds: int = setting(2, ge=2, le=1000)
    forest_trees: int = setting(5, ge=1, le=100_000)


@dataclass
class GomCVConfig:
    """experiment=gom_cv*: the baselines beside the model on the same folds (training mean, k-NN, random
    forests as Zhou et al. 2014) and the threads of the folds; the folds are `cv.*` (core.cv)."""

    threads: Optional[int] = setting(
        1, ge=1, le=1024, help="torch/scikit-learn threads; small ops run fastest single-threaded on a busy machine"
    )
    forest_trees: int = setting(500, ge=1, le=100_000, help="trees of each random-forest baseline (scikit-learn)")
    forest_targets: list[str] = setting(
        list(FOREST_TARGETS), check=_one_of(FOREST_TARGETS), help="latlon (Zhou et al.) and/or unit; []: no forest"
    )
    fast_dev_run: GomCVFastDevRunConfig = setting(GomCVFastDevRunConfig())

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        folds = OmegaConf.select(root, "cv.folds", default=0)
        if folds < 2:
            raise ConfigError(f"cv.folds must be at least 2: experiment=gom_cv* is a k-fold CV (got {folds})")


def register() -> None:
    """Store this package's config group options in Hydra's ConfigStore, and the feature-count resolver."""
    OmegaConf.register_new_resolver("gom.feature_columns", _feature_columns, replace=True)
    store("data", "gom", GomDataConfig)
    store("model", "gom_mlp", SigmoidMLPConfig)
    store("model", "gom_autoencoder", AutoencoderConfig)
    store("model", "gom_hybrid", HybridRegressorConfig)
    store("model", "gom_origin_classifier", OriginClassifierConfig)
    store("grid", "gom", GomGridConfig)
    store("study", "gom", GomStudyConfig)
    store("study", "gom_cv", GomCVConfig)
