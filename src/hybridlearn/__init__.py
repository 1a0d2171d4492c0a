"""hybridlearn: Lightning + Hydra reproduction of "Hybrid supervised learning: autoencoders,
CNNs and GANs" (Banoy, Rengifo, Cardeno, 2023)."""

__version__ = "0.1.0"
