"""Handwriting augmentation applied to whole batches of tensors (no per-sample Python work)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hybridlearn.mnist.data import background_value, to_range


def warp(z: torch.Tensor, theta: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Affine warp of [N, C, H, W] images by `theta` [N, 2, 3] (output -> input, grid units),
    plus an optional per-pixel `shift` [N, H, W, 2] of the sampling grid (grid units), bilinear,
    filling with 0: callers shift their background to 0 first."""
    grid = F.affine_grid(theta, list(z.shape), align_corners=False)
    if shift is not None:
        grid = grid + shift
    return F.grid_sample(z, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class HandwritingAugment(nn.Module):
    """Random small rotation, shear, scale and shift (one affine warp per image) and stroke
    thickness changes (grey dilation/erosion, blended by a random amount), for images with light
    ink on a dark background.

    `value_range` (unit | tanh | standard) tells which value is "no ink", so warps fill with the
    background and thickness acts on the ink. Holds no parameters or buffers, so a model that
    carries it keeps the same state_dict.
    """

    def __init__(
        self,
        rotate: float,
        shear: float,
        scale: Sequence[float],
        translate: float,
        thickness: float,
        p: float,
        value_range: str,
        elastic: float,
        elastic_sigma: float,
    ):
        """Settings and their ranges: hybridlearn.mnist.conf.HandwritingAugmentConfig."""
        super().__init__()
        self.rotate, self.shear, self.scale, self.translate = (
            rotate,
            shear,
            (float(scale[0]), float(scale[1])),
            translate,
        )
        self.thickness, self.p = thickness, p
        self.elastic, self.elastic_sigma = elastic, elastic_sigma  # pixels; elastic 0: off
        self.bg = background_value(value_range)
        self.ink = float(to_range(torch.ones(()), value_range))

    def _u(self, n: int, lo: float, hi: float, device) -> torch.Tensor:
        return torch.rand(n, device=device) * (hi - lo) + lo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        z = (x - self.bg) / (self.ink - self.bg)  # 0 = background, 1 = full ink
        rot = torch.deg2rad(self._u(n, -self.rotate, self.rotate, dev))
        sh = torch.deg2rad(self._u(n, -self.shear, self.shear, dev))
        sc = torch.exp(self._u(n, math.log(self.scale[0]), math.log(self.scale[1]), dev))
        t = self._u(2 * n, -self.translate, self.translate, dev).view(n, 2) * 2  # grid units span 2
        cos, sin, tan = torch.cos(rot), torch.sin(rot), torch.tan(sh)
        # inverse map (output -> input): rotate, shear x, then 1/scale
        a = torch.stack(
            [
                torch.stack([cos, -sin + cos * tan], -1),
                torch.stack([sin, cos + sin * tan], -1),
            ],
            1,
        )
        a = a / sc.view(n, 1, 1)
        theta = torch.cat([a, t.unsqueeze(-1)], -1)
        keep = torch.rand(n, device=dev) >= self.p
        theta[keep] = torch.eye(2, 3, device=dev)
        if self.elastic > 0:
            z = warp(z, theta, self._elastic_field(z, keep))
        else:
            z = warp(z, theta)
        if self.thickness > 0:
            dil = F.max_pool2d(z, 3, 1, 1)
            ero = -F.max_pool2d(-z, 3, 1, 1)
            amount = self._u(n, -self.thickness, self.thickness, dev).view(n, 1, 1, 1)
            amount = torch.where(keep.view(n, 1, 1, 1), torch.zeros_like(amount), amount)
            z = torch.where(amount > 0, z + amount * (dil - z), z + (-amount) * (ero - z))
        return z.clamp_(0, 1) * (self.ink - self.bg) + self.bg

    def _elastic_field(self, z: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Smooth random displacements [N, H, W, 2] in grid units (Simard et al. 2003): white
        noise blurred by a Gaussian of `elastic_sigma` pixels, scaled so its standard deviation
        is `elastic` pixels; none for the images left unaugmented."""
        n, _, h, w = z.shape
        r = int(math.ceil(2 * self.elastic_sigma))
        t = torch.arange(-r, r + 1, device=z.device, dtype=z.dtype)
        k = torch.exp(-(t**2) / (2 * self.elastic_sigma**2))
        k = k / k.sum()
        d = torch.randn(n * 2, 1, h, w, device=z.device, dtype=z.dtype)
        d = F.conv2d(F.pad(d, (r, r, 0, 0), mode="reflect" if r < w else "replicate"), k.view(1, 1, 1, -1))
        d = F.conv2d(F.pad(d, (0, 0, r, r), mode="reflect" if r < h else "replicate"), k.view(1, 1, -1, 1))
        d = d / d.flatten(1).std(1).clamp_min(1e-6).view(-1, 1, 1, 1) * self.elastic
        d = d.view(n, 2, h, w).permute(0, 2, 3, 1) * d.new_tensor([2.0 / w, 2.0 / h])
        return d * (~keep).view(n, 1, 1, 1).to(d.dtype)

    def extra_repr(self) -> str:
        return (
            f"rotate={self.rotate}, shear={self.shear}, scale={self.scale}, translate={self.translate}, "
            f"thickness={self.thickness}, p={self.p}, elastic={self.elastic}"
        )


class TestTimeAugment(nn.Module):
    """Test-time augmentation: the mean softmax of a model over the image and fixed small
    rotations of it (`rotate`, degrees; an empty list = the image only, i.e. plain prediction).

    Fixed, symmetric views rather than random ones, so predictions are deterministic. Rotation is
    about the image centre, where MNIST-like cells have their centre of mass, and fills with the
    background of `value_range`. It smooths the decision over the small slants a writer's hand
    varies by (the training augmentation's range), which matters on ambiguous digits.
    """

    def __init__(self, rotate: Sequence[float], value_range: str):
        """Settings and their ranges: hybridlearn.mnist.conf.TestTimeAugmentConfig."""
        super().__init__()
        self.rotate = [float(r) for r in rotate]
        self.bg = background_value(value_range)

    def views(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = [x]
        for deg in self.rotate:
            r = math.radians(deg)
            theta = x.new_tensor([[math.cos(r), -math.sin(r), 0.0], [math.sin(r), math.cos(r), 0.0]]).expand(
                len(x), 2, 3
            )
            out.append(warp(x - self.bg, theta) + self.bg)
        return out

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Mean class probabilities [N, classes] of `model` (which returns logits) over the views."""
        return torch.stack([F.softmax(model(v), -1) for v in self.views(x)]).mean(0)

    def extra_repr(self) -> str:
        return f"rotate={self.rotate}"
