"""The GAN's networks: plain nn.Modules built from config (`model.generator`, `model.discriminator`)
and handed to the GAN LightningModule (hybridlearn.gan.model).

- `MLPGenerator` / `MLPDiscriminator`: the paper's fully connected networks (the defaults);
- `DCGenerator` / `DCDiscriminator`: DCGAN-style convolutional networks for 28x28 images
  (Radford et al. 2016), sized to train in the MLP GAN's time (benchmarks/bench_gan.py --dcgan).

Their settings, with types, ranges and defaults, are declared in hybridlearn.gan.conf
(MLPGeneratorConfig, ...; checked before torch is imported); build them from those dataclasses.

Each network keeps `spec`, the `{_target_: ..., **arguments}` mapping it was built from; the GAN
saves it in its checkpoints' hyper-parameters, and `build_net` rebuilds the network from it (only
the classes of NETWORKS: a checkpoint names a class, it cannot import code). Generators have
`latent_dim` and `img_shape`; discriminators return logits from `logits(x)` and P(real) from
`forward(x)`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hybridlearn.core.config import plain
from hybridlearn.core.errors import ConfigError


def spec_of(net: nn.Module, **args: Any) -> dict[str, Any]:
    """The `{_target_, **args}` mapping that rebuilds `net` (plain values only: checkpoints load
    with weights_only=True)."""
    cls = type(net)
    values = {k: plain(v) for k, v in args.items()}  # Hydra's ListConfig -> list
    return {
        "_target_": f"{cls.__module__}.{cls.__qualname__}",
        **{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()},
    }


class GenDropout(nn.Dropout):
    """nn.Dropout drawing its masks from `self.generator` (the GAN's private RNG) when one is set."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.generator is None:
            return super().forward(x)
        mask = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator).mul_(1 / (1 - self.p))
        return x * mask


def maybe_sn(layer: nn.Module, spectral_norm: bool) -> nn.Module:
    """`layer` with its weight divided by its largest singular value (Miyato et al. 2018) when asked."""
    return nn.utils.parametrizations.spectral_norm(layer) if spectral_norm else layer


class Discriminator(nn.Module):
    """What the GAN needs of a discriminator: `logits(x)` (the losses take logits), P(real) from forward."""

    net: nn.Sequential

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """P(real) per image."""
        return torch.sigmoid(self.logits(x))


# ------------------------------------------------------------------------------ the paper's MLPs
class MLPGenerator(nn.Module):
    """latent -> hidden... -> prod(img_shape), LeakyReLU after each hidden layer, tanh output
    (images in [-1, 1]). Paper: 128 -> 256 -> 512 -> 1024 -> 784."""

    def __init__(self, latent_dim: int, hidden: Sequence[int], img_shape: Sequence[int], negative_slope: float):
        super().__init__()
        self.latent_dim, self.img_shape = latent_dim, tuple(img_shape)
        self.spec = spec_of(
            self, latent_dim=latent_dim, hidden=hidden, img_shape=img_shape, negative_slope=negative_slope
        )
        layers: list[nn.Module] = []
        d = latent_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LeakyReLU(negative_slope, inplace=True)]
            d = h
        layers += [nn.Linear(d, math.prod(self.img_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.img_shape)


class MLPDiscriminator(Discriminator):
    """prod(img_shape) -> hidden... -> 1, LeakyReLU + dropout after each hidden layer. Paper:
    784 -> 1024 -> 512 -> 256 -> 1, dropout 0.3. `spectral_norm`: every linear layer spectrally
    normalised (beyond the paper)."""

    def __init__(
        self,
        img_shape: Sequence[int],
        hidden: Sequence[int],
        negative_slope: float,
        dropout: float,
        spectral_norm: bool,
    ):
        super().__init__()
        self.spec = spec_of(
            self,
            img_shape=img_shape,
            hidden=hidden,
            negative_slope=negative_slope,
            dropout=dropout,
            spectral_norm=spectral_norm,
        )
        layers: list[nn.Module] = []
        d = math.prod(img_shape)
        for h in hidden:
            layers += [maybe_sn(nn.Linear(d, h), spectral_norm), nn.LeakyReLU(negative_slope, inplace=True)]
            if dropout > 0:
                layers.append(GenDropout(dropout))
            d = h
        layers.append(maybe_sn(nn.Linear(d, 1), spectral_norm))
        self.net = nn.Sequential(*layers)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        # flattened here, not by a layer of `net`: its layer numbers are those of earlier checkpoints
        return self.net(x.flatten(1)).squeeze(1)


# ----------------------------------------------------------------------------- DCGAN for 28x28
def _conv_size(img_shape: Sequence[int], n: int) -> tuple[int, int]:
    """The feature map side at the bottom of `n` stride-2 layers (H, W divisible by 2**n: the config's rule)."""
    _, h, w = img_shape
    return h // 2**n, w // 2**n


class DCGenerator(nn.Module):
    """DCGAN generator for small images: z -> linear -> channels[0] x H/2^k x W/2^k, then k
    transposed convolutions (4x4, stride 2), BatchNorm + ReLU between, tanh output. For 28x28 and
    channels (c0, c1): 7x7 -> 14x14 (c1) -> 28x28 (image channels)."""

    def __init__(self, latent_dim: int, channels: Sequence[int], img_shape: Sequence[int], batch_norm: bool):
        super().__init__()
        self.latent_dim, self.img_shape = latent_dim, tuple(img_shape)
        self.spec = spec_of(self, latent_dim=latent_dim, channels=channels, img_shape=img_shape, batch_norm=batch_norm)
        h, w = _conv_size(img_shape, len(channels))

        def norm_relu(c: int, two_d: bool = True) -> list[nn.Module]:
            bn = (nn.BatchNorm2d(c) if two_d else nn.BatchNorm1d(c)) if batch_norm else nn.Identity()
            return [bn, nn.ReLU(inplace=True)]

        c0 = channels[0]
        layers: list[nn.Module] = [
            nn.Linear(latent_dim, c0 * h * w, bias=not batch_norm),
            *norm_relu(c0 * h * w, two_d=False),
            nn.Unflatten(1, (c0, h, w)),
        ]
        outs = [*channels[1:], img_shape[0]]
        for i, (cin, cout) in enumerate(zip(channels, outs)):
            last = i == len(outs) - 1
            layers.append(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=last or not batch_norm))
            layers += [nn.Tanh()] if last else norm_relu(cout)
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class DCDiscriminator(Discriminator):
    """DCGAN discriminator for small images: stride-2 4x4 convolutions (channels...) with LeakyReLU,
    then a linear layer to one logit. No BatchNorm (D sees real and fake in one batch, and spectral
    norm is its normaliser when on); optional dropout after each convolution (the private RNG's)."""

    def __init__(
        self,
        img_shape: Sequence[int],
        channels: Sequence[int],
        negative_slope: float,
        dropout: float,
        spectral_norm: bool,
    ):
        super().__init__()
        self.spec = spec_of(
            self,
            img_shape=img_shape,
            channels=channels,
            negative_slope=negative_slope,
            dropout=dropout,
            spectral_norm=spectral_norm,
        )
        h, w = _conv_size(img_shape, len(channels))
        layers: list[nn.Module] = []
        cin = img_shape[0]
        for c in channels:
            layers += [maybe_sn(nn.Conv2d(cin, c, 4, 2, 1), spectral_norm), nn.LeakyReLU(negative_slope, inplace=True)]
            if dropout > 0:
                layers.append(GenDropout(dropout))
            cin = c
        layers += [nn.Flatten(), maybe_sn(nn.Linear(cin * h * w, 1), spectral_norm)]
        self.net = nn.Sequential(*layers)


NETWORKS: dict[str, type[nn.Module]] = {
    f"{c.__module__}.{c.__qualname__}": c for c in (MLPGenerator, MLPDiscriminator, DCGenerator, DCDiscriminator)
}


def build_net(spec: Mapping[str, Any], what: str) -> nn.Module:
    """The network a `{_target_: <a class of NETWORKS>, **arguments}` mapping describes."""
    target = spec.get("_target_")
    if target not in NETWORKS:
        raise ConfigError(f"{what}: _target_ {target!r} is not one of the GAN's networks ({', '.join(NETWORKS)})")
    try:
        return NETWORKS[target](**{k: v for k, v in spec.items() if k != "_target_"})
    except TypeError as e:
        raise ConfigError(f"{what}: {e}") from None
