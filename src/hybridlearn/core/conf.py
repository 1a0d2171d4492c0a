"""The framework's own settings (core.settings): the run's top-level keys, `trainer`, `paths`, the
callbacks and loggers every experiment can use. Registered by `register_core()` before Hydra composes
`conf/train.yaml`; the experiments register theirs through the `hybridlearn.settings` entry points."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.results import SEED
from hybridlearn.core.settings import SEED_MAX, positive_int_or, register, setting

TASKS = ("fit", "test", "predict")
MAX_TASK_NAME = 100  # the run folder is <log_dir>/<task_name>/runs/<time>: keep it a sane file name
PRECISIONS = (
    64,
    32,
    16,
    "64",
    "32",
    "16",
    "bf16",
    "64-true",
    "32-true",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
)


# ---------------------------------------------------------------------------------- the run
@dataclass
class CVConfig:
    """k-fold cross-validation of any experiment whose data module lists its samples (core.cv)."""

    folds: int = setting(0, ge=0, le=10_000, help="k of k-fold CV; 0: no CV (a plain fit)")
    seed: Optional[int] = setting("${seed}", ge=0, le=SEED_MAX, help="draws the fold assignment")
    group_by: Optional[str] = setting(None, help="a sample attribute whose values stay in one fold (writer)")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        if node.folds == 1:
            raise ConfigError(f"{path}.folds must be 0 (no CV) or at least 2 (got 1)")
        if node.folds and root.get("task", "fit") != "fit":
            raise ConfigError(
                f"{path}.folds={node.folds} trains a model per fold: it needs task=fit (got task={root.task})"
            )
        if node.group_by and not node.folds:
            raise ConfigError(f"{path}.group_by={node.group_by} needs {path}.folds (e.g. the number of groups)")


def _seed_list(v: Any) -> Optional[str]:
    if any(not 0 <= s <= SEED_MAX for s in v):
        return f"must hold seeds in [0, {SEED_MAX}]"
    return "must list each seed once" if len(set(v)) < len(v) else None


@dataclass
class RepeatConfig:
    """One run over several training seeds of any experiment (core.repeat): each seed a fit into
    seed_<s>/, the run's metrics their mean (a sweeper scores a trial on it), `<metric>_seed_std` their spread."""

    seeds: list[int] = setting([], check=_seed_list, help="training seeds, e.g. [10,11,12]; []: one fit of `seed`")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        if not node.seeds:
            return
        if root.get("task", "fit") != "fit":
            raise ConfigError(f"{path}.seeds trains a model per seed: it needs task=fit (got task={root.task})")
        if OmegaConf.select(root, "cv.folds", default=0):
            raise ConfigError(f"{path}.seeds and cv.folds cannot be combined; give one of them")
        ckpt = root.get("ckpt_path")
        if ckpt and not Path(ckpt).expanduser().resolve().parent.parent.name.startswith(SEED):
            raise ConfigError(
                f"{path}.seeds trains each seed from scratch: ckpt_path={ckpt} can only resume a killed run of "
                "these seeds in place (ckpt_path=<run>/seed_<s>/checkpoints/last.ckpt, hydra.run.dir=<run>)"
            )


@dataclass
class RunConfig:
    """The top-level keys of every run (conf/train.yaml sets the groups)."""

    task_name: str = setting("train", help="the run folder is <log_dir>/<task_name>/runs/<time>")
    tags: list[str] = setting([], help="labels for trackers (W&B)")
    seed: Optional[int] = setting(42, ge=0, le=SEED_MAX, help="seeds python, numpy and torch; null: unseeded")
    task: str = setting("fit", choices=TASKS, help="fit (train, then test the best checkpoint) | test | predict")
    test: bool = setting(True, help="after fit, test the best checkpoint")
    ckpt_path: Optional[str] = setting(None, help="a .ckpt to resume (fit) or evaluate (test/predict); last: newest")
    entry: Optional[str] = setting(None, help="'package.module:function' replacing the standard flow (studies)")
    print_config: bool = setting(False, help="print the composed config (YAML) at start")
    optimized_metric: Optional[str] = setting(None, help="the metric a sweeper (Optuna) optimizes")
    malloc_keep_mb: Optional[int] = setting(
        None, ge=0, le=1 << 20, help="MiB of freed memory glibc keeps for reuse (core/memory.py); null: glibc's default"
    )
    matmul_precision: str = setting("high", choices=("highest", "high", "medium"), help="CUDA float32 matmuls")
    cv: CVConfig = setting(CVConfig(), help="k-fold cross-validation")
    repeat: RepeatConfig = setting(RepeatConfig(), help="one run over several training seeds")
    # the config groups (each checked against its own settings)
    data: Any = None
    model: Any = None
    trainer: Any = None
    callbacks: Any = None
    logger: Any = None
    paths: Any = None
    # what an experiment's entry reads beside the groups (digits/gom studies, grids, make reproduce),
    # each checked against the settings its experiment registers for it
    study: Any = None
    grid: Any = None
    reproduce: Any = None
    # the style command's arguments (experiment=style_video: `stylize.py input=... style=... output=...`)
    input: Optional[str] = None
    style: Optional[str] = None
    output: Optional[str] = None
    overwrite: bool = False

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        check_task_name(node.task_name)
        if node.task == "test" and not node.entry and not node.ckpt_path:
            raise ConfigError(
                "task=test needs ckpt_path=<a .ckpt of this experiment> (testing untrained weights means nothing)"
            )
        if node.ckpt_path and not Path(node.ckpt_path).expanduser().is_file():
            raise ConfigError(
                f"ckpt_path={node.ckpt_path} is not a file; give the path of a .ckpt (e.g. "
                "<run>/checkpoints/last.ckpt), or ckpt_path=last for the newest run of this task_name"
            )


def check_task_name(name: str) -> str:
    """A task_name is one folder name under the log folder: never a path that leaves it."""
    if len(name) > MAX_TASK_NAME or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ConfigError(
            f"task_name must be a file name of at most {MAX_TASK_NAME} characters, not '.' or '..' and "
            f"without '/' (got {name[:40]!r})"
        )
    return name


# -------------------------------------------------------------------------------- trainer
def _devices_available(accelerator: str) -> int | None:
    """How many devices of `accelerator` this machine has, asked without torch; None: cannot tell."""
    if accelerator == "cpu":
        return os.cpu_count() or 1
    if accelerator in ("gpu", "cuda"):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = Path("/proc/driver/nvidia/gpus")
        found = len(list(gpus.iterdir())) if gpus.is_dir() else 0
        if visible is not None:
            found = min(found, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
        return found
    return None  # tpu, mps, auto: Lightning checks them


@dataclass
class TrainerConfig:
    """Lightning's Trainer arguments that a config may set (lightning.pytorch.Trainer)."""

    _target_: str = "lightning.pytorch.trainer.Trainer"
    default_root_dir: Optional[str] = "${paths.output_dir}"
    accelerator: str = setting("cpu", choices=("cpu", "gpu", "cuda", "mps", "tpu", "auto"))
    strategy: str = setting("auto", help="auto | ddp | ddp_spawn | ddp_find_unused_parameters_true | fsdp ...")
    devices: Any = setting(1, check=positive_int_or("auto"), help="how many devices (per node), or auto")
    num_nodes: int = setting(1, ge=1)
    precision: Any = setting("32-true", choices=PRECISIONS)
    fast_dev_run: Any = setting(False, help="true or N: run N batches of each split (debug)")
    max_epochs: Optional[int] = setting(10, ge=-1, help="-1: until stopped (only models without a finite schedule)")
    min_epochs: Optional[int] = setting(1, ge=0)
    max_steps: int = setting(-1, ge=-1)
    min_steps: Optional[int] = setting(None, ge=0)
    max_time: Optional[str] = setting(None, help="DD:HH:MM:SS")
    limit_train_batches: Optional[float] = setting(None, ge=0)
    limit_val_batches: Optional[float] = setting(None, ge=0)
    limit_test_batches: Optional[float] = setting(None, ge=0)
    limit_predict_batches: Optional[float] = setting(None, ge=0)
    overfit_batches: float = setting(0.0, ge=0)
    val_check_interval: Optional[float] = setting(None, gt=0)
    check_val_every_n_epoch: Optional[int] = setting(1, ge=1)
    num_sanity_val_steps: Optional[int] = setting(2, ge=-1)
    log_every_n_steps: Optional[int] = setting(50, ge=1)
    enable_checkpointing: Optional[bool] = None
    enable_progress_bar: Optional[bool] = True
    enable_model_summary: Optional[bool] = None
    accumulate_grad_batches: int = setting(1, ge=1)
    gradient_clip_val: Optional[float] = setting(None, ge=0)
    gradient_clip_algorithm: Optional[str] = setting(None, choices=(None, "norm", "value"))
    deterministic: Optional[bool] = setting(
        None, help="true: deterministic kernels (torch.use_deterministic_algorithms)"
    )
    benchmark: Optional[bool] = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    profiler: Optional[str] = setting(None, choices=(None, "simple", "advanced", "pytorch"))
    detect_anomaly: bool = False
    barebones: bool = False
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = setting(0, ge=0)

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        if node.max_epochs == 0:
            raise ConfigError(f"{path}.max_epochs must be a positive integer or -1 (got 0)")
        if isinstance(node.fast_dev_run, bool) or node.fast_dev_run is None:
            pass
        elif not isinstance(node.fast_dev_run, int) or node.fast_dev_run < 0:
            raise ConfigError(
                f"{path}.fast_dev_run must be true, false or a number of batches (got {node.fast_dev_run!r})"
            )
        have = _devices_available(node.accelerator)
        if have == 0:
            raise ConfigError(
                f"{path}.accelerator={node.accelerator}, but this machine has no NVIDIA GPU (or CUDA_VISIBLE_DEVICES "
                "hides them); use trainer=cpu"
            )
        if have is not None and isinstance(node.devices, int) and node.devices > have:
            raise ConfigError(
                f"{path}.devices={node.devices}, but this machine has {have} {node.accelerator} device(s); "
                f"give trainer.devices <= {have}"
            )


# ---------------------------------------------------------------------------------- paths
@dataclass
class PathsConfig:
    """Where things are read from and written to; relative paths are relative to where you run."""

    root_dir: str = "${oc.env:PROJECT_ROOT,.}"
    data_dir: str = setting(
        "${oc.env:DATA_DIR,${paths.root_dir}/data}", help="data sets (DATA_DIR); fetched when missing"
    )
    log_dir: str = "${oc.env:HYBRIDLEARN_LOG_DIR,${paths.root_dir}/lightning_logs}"
    output_dir: str = "${hydra:runtime.output_dir}"
    cache_dir: str = setting(
        "${oc.env:HYBRIDLEARN_CACHE,${oc.env:HOME,.}/.cache/hybridlearn}",
        help="converted style weights, pretrained LeNets",
    )

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        data_dir = OmegaConf.select(node, "data_dir", default=None)
        if data_dir and Path(str(data_dir)).exists() and not Path(str(data_dir)).is_dir():
            raise ConfigError(f"DATA_DIR={data_dir} is a file, not a folder; point DATA_DIR at the data folder")


# ------------------------------------------------------------------------------ callbacks
@dataclass
class ModelCheckpointConfig:
    """Best (by `monitor`) and last checkpoints; experiments set monitor/mode."""

    _target_: str = "lightning.pytorch.callbacks.ModelCheckpoint"
    dirpath: Optional[str] = "${paths.output_dir}/checkpoints"
    filename: Optional[str] = "epoch_{epoch:03d}"
    monitor: Optional[str] = "val/acc"
    mode: str = setting("max", choices=("min", "max"))
    # true: checkpoints/last.ckpt at each save point, improved or not (core.checkpoint.LastCheckpoint)
    save_last: Optional[bool] = True
    save_top_k: int = setting(1, ge=-1)
    auto_insert_metric_name: bool = False
    every_n_epochs: Optional[int] = setting(1, ge=0)
    every_n_train_steps: Optional[int] = setting(None, ge=0)
    save_weights_only: bool = False
    save_on_train_epoch_end: Optional[bool] = None
    verbose: bool = False


@dataclass
class EarlyStoppingConfig:
    _target_: str = "lightning.pytorch.callbacks.EarlyStopping"
    monitor: str = "${callbacks.model_checkpoint.monitor}"
    mode: str = setting("${callbacks.model_checkpoint.mode}", choices=("min", "max"))
    patience: int = setting(5, ge=0)
    min_delta: float = setting(0.0, ge=0)
    check_finite: bool = True


@dataclass
class LearningRateMonitorConfig:
    """The learning rate per step in the loggers."""

    _target_: str = "lightning.pytorch.callbacks.LearningRateMonitor"
    logging_interval: Optional[str] = setting("step", choices=(None, "step", "epoch"))


@dataclass
class ModelSummaryConfig:
    _target_: str = "lightning.pytorch.callbacks.ModelSummary"
    max_depth: int = setting(2, ge=-1)


@dataclass
class ProgressBarConfig:
    """One progress bar that looks the same whether or not `rich` is installed."""

    _target_: str = "lightning.pytorch.callbacks.TQDMProgressBar"
    refresh_rate: int = setting(1, ge=0)


@dataclass
class RNGStateConfig:
    """RNG states in checkpoints, so resumed seeded runs match uninterrupted ones exactly."""

    _target_: str = "hybridlearn.core.callbacks.RNGStateCallback"


@dataclass
class FiniteLossConfig:
    """Stops a run as failed when a loss is NaN/infinite or has grown `divergence_factor` times its first value."""

    _target_: str = "hybridlearn.core.callbacks.FiniteLoss"
    divergence_factor: Optional[float] = setting(1e6, gt=1, help="null: only NaN/inf stop a run")


@dataclass
class LearningCurvesConfig:
    """learning_curves.png in the run folder (and TensorBoard / W&B) at the end of fit."""

    _target_: str = "hybridlearn.core.callbacks.LearningCurves"


@dataclass
class EpochTimeConfig:
    """Per epoch, time/train_s, time/samples_per_s (training throughput) and time/epoch_s in the logs and results.json."""

    _target_: str = "hybridlearn.core.callbacks.EpochTime"


# -------------------------------------------------------------------------------- loggers
@dataclass
class CSVLoggerConfig:
    _target_: str = "lightning.pytorch.loggers.csv_logs.CSVLogger"
    save_dir: str = "${paths.output_dir}"
    name: str = "csv"
    version: Any = ""
    prefix: str = ""


@dataclass
class TensorBoardLoggerConfig:
    _target_: str = "lightning.pytorch.loggers.tensorboard.TensorBoardLogger"
    save_dir: str = "${paths.output_dir}"
    name: str = "tensorboard"
    version: Any = ""
    log_graph: bool = False
    default_hp_metric: bool = False
    prefix: str = ""


@dataclass
class WandbLoggerConfig:
    """Weights & Biases, offline by default (runs land in <run dir>/wandb/; `wandb sync` uploads them)."""

    _target_: str = "lightning.pytorch.loggers.wandb.WandbLogger"
    _convert_: str = "all"  # plain dicts for wandb.init (it ignores a DictConfig `settings`)
    project: str = "hybridlearn"
    name: Optional[str] = "${run_label:${task_name}}"
    save_dir: str = "${paths.output_dir}"
    mode: str = setting("offline", choices=("offline", "online", "disabled"), help="online: after `wandb login`")
    offline: bool = False
    id: Optional[str] = setting(None, help="set at start and kept in results.json, so a resume continues it")
    resume: Optional[str] = setting(None, choices=(None, "allow", "must", "never"))
    entity: Optional[str] = None
    group: str = ""
    tags: list[str] = setting("${tags}")
    log_model: Any = setting(False, help="true: upload checkpoints as artifacts at the end; all: every save")
    job_type: str = ""
    settings: dict[str, Any] = setting({"silent": True, "console": "off"}, help="wandb.Settings: quiet console")

    @staticmethod
    def rules(node: DictConfig, path: str, root: DictConfig) -> None:
        if node.mode == "online" and not _wandb_logged_in():
            raise ConfigError(
                f"{path}.mode=online, but W&B has no API key here; run `wandb login` (or set WANDB_API_KEY), "
                "or log offline and `wandb sync` later"
            )


def _wandb_logged_in() -> bool:
    """W&B's two places for a key, read without importing wandb: $WANDB_API_KEY and ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def register_core() -> None:
    """The root settings and the framework's config group options (conf/ holds the compositions)."""
    register(None, "run_settings", RunConfig)
    register("trainer", "default", TrainerConfig)
    register("paths", "default", PathsConfig)
    for name, node in {
        "model_checkpoint": ModelCheckpointConfig,
        "early_stopping": EarlyStoppingConfig,
        "lr_monitor": LearningRateMonitorConfig,
        "model_summary": ModelSummaryConfig,
        "progress_bar": ProgressBarConfig,
        "rng_state": RNGStateConfig,
        "finite_loss": FiniteLossConfig,
        "learning_curves": LearningCurvesConfig,
        "epoch_time": EpochTimeConfig,
    }.items():
        register("callbacks", name, {name: node})
    for name, node in {
        "csv": CSVLoggerConfig,
        "tensorboard": TensorBoardLoggerConfig,
        "wandb": WandbLoggerConfig,
    }.items():
        register("logger", name, {name: node})
