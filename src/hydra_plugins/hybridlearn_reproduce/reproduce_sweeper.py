"""The sweeper of `make reproduce` (`hydra/sweeper: reproduce`, conf/hydra/sweeper/reproduce.yaml, which
experiment=reproduce selects): the reproduce plan's runs as the jobs of the configured Hydra launcher.
The work is done by `hybridlearn.reproduce.sweep`; this class is the Hydra plugin around it."""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hybridlearn.reproduce.sweep import ReproduceJob, run_reproduce, stop_file


class ReproduceSweeper(Sweeper):
    """Launches the runs of `reproduce.stages` (skipping finished ones, longest first), then writes REPORT.md."""

    def __init__(self) -> None:
        super().__init__()
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.job: ReproduceJob | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.job = ReproduceJob(task_function, stop_file(config))
        # as Hydra's BasicSweeper does, with the reproduce job around train.py's task function
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=self.job, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.job is not None
        return run_reproduce(self.config, self.launcher, self.job, arguments)
