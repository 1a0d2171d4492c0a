"""The networks of the GOM study, plain nn.Modules built from config (model.net) and handed to the
LightningModules of gom.models / gom.hybrid, which train them:

- `SigmoidMLPNet`, `AutoencoderNet`: the paper's sigmoid networks, with the shared U[-r, r]
  initialisation (the same for a network trained alone or inside the vectorized grid);
- `HybridRegressorNet` (the paper's hybrid) and `OriginClassifierNet` (beyond the paper): a
  `HybridInput` (a frozen encoder's code and/or the features) -> a head.

Also the energy and local output gradient every GOM model logs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridlearn.core.errors import ConfigError
from hybridlearn.gom.metrics import haversine_km


def init_sigmoid_params(
    sizes: Sequence[int], seed: int, bias: bool, init_range: float = 1.0, dtype: torch.dtype = torch.float32
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Weights (and biases) ~ U[-r, r], drawn layer by layer from a private generator seeded with
    `seed`: the same network gets the same start whether trained alone or inside a vectorized grid."""
    g = torch.Generator().manual_seed(int(seed))
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = (torch.rand(fan_out, fan_in, generator=g, dtype=torch.float64) * 2 - 1) * init_range
        b = (torch.rand(fan_out, generator=g, dtype=torch.float64) * 2 - 1) * init_range if bias else None
        params.append((w.to(dtype), None if b is None else b.to(dtype)))
    return params


class SigmoidNet(nn.Module):
    """Fully connected, sigmoid after every layer (output included)."""

    def __init__(self, sizes: Sequence[int], seed: int, bias: bool = True, init_range: float | None = 1.0):
        super().__init__()
        self.sizes = list(sizes)
        self.layers = nn.ModuleList(nn.Linear(i, o, bias=bias) for i, o in zip(sizes[:-1], sizes[1:]))
        if init_range is not None:
            with torch.no_grad():
                for lin, (w, b) in zip(self.layers, init_sigmoid_params(sizes, seed, bias, init_range)):
                    lin.weight.copy_(w)
                    if b is not None:
                        lin.bias.copy_(b)

    @property
    def n_inputs(self) -> int:
        return self.sizes[0]

    def forward(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        for lin in self.layers[:upto]:
            x = torch.sigmoid(lin(x))
        return x


class SigmoidMLPNet(SigmoidNet):
    """The paper's MLP: `depth` hidden layers of `width` sigmoid neurons -> 2 sigmoid outputs (scaled
    latitude, longitude); `input_layer`: the authors' extra n_in -> n_in sigmoid layer in front."""

    def __init__(
        self, n_inputs: int, depth: int, width: int, bias: bool, input_layer: bool, init_range: float, seed: int
    ):
        super().__init__(mlp_sizes(n_inputs, depth, width, 2, input_layer), seed, bias, init_range)


class AutoencoderNet(SigmoidNet):
    """n_inputs -> hidden (sigmoid) -> n_inputs (sigmoid): hidden < n_inputs reduces (M1), more extracts (M2)."""

    def __init__(self, n_inputs: int, hidden: int, bias: bool, input_layer: bool, init_range: float, seed: int):
        super().__init__(ae_sizes(n_inputs, hidden, input_layer), seed, bias, init_range)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self(x, upto=-1)


def energy_and_delta(y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample instant energy E_n = 1/2 sum_k e_k^2, mean delta_k = e_k y_k (1 - y_k), mean |delta_k|."""
    e = t - y
    delta = e * y * (1 - y)
    return (e * e).sum(-1).mul(0.5), delta.mean(), delta.abs().mean()


def mlp_sizes(n_inputs: int, depth: int, width: int, n_outputs: int = 2, input_layer: bool = False) -> list[int]:
    return [n_inputs] + ([n_inputs] if input_layer else []) + [width] * depth + [n_outputs]


def ae_sizes(n_inputs: int, hidden: int, input_layer: bool = False) -> list[int]:
    return [n_inputs] + ([n_inputs] if input_layer else []) + [hidden, n_inputs]


# ------------------------------------------------------------------------------------------ hybrids
class HybridInput(nn.Module):
    """The hybrids' input: the code of a frozen encoder (buffers, filled at fit start from the autoencoder
    the LightningModule trains first) and/or the scaled features, z-scored with the training split's
    mean and std when `standardize` (the identity until then)."""

    def __init__(
        self, n_inputs: int, code: int, ae_input_layer: bool, use_code: bool, include_features: bool, standardize: bool
    ):
        super().__init__()
        self.n_inputs, self.use_code = n_inputs, use_code
        self.include_features, self.standardize = include_features, standardize
        self.ae_sizes = ae_sizes(n_inputs, code, ae_input_layer)  # the autoencoder to pretrain
        enc = self.ae_sizes[:-1] if use_code else [n_inputs]
        for i, (a, b) in enumerate(zip(enc[:-1], enc[1:])):
            self.register_buffer(f"enc_w{i}", torch.zeros(b, a))
            self.register_buffer(f"enc_b{i}", torch.zeros(b))
        self.n_enc = len(enc) - 1
        self.size = (code if use_code else 0) + (n_inputs if include_features else 0)
        self.register_buffer("mu", torch.zeros(self.size))
        self.register_buffer("sd", torch.ones(self.size))

    def load_encoder(self, params: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        """The encoder layers of a trained autoencoder's (weight, bias or None) list."""
        with torch.no_grad():
            for i in range(self.n_enc):
                w, b = params[i]
                getattr(self, f"enc_w{i}").copy_(w)
                getattr(self, f"enc_b{i}").copy_(b if b is not None else torch.zeros_like(getattr(self, f"enc_b{i}")))

    def fit_standardizer(self, x_train: torch.Tensor) -> None:
        with torch.no_grad():
            z = self.raw(x_train.to(self.mu.dtype))
            self.mu.copy_(z.mean(0))
            self.sd.copy_(z.std(0).clamp_min(1e-6))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """[code, features] as configured, before standardization."""
        h = x
        for i in range(self.n_enc):
            h = torch.sigmoid(h @ getattr(self, f"enc_w{i}").T + getattr(self, f"enc_b{i}"))
        parts = ([h] if self.use_code else []) + ([x] if self.include_features else [])
        return torch.cat(parts, 1) if len(parts) > 1 else parts[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.raw(x)
        return (z - self.mu.to(z.dtype)) / self.sd.to(z.dtype) if self.standardize else z


class HybridRegressorNet(nn.Module):
    """The paper's hybrid network: HybridInput -> sigmoid hidden layers -> 2 sigmoid outputs (scaled
    latitude, longitude); the head's U[-r, r] init is drawn from seed + 1 (the autoencoder's from seed)."""

    def __init__(
        self,
        n_inputs: int,
        code: int,
        ae_input_layer: bool,
        use_code: bool,
        include_features: bool,
        standardize: bool,
        hidden: Sequence[int],
        bias: bool,
        init_range: float | None,
        seed: int,
    ):
        super().__init__()
        self.input = HybridInput(n_inputs, code, ae_input_layer, use_code, include_features, standardize)
        self.n_inputs = n_inputs
        self.head = SigmoidNet([self.input.size, *hidden, 2], seed + 1, bias, init_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.input(x))


class OriginMember(nn.Module):
    """One member of the origin classifier: hidden layers (sigmoid with the paper's U[-r, r] init, or ReLU
    with PyTorch's), dropout, then the logits over the `n_origins` slots."""

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int],
        n_origins: int,
        activation: str,
        dropout: float,
        bias: bool,
        init_range: float | None,
        seed: int,
    ):
        super().__init__()
        if not hidden:
            self.body: nn.Module = nn.Identity()
        elif activation == "sigmoid":
            self.body = SigmoidNet([n_in, *hidden], seed, bias, init_range)
        else:
            sizes = [n_in, *hidden]
            self.body = nn.Sequential(
                *(m for a, b in zip(sizes[:-1], sizes[1:]) for m in (nn.Linear(a, b, bias=bias), nn.ReLU()))
            )
        self.drop = nn.Dropout(dropout)
        self.logits = nn.Linear(hidden[-1] if hidden else n_in, n_origins)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits(self.drop(self.body(z)))


class OriginClassifierNet(nn.Module):
    """HybridInput -> `ensemble` members -> a posterior over the training split's distinct origins (at most
    `max_locations`, set at fit start by `set_origins`): the members' mean softmax, blended with the
    origin histogram of the `knn_k` nearest training tracks (`knn_blend`)."""

    def __init__(
        self,
        n_inputs: int,
        code: int,
        ae_input_layer: bool,
        use_code: bool,
        include_features: bool,
        standardize: bool,
        hidden: Sequence[int],
        activation: str,
        dropout: float,
        bias: bool,
        init_range: float | None,
        ensemble: int,
        max_locations: int,
        knn_blend: float,
        knn_k: int,
        seed: int,
    ):
        super().__init__()
        self.input = HybridInput(n_inputs, code, ae_input_layer, use_code, include_features, standardize)
        self.n_inputs, self.max_locations, self.knn_blend, self.knn_k = n_inputs, max_locations, knn_blend, knn_k
        self.members = nn.ModuleList(
            OriginMember(
                self.input.size, hidden, max_locations, activation, dropout, bias, init_range, seed + 1 + 1000 * i
            )
            for i in range(ensemble)
        )
        self.register_buffer("locs", torch.zeros(max_locations, 2, dtype=torch.float64))
        self.register_buffer("loc_valid", torch.zeros(max_locations, dtype=torch.bool))
        # the k-NN posterior: the training tracks' scaled features and origin index, sized by set_origins
        # (and by a loaded state dict: the training split it was saved with)
        self.register_buffer("knn_x", torch.zeros(0, n_inputs))
        self.register_buffer("knn_loc", torch.zeros(0, dtype=torch.long))
        self.register_load_state_dict_pre_hook(_size_knn_buffers)

    def set_origins(self, x_train: torch.Tensor, yd_train: torch.Tensor) -> None:
        """The training split's distinct origins (degrees, rounded to 4 decimals) and its tracks for k-NN."""
        locs = np.unique(np.round(yd_train.numpy(), 4), axis=0)
        if len(locs) > self.max_locations:
            raise ConfigError(
                f"model.net.max_locations={self.max_locations} but the training split has {len(locs)} distinct "
                "origins; raise model.net.max_locations"
            )
        with torch.no_grad():
            self.locs[: len(locs)] = torch.as_tensor(locs)
            self.loc_valid[: len(locs)] = True
            self.knn_x = x_train.detach().clone().to(self.knn_x.dtype)
            self.knn_loc = self.origin_index(yd_train)

    def origin_index(self, yd: torch.Tensor) -> torch.Tensor:
        """The slot of each (latitude, longitude) in degrees: the nearest valid origin."""
        d = (yd.double()[:, None, :] - self.locs[None]).abs().sum(-1)
        d = d.masked_fill(~self.loc_valid, float("inf"))
        return d.argmin(1)

    def member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        z = self.input(x)
        return [m(z).masked_fill(~self.loc_valid, float("-inf")) for m in self.members]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C] probability of each origin slot."""
        p = torch.stack([z.softmax(1).double() for z in self.member_logits(x)]).mean(0)
        a = self.knn_blend
        if a and len(self.knn_x):
            k = min(self.knn_k, len(self.knn_x))
            idx = torch.cdist(x.double(), self.knn_x.double()).topk(k, largest=False).indices
            q = torch.zeros_like(p).scatter_add_(1, self.knn_loc[idx], torch.full(idx.shape, 1.0 / k, dtype=p.dtype))
            p = (1 - a) * p + a * q
        return p

    def decide(self, p: torch.Tensor) -> torch.Tensor:
        """[N, 2] degrees: the origin with the least expected great-circle distance under posterior `p`."""
        L = self.locs
        D = haversine_km(L[:, None, 0], L[:, None, 1], L[None, :, 0], L[None, :, 1])  # [C, C]
        cost = (p @ D).masked_fill(~self.loc_valid, float("inf"))
        return L[cost.argmin(1)]


def _size_knn_buffers(net: OriginClassifierNet, state_dict: dict[str, torch.Tensor], prefix: str, *_: Any) -> None:
    """Before a state dict loads into `net` (load_state_dict's pre-hook): the k-NN buffers take its sizes."""
    for name in ("knn_x", "knn_loc"):
        if prefix + name in state_dict:
            setattr(net, name, torch.empty_like(state_dict[prefix + name], device=getattr(net, name).device))
