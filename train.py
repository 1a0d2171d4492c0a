"""Entry point: `python train.py experiment=lenet_mnist` (= `hybridlearn-train ...`; see README.md and conf/)."""

from hybridlearn.core.cli import train_main

if __name__ == "__main__":
    train_main()
