"""The reproduce experiments' settings (core.settings): the `reproduce:` block of `experiment=reproduce`
as a dataclass that holds every key's type, default, range and help; registered through the
`hybridlearn.settings` entry point. What each stage runs at each scale (`reproduce.scale`) is a nested
mapping of the experiments' own settings, filled in by conf/experiment/reproduce.yaml."""

import os
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from hybridlearn.core.settings import register as store
from hybridlearn.core.settings import setting

# the experiments' reproduce modules, in report order (hybridlearn.reproduce.registry)
MODULES = [
    "hybridlearn.gom.reproduce",
    "hybridlearn.digits.reproduce",
    "hybridlearn.gan.reproduce",
    "hybridlearn.style.reproduce",
]


@dataclass
class ReproduceConfig:
    """`make reproduce`: every run of the selected stages, one Hydra sweep into one folder, then REPORT.md."""

    stages: list[str] = setting(
        ["gom", "digits", "gan", "style"],
        help="the stages to run, of the modules' (gom, digits, gan, gan_modern, gan_dcgan, style)",
    )
    modules: list[str] = setting(
        MODULES, help="each experiment's reproduce module (its stages, plans and report sections), in report order"
    )
    quick: bool = setting(False, help="reduced settings (reproduce.scale.quick): the pipeline in minutes")
    dir: str = setting(
        "${paths.log_dir}/reproduce/${if:${reproduce.quick},quick,paper}",
        help="the reproduce folder, one per scale; stable, so a second run finds the first's results",
    )
    # paper-scale seconds of one run of each stage (of `cost` 1; a GOM CV costs 5 studies), measured on
    # 2 CPU cores with one thread per run (2026-12-06, benchmarks/RESULTS.md: a GAN run 96 min beside
    # GOM + digits + style, ~47 min alone on two threads). A run's expected time is its cost times its
    # stage's value, so the estimates follow the seeds and folds a plan has; they order the runs
    # longest first.
    expected_s: dict[str, float] = setting(
        {"gom": 127.5, "digits": 832, "gan": 5760, "gan_modern": 5900, "gan_dcgan": 5760, "style": 25},
        help="expected seconds of a run of cost 1 of each stage at the paper's scale (one thread per run)",
    )
    expected_quick_s: dict[str, float] = setting(
        {"gom": 21.4, "digits": 29.7, "gan": 40, "gan_modern": 45, "gan_dcgan": 45, "style": 6},
        help="expected seconds of a run of cost 1 of each stage with reproduce.quick",
    )
    gif_max_mb: float = setting(2.0, gt=0, le=100, help="largest animated GIF the report keeps")
    video_frames: int = setting(4, ge=1, le=64, help="stylized frames shown in the report (from the per-frame video)")
    # {paper: {<stage>: {...}}, quick: {<stage>: {...}}}; in each stage `set` is a nested mapping of config
    # keys, flattened to key=value overrides of every run of the stage (conf/experiment/reproduce.yaml)
    scale: Any = setting(None, help="what each stage runs at each scale (paper, quick)")


def cores_upto(most: Any) -> int:
    """`${cores_upto:2}`: the cores this process may use, at most `most` (>= 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(int(most), cores))


def register() -> None:
    """Store `reproduce=default` (experiment=reproduce takes it) in Hydra's ConfigStore."""
    store("reproduce", "default", ReproduceConfig)
    # the local launcher's processes (conf/hydra/launcher/reproduce.yaml): 2 on 2 cores or more, 1 on 1
    OmegaConf.register_new_resolver("cores_upto", cores_upto, replace=True)
