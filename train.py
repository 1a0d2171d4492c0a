"""Entry point: `python train.py experiment=lenet_mnist` (see README.md and conf/)."""

import hydra
from omegaconf import DictConfig

from hybridlearn.cli import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
