"""The digits experiments' settings (core.settings): each config group option as a dataclass that holds
every key's type, default, range and help; registered through the `hybridlearn.settings` entry point.

    data=digits      DigitSheetsDataConfig   the paper's scanned digit sheets (610 digits on four sheets)
    study=digits     DigitsStudyConfig       the `study:` of experiment=digits_study

The models are mnist's (`model=lenet5`, hybridlearn.mnist.conf) and gan's. Torch-free: read before torch
is imported."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.io import check_present
from hybridlearn.core.settings import SEED_MAX, check_settings, setting
from hybridlearn.core.settings import register as register_option
from hybridlearn.digits.manifest import BUILTIN_SHEETS, DIGITS_FILES
from hybridlearn.mnist.conf import MNIST_TRAIN, VALUE_RANGE_HELP, VALUE_RANGES

PREPROCESS = ("paper", "clean")  # hybridlearn.digits.images
MNIST_SIDE = 28  # the MNIST images `mnist_mix` adds to the batches
RUN_KEYS = ("data", "model", "trainer", "paths", "seed", "task", "entry")  # what check_run's runs need


# ------------------------------------------------------------------- checks a type cannot say
def _seeds(v: Any) -> Optional[str]:
    if len(v) and all(0 <= s <= SEED_MAX for s in v):
        return None
    return f"must list one or more seeds in [0, {SEED_MAX}]"


def _epochs(v: Any) -> Optional[str]:
    return None if len(v) and all(1 <= e <= 100_000 for e in v) else "must list one or more epochs in [1, 100000]"


def _need_seed(node: DictConfig, path: str) -> None:
    """Every seed draws its own split: `seed=null` has no meaning here."""
    for key in ("split_seed", "shuffle_seed"):
        if node[key] is None:
            raise ConfigError(
                f"{path}.{key} is null; the digits' split and batch order need a seed: set seed=<integer>"
            )


def model_side(model: Any) -> Optional[tuple[str, int]]:
    """(its key, the image side) a model reads: LeNet-5's net.in_size, a GAN generator's img_shape; None: unknown."""
    if not isinstance(model, DictConfig):
        return None
    side = OmegaConf.select(model, "net.in_size", default=None)
    if side is not None:
        return "net.in_size", side
    shape = OmegaConf.select(model, "generator.img_shape", default=None)
    return ("generator.img_shape", shape[-1]) if shape is not None else None


def check_input_size(data: DictConfig, model: Any, path: str = "data") -> None:
    """The cells' side is the side the model reads (a plain run, or each run of a study)."""
    found = model_side(model)
    if found is not None and data.size != found[1]:
        key, side = found
        raise ConfigError(
            f"{path}.size={data.size} but model.{key} reads {side}x{side} images; give {path}.size={side} "
            "(28: MNIST-like cells, 32: the paper's)"
        )


# ------------------------------------------------------------------------------------- data
@dataclass
class DigitSheetsDataConfig:
    """The paper's scanned digit sheets (610 digits on four sheets; docs/digits.md) cut into labelled cells,
    split into train/val/test (hybridlearn.digits.data.DigitSheetsDataModule)."""

    _target_: str = "hybridlearn.digits.data.DigitSheetsDataModule"
    data_dir: str = "${paths.data_dir}"
    manifest: str = setting(
        "builtin", help="builtin (the authors' sheets in $DATA_DIR/digits, md5-checked) | path/to/sheets.yaml"
    )
    extra_manifests: list[str] = setting([], help="your own sheets: more manifests, appended")
    size: int = setting(32, ge=8, le=1024, help="cell side, pixels: 32 (the paper) | 28 (MNIST)")
    preprocess: str = setting(
        "paper",
        choices=PREPROCESS,
        help="paper (plain equal cells) | clean (crop border, remove paper grey, MNIST-like centring)",
    )
    border: float = setting(0.08, ge=0, lt=0.5, help="fraction of each cell side cropped by preprocess=clean")
    despeckle: float = setting(
        0.0, ge=0, lt=0.5, help="preprocess=clean: erase ink blobs holding less than this share of the cell's ink"
    )
    value_range: str = setting("unit", choices=VALUE_RANGES, help=VALUE_RANGE_HELP)
    batch_size: int = setting(32, ge=1, le=100_000, help="Keras' default")
    eval_batch_size: int = setting(1024, ge=1, le=100_000, help="validation/test/predict batches")
    test_fraction: float = setting(0.2, gt=0, lt=1, help="610 -> 488 train+val / 122 test (the paper's 80/20)")
    val_fraction: float = setting(0.1, ge=0, lt=1, help="of the rest: 488 -> 49 val, 439 train (Keras' 0.1)")
    split_seed: Optional[int] = setting(
        "${seed}", ge=0, le=SEED_MAX, help="every seed draws its own split, as re-running the authors' notebook would"
    )
    shuffle_seed: Optional[int] = setting("${seed}", ge=0, le=SEED_MAX, help="draws the order of training batches")
    test_writer: Optional[str] = setting(
        None,
        help="leave-one-writer-out: every digit of this writer group is the test set (jpossaz | JuanRengifo | cossio)",
    )
    writer_groups: dict[str, str] = setting({}, help="{sheet file: writer group}, overrides the manifest's `writer`")
    drop_last: bool = setting(False, help="drop the last, smaller training batch of each epoch")
    download_timeout: Optional[float] = setting(30.0, gt=0, help="seconds for the sheets' (and MNIST's) downloads")
    mnist_mix: int = setting(
        0,
        ge=0,
        le=MNIST_TRAIN,
        help="MNIST training images added to every training batch (fine-tuning keeps seeing MNIST writers)",
    )

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        if node.mnist_mix and node.size != MNIST_SIDE:
            raise ConfigError(
                f"{path}.mnist_mix={node.mnist_mix} adds 28x28 MNIST images to the batches; it needs "
                f"{path}.size=28 (got {node.size})"
            )
        for key, manifest in [("manifest", node.manifest), *(("extra_manifests", m) for m in node.extra_manifests)]:
            if manifest != "builtin" and not Path(manifest).expanduser().is_file():
                raise ConfigError(
                    f"{path}.{key}: {manifest} is not a file; give a sheets YAML (docs/digits.md)"
                    + (" or builtin" if key == "manifest" else "")
                )
        if node.manifest == "builtin":  # a corrupt sheet is refused now; a missing one is fetched by the run
            check_present(Path(node.data_dir) / "digits", DIGITS_FILES, what="the paper's digit sheets")
        if node.test_writer is not None and node.manifest == "builtin" and not node.extra_manifests:
            groups = sorted({node.writer_groups.get(s["file"], s["writer"]) for s in BUILTIN_SHEETS})
            if node.test_writer not in groups:
                raise ConfigError(
                    f"{path}.test_writer={node.test_writer!r} is not a writer group; choose one of {', '.join(groups)}"
                )
        if path == "data" and not root.get("entry"):  # a plain run (an entry, such as the study, sets its own)
            _need_seed(node, path)
            check_input_size(node, root.get("model"), path)


# ------------------------------------------------------------------------------------ study
@dataclass
class StudyVariantConfig:
    """A study run's changes, merged onto the run's own data, model and trainer (variant_config)."""

    data: dict[str, Any] = setting({}, help="data settings (data=digits)")
    model: dict[str, Any] = setting({}, help="model settings (model=lenet5)")
    trainer: dict[str, Any] = setting({}, help="trainer settings")


@dataclass
class StudyAblationConfig(StudyVariantConfig):
    """An ablation: the transfer variant with these changes merged on top."""

    label: str = setting("", help="its row in study.md")


# The two models repeat experiment=lenet_digits and experiment=lenet_digits_transfer (a test keeps them equal).
PAPER = StudyVariantConfig(  # the paper's Keras LeNet-5, from scratch on 32x32 plain cells
    data={"size": 32, "preprocess": "paper", "value_range": "unit", "batch_size": 32},
    model={
        "net": {"in_size": 32, "activation": "tanh", "pool": "avg", "first_padding": 2},
        "optimizer": "adam",
        "lr": 0.001,
        "scheduler": None,
        "init": "keras",
    },
    trainer={"log_every_n_steps": 5},
)
TRANSFER = StudyVariantConfig(  # the fix: MNIST-pretrained, MNIST-like cells, augmentation, TTA
    data={
        "size": 28,
        "preprocess": "clean",
        "despeckle": 0.03,
        "value_range": "standard",
        "batch_size": 32,
        "mnist_mix": 32,
    },
    model={
        "net": {"in_size": 28, "activation": "relu", "pool": "max", "first_padding": 2},
        "optimizer": "adam",
        "lr": 0.001,
        "scheduler": "onecycle",
        "ensemble": 3,
        "pretrained": "mnist",
        "pretrain": {
            "epochs": 20,
            "augment": {"elastic": 1.5, "elastic_sigma": 4.0, "thickness": 1.0},
            "subset": None,
            "seed": 0,
        },
        "augment": {"rotate": 12, "shear": 8, "scale": [0.85, 1.15], "translate": 0.1, "thickness": 0.5, "p": 0.9},
        "tta": {"rotate": [-8, 8]},
    },
    trainer={"log_every_n_steps": 5},
)


# One network of the transfer recipe: an ablation changes one thing of it, and its baseline row is the
# ensemble's first network (the same fit, scored alone), at a third of an ensemble's cost.
SINGLE = {"ensemble": 1}


def _ablation(label: str, data: dict | None = None, model: dict | None = None) -> StudyAblationConfig:
    return StudyAblationConfig(label=label, data=data or {}, model={**SINGLE, **(model or {})})


EARLIER = {"mnist_mix": 0}  # the earlier recipe: no MNIST in the batches
ABLATIONS = {
    "from_scratch": _ablation("from scratch + augmentation (same pipeline)", model={"pretrained": None}),
    "no_augment": _ablation("pretrained, no augmentation", model={"augment": None}),
    "no_tta": _ablation("transfer, no test-time augmentation", model={"tta": None}),
    "no_despeckle": _ablation("transfer, no despeckling", data={"despeckle": 0}),
    "no_tta_no_despeckle": _ablation(
        "transfer, neither despeckling nor TTA", model={"tta": None}, data={"despeckle": 0}
    ),
    "no_mnist_mix": _ablation("transfer, no MNIST in the batches (the earlier recipe)", data=EARLIER),
    # alternatives to MNIST in the batches, each on the earlier recipe (measured for leave-one-writer-out)
    "freeze_features": _ablation("earlier recipe, conv layers frozen", data=EARLIER, model={"freeze": "features"}),
    "elastic": _ablation(
        "earlier recipe + elastic distortion", data=EARLIER, model={"augment": {"elastic": 1.0, "elastic_sigma": 4.0}}
    ),
    "low_lr": _ablation("earlier recipe, lr 3e-4", data=EARLIER, model={"lr": 0.0003}),
    "mnist_mix_96": _ablation("transfer, 96 MNIST images per batch", data={"mnist_mix": 96}),
    # the MNIST pretraining (issue 22): the earlier one, and its length without the stronger augmentation
    "earlier_pretrain": _ablation(
        "transfer, earlier MNIST pretraining (6 epochs, default augmentation)",
        model={"pretrain": {"epochs": 6, "augment": True}},
    ),
    "pretrain_20ep_default_aug": _ablation(
        "transfer, MNIST pretraining 20 epochs, default augmentation", model={"pretrain": {"augment": True}}
    ),
    "thick_strokes": _ablation(
        "transfer + stroke-width augmentation 1.0 in fine-tuning", model={"augment": {"thickness": 1.0}}
    ),
}


@dataclass
class StudyVariantsConfig:
    paper: StudyVariantConfig = setting(PAPER, help="the paper's setup (experiment=lenet_digits)")
    transfer: StudyVariantConfig = setting(TRANSFER, help="the fix (experiment=lenet_digits_transfer)")


@dataclass
class StudyPagesConfig:
    """Synthetic pages of MNIST test digits read by the transfer model (seed 0) with the sheet reader."""

    n_pages: int = setting(12, ge=1, le=1000, help="pages of each kind (100 digits each)")


@dataclass
class DigitsStudyFastDevRunConfig:
    """debug=fdr asks "does it run?": merged onto the study, with the first `n_seeds` seeds of each list."""

    n_seeds: int = setting(1, ge=1, le=1000)
    paper_epochs: list[int] = setting([1], check=_epochs)
    transfer_epochs: int = setting(1, ge=1, le=100_000)
    ablations: list[str] = setting([], help="of ablation_runs")
    lowo: bool = False
    pages: Optional[StudyPagesConfig] = None
    variants: dict[str, Any] = setting(
        {"transfer": {"model": {"pretrain": {"epochs": 1, "subset": 2000}}}}, help="merged onto study.variants"
    )


@dataclass
class DigitsStudyConfig:
    """experiment=digits_study: the paper setup over seeds (10 and 50 epochs), the transfer fix (+ ablations)
    over the same seeds, and leave-one-writer-out for both (hybridlearn.digits.study). Each variant is
    merged onto the run's data/model/trainer config; every run is checked here, before any training."""

    variants: StudyVariantsConfig = setting(StudyVariantsConfig())
    ablation_runs: dict[str, StudyAblationConfig] = setting(
        ABLATIONS, help="the transfer variant with these changes merged on top ({label, data, model})"
    )
    seeds: list[int] = setting([0, 1, 2, 3, 4], check=_seeds, help="each seed draws its own split")
    paper_epochs: list[int] = setting(
        [10, 50], check=_epochs, help="the paper setup's table rows (read from one run of the most)"
    )
    transfer_epochs: int = setting(60, ge=1, le=100_000, help="fine-tuning epochs of the transfer runs")
    ablations: list[str] = setting(
        ["from_scratch", "no_augment", "no_tta", "no_despeckle", "no_tta_no_despeckle"], help="any of ablation_runs"
    )
    lowo: bool = setting(True, help="leave-one-writer-out too")
    lowo_seeds: list[int] = setting([0, 1, 2], check=_seeds)
    lowo_ablations: list[str] = setting(
        ["no_mnist_mix"], help="ablation_runs also run leave-one-writer-out (3 writers x lowo_seeds runs each)"
    )
    pages: Optional[StudyPagesConfig] = setting(StudyPagesConfig(), help="null: skip the synthetic pages")
    threads: Optional[int] = setting(1, ge=1, le=1024, help="tiny model: one thread per run is fastest")
    zero_shot: bool = setting(True, help="also test the MNIST-pretrained model without fine-tuning")
    fast_dev_run: DigitsStudyFastDevRunConfig = setting(DigitsStudyFastDevRunConfig())

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        for key in ("ablations", "lowo_ablations", "fast_dev_run.ablations"):
            unknown = [a for a in OmegaConf.select(node, key) if a not in node.ablation_runs]
            if unknown:
                raise ConfigError(f"{path}.{key}: unknown {unknown}; choose from {', '.join(node.ablation_runs)}")
        unknown = [k for k in node.fast_dev_run.variants if k not in node.variants]
        if unknown:
            raise ConfigError(f"{path}.fast_dev_run.variants: unknown {unknown}; choose from paper, transfer")
        for where, changes in study_runs(study_settings(root) if path == "study" else node):
            check_run(root, where, *changes, path=path)


def study_settings(cfg: DictConfig) -> DictConfig:
    """`cfg.study`; under debug=fdr with `study.fast_dev_run` merged on (its `n_seeds` first seeds)."""
    st = cfg.study
    if not OmegaConf.select(cfg, "trainer.fast_dev_run", default=False):
        return st
    fdr = OmegaConf.to_container(st.fast_dev_run, resolve=True)
    n = fdr.pop("n_seeds")
    return OmegaConf.merge(st, {**fdr, "seeds": list(st.seeds)[:n], "lowo_seeds": list(st.lowo_seeds)[:n]})


def study_runs(st: DictConfig) -> list[tuple[str, tuple]]:
    """(where, changes) of every kind of run the study trains: the two variants and each ablation it
    lists (merged onto the transfer variant)."""
    used = list(st.ablations) + (list(st.lowo_ablations) if st.lowo else [])
    runs = [(f"variants.{name}", (st.variants[name],)) for name in ("paper", "transfer")]
    return runs + [(f"ablation_runs.{a}", (st.variants.transfer, st.ablation_runs[a])) for a in dict.fromkeys(used)]


def check_run(root: DictConfig, where: str, *changes: Any, path: str = "study") -> None:
    """One study run's config (the run's own with `changes` merged on) against the declarations; a
    problem is one line naming the study key and the setting."""
    try:
        # what a run's settings read (interpolations, rules), not the rest: the study alone is a big copy
        light = OmegaConf.masked_copy(root, [k for k in RUN_KEYS if k in root])
        sub = variant_config(light, *changes, seed=root.get("seed") or 0)
        for group in ("data", "model", "trainer"):
            check_settings(sub[group], group, sub)
        check_input_size(sub.data, sub.model)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}.{where}: {str(e).splitlines()[0]}") from None
    except ConfigError as e:
        raise ConfigError(f"{path}.{where}: {e}") from None


def variant_config(cfg: DictConfig, *changes: Any, seed: Optional[int]) -> DictConfig:
    """The run's config with each of `changes` (a variant, an ablation: {data, model, trainer}, or None)
    merged onto its data, model and trainer nodes, and `seed` set; interpolations such as
    ${data.value_range} resolve in the result."""
    sub = cfg.copy()
    with open_dict(sub):
        for part in changes:
            sub.merge_with({group: part[group] for group in ("data", "model", "trainer") if part and part.get(group)})
        sub.seed = seed
    return sub


def register() -> None:
    """Store this package's config group options in Hydra's ConfigStore."""
    register_option("data", "digits", DigitSheetsDataConfig)
    register_option("study", "digits", DigitsStudyConfig)
