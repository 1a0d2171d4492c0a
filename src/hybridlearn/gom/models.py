"""GOM study models (paper section on autoencoders + MLP regressors of music origin).

- `SigmoidMLP`: L hidden layers of l sigmoid neurons, sigmoid output, weights U[-1,1], full-batch
  gradient descent on the instant energy E = 1/2 sum_k e_k^2.
- `Autoencoder`: one hidden sigmoid layer, reconstructs the scaled features (68, or 116 with
  `data.features=chromatic`).
- `GomHybrid`: a (pre-trained, frozen) autoencoder's code -> sigmoid MLP regressor of latitude and
  longitude.

Authors' code quirks are named switches (paper text is the default):
  grad_reduction: mean | sum   gradient of the average energy (paper) or of the summed energy
  bias: true | false           bias terms (the authors' networks had none)
  input_layer: false | true    an extra n_in -> n_in sigmoid layer in front (authors' "input layer")
(and in the data config: target_scaling per_column | joint, n_features 68 | 67).

Logged per epoch, train and val: `energy` (average instant energy, mean over samples of
1/2 sum_k e_k^2) and `delta` (mean local output gradient delta_k = e_k * phi'(v_k), averaged over
samples and output neurons; `delta_abs` is the mean of |delta_k|), as Lightning's epoch means.
Stopping goes through Lightning's EarlyStopping: the paper's energy < `stop_energy` rule
(`stopping_threshold` on train/energy) and the hybrid's `early_stop_patience`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torchmetrics import CatMetric

from hybridlearn.core.config import check_choice, check_float, check_fraction, check_int, check_int_list
from hybridlearn.core.errors import ConfigError
from hybridlearn.gom.data import FEATURE_SETS, GomData
from hybridlearn.gom.grid import NetSpec, train_sigmoid_grid
from hybridlearn.gom.metrics import baselines, geo_metrics, haversine_km
from hybridlearn.gom.nets import SigmoidNet, ae_sizes, energy_and_delta, mlp_sizes

MAX_DEPTH, MAX_WIDTH, MAX_LR = 16, 4096, 10.0
MAX_INPUTS = max(fs.n_features for fs in FEATURE_SETS.values())


class GomEarlyStopping(EarlyStopping):
    """A GOM model's own stopping rule (from `configure_callbacks`), through Lightning's EarlyStopping.

    A subclass only because Lightning replaces a trainer callback of the *same type* by the model's:
    a run's own `callbacks=early_stopping` then stays beside this one.
    """


def energy_stop(threshold: float) -> GomEarlyStopping:
    """The paper's rule: stop once the average training energy of an epoch is below `threshold`
    (`stopping_threshold`; the patience never runs out; NaN does not stop, as in the grid engine)."""
    return GomEarlyStopping(
        monitor="train/energy",
        mode="min",
        stopping_threshold=threshold,
        patience=sys.maxsize,
        check_on_train_epoch_end=True,
        check_finite=False,
    )


# ---------------------------------------------------------------------------------- sigmoid nets
class _GomBase(L.LightningModule):
    """Scalers as buffers (saved in checkpoints), per-epoch histories, km/R^2 test metrics.

    Per-epoch values are Lightning's own epoch means of what the steps log (weighted by batch size,
    logged in float64 so the means are exact); `history` copies them from `trainer.callback_metrics`
    at each epoch end, for results.json and the reports.
    """

    n_outputs = 2
    # per split: the logged `<split>/<name>` values kept per epoch in history["<split>_<name>"]
    history_keys: dict[str, tuple[str, ...]] = {
        "train": ("energy", "delta", "delta_abs"),
        "val": ("energy", "delta", "delta_abs"),
    }

    def _init_common(self, n_inputs: int, n_outputs: int) -> None:
        for name, n in (("x_lo", n_inputs), ("x_span", n_inputs), ("y_lo", n_outputs), ("y_span", n_outputs)):
            self.register_buffer(name, torch.zeros(n, dtype=torch.float64))
        self.history: dict[str, list[float]] = {f"{s}_{k}": [] for s, ks in self.history_keys.items() for k in ks}
        self.extra_results: dict[str, Any] = {}
        # test predictions and truths in degrees, gathered over the test batches (float64, NaN kept)
        self.test_pred = CatMetric(nan_strategy="disable")
        self.test_true = CatMetric(nan_strategy="disable")

    # ---- data hooks
    def _dm_data(self) -> GomData | None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return getattr(dm, "data", None)

    def setup(self, stage: str) -> None:
        d = self._dm_data()
        if d is not None and stage == "fit":
            xs, ys = d.x_scaler, d.y_scaler
            if len(xs.lo) != len(self.x_lo):
                raise ConfigError(
                    f"model.n_inputs={len(self.x_lo)} but the data has {len(xs.lo)} feature columns "
                    f"(data.n_features); set model.n_inputs=${{data.n_features}}"
                )
            with torch.no_grad():
                self.x_lo.copy_(torch.as_tensor(xs.lo))
                self.x_span.copy_(torch.as_tensor(xs.span))
                self.y_lo.copy_(torch.as_tensor(ys.lo))
                self.y_span.copy_(torch.as_tensor(ys.span))

    def on_fit_start(self) -> None:
        d = self._dm_data()
        pdt = next((p.dtype for p in self.parameters()), torch.float32)
        if d is not None and d.x_train.dtype != pdt:
            raise ConfigError(
                f"data.dtype={str(d.x_train.dtype).replace('torch.', '')} but the model is "
                f"{str(pdt).replace('torch.', '')}; use trainer.precision=64-true with data.dtype=float64"
            )

    def to_degrees(self, y_scaled: torch.Tensor) -> torch.Tensor:
        return y_scaled.double() * self.y_span + self.y_lo

    # ---- logging: Lightning aggregates each epoch
    def _log(self, key: str, value: torch.Tensor, bs: int, **kw: Any) -> None:
        self.log(key, value.detach().double(), on_step=False, on_epoch=True, batch_size=bs, **kw)

    def _log_pair(self, split: str, energy: torch.Tensor, delta: torch.Tensor, delta_abs: torch.Tensor, bs: int):
        self._log(f"{split}/energy", energy, bs, prog_bar=True)
        self._log(f"{split}/delta", delta, bs)
        self._log(f"{split}/delta_abs", delta_abs, bs)

    def _record(self, split: str) -> None:
        """Append this epoch's aggregated values of `split` to the history."""
        cm = self.trainer.callback_metrics
        for name in self.history_keys[split]:
            if f"{split}/{name}" in cm:
                self.history[f"{split}_{name}"].append(float(cm[f"{split}/{name}"]))
        self._summarize()

    def on_train_epoch_end(self) -> None:
        self._record("train")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._record("val")

    def _summarize(self) -> None:
        h = self.history
        if h["val_energy"]:
            best = int(np.argmin(h["val_energy"]))
            self.extra_results.update(best_val_energy=h["val_energy"][best], best_epoch=best + 1)
        self.extra_results.update(
            epochs_run=len(h["train_energy"]),
            final_train_energy=h["train_energy"][-1] if h["train_energy"] else None,
            history=h,
        )

    # ---- test: km and R^2 in degrees, plus baselines
    def on_test_epoch_start(self) -> None:
        for m in (self.test_pred, self.test_true):
            m.set_dtype(torch.float64)  # the Trainer casts the module to its precision; degrees stay float64
            m.reset()

    def _collect_test(self, y_scaled_pred: torch.Tensor, y_deg: torch.Tensor) -> None:
        self.test_pred.update(self.to_degrees(y_scaled_pred.detach()))
        self.test_true.update(y_deg.detach().double())

    def on_test_epoch_end(self) -> None:
        if not self.test_pred.update_count:
            return
        pred, true = self.test_pred.compute().cpu().numpy(), self.test_true.compute().cpu().numpy()
        self.test_pred.reset()
        self.test_true.reset()
        res = geo_metrics(pred, true, "test/")
        d = self._dm_data()
        if d is not None:
            res.update({f"test/{k}": v for k, v in baselines(d).items()})
        for k, v in res.items():
            self.log(k, float(v))
        self.extra_results.update(res)
        self.extra_results["test_predictions_deg"] = pred.round(4).tolist()
        self.extra_results["test_true_deg"] = true.round(4).tolist()


class _FullBatchSigmoid(_GomBase):
    """Shared constructor half and training step of SigmoidMLP and Autoencoder: gradient descent
    on the energy of a sigmoid net of `layer_sizes()`."""

    def layer_sizes(self) -> list[int]:
        raise NotImplementedError

    def _build_net(self, n_outputs: int) -> None:
        """After the subclass saved its hyperparameters: the training arguments checked, the net built."""
        hp = self.hparams
        check_float("model.lr", hp.lr, 0.0, MAX_LR)
        check_int("model.n_inputs", hp.n_inputs, 1, MAX_INPUTS)
        check_choice("model.grad_reduction", hp.grad_reduction, ("mean", "sum"))
        check_float("model.init_range", hp.init_range, 0.0, 100.0)
        self.sizes = self.layer_sizes()
        self.net = SigmoidNet(self.sizes, hp.seed, hp.bias, hp.init_range)
        self._init_common(hp.n_inputs, n_outputs)

    def _targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, split: str) -> torch.Tensor:
        x, y, _ = batch
        t = self._targets(x, y)
        out = self.net(x)
        e_n, delta, delta_abs = energy_and_delta(out, t)
        energy = e_n.mean()
        self._log_pair(split, energy, delta, delta_abs, len(x))
        if split == "val":
            self._log("val/loss", energy, len(x))
        return e_n.sum() if self.hparams.grad_reduction == "sum" else energy

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def configure_callbacks(self) -> list[L.Callback]:
        stop = self.hparams.stop_energy
        return [energy_stop(stop)] if stop else []


class SigmoidMLP(_FullBatchSigmoid):
    """depth hidden layers of `width` sigmoid neurons -> 2 sigmoid outputs (scaled lat, lon)."""

    def __init__(
        self,
        depth: int = 1,
        width: int = 3,
        lr: float = 0.01,
        n_inputs: int = 68,
        n_outputs: int = 2,
        bias: bool = True,
        grad_reduction: str = "mean",
        input_layer: bool = False,
        init_range: float = 1.0,
        stop_energy: float | None = 0.01,
        seed: int = 0,
    ):
        super().__init__()
        check_int("model.depth", depth, 1, MAX_DEPTH)
        check_int("model.width", width, 1, MAX_WIDTH)
        self.save_hyperparameters()
        self._build_net(n_outputs)

    def layer_sizes(self) -> list[int]:
        hp = self.hparams
        return mlp_sizes(hp.n_inputs, hp.depth, hp.width, hp.n_outputs, hp.input_layer)

    def test_step(self, batch, batch_idx):
        x, y, yd = batch
        out = self.net(x)
        e_n, delta, delta_abs = energy_and_delta(out, y)
        self._log_pair("test", e_n.mean(), delta, delta_abs, len(x))
        self._collect_test(out, yd)

    def predict_step(self, batch, batch_idx):
        return self.to_degrees(self.net(batch[0]))


class Autoencoder(_FullBatchSigmoid):
    """n_inputs -> hidden (sigmoid) -> n_inputs (sigmoid); hidden < n_inputs reduces (M1),
    hidden > n_inputs extracts (M2)."""

    def __init__(
        self,
        hidden: int = 19,
        lr: float = 0.1,
        n_inputs: int = 68,
        bias: bool = True,
        grad_reduction: str = "mean",
        input_layer: bool = False,
        init_range: float = 1.0,
        stop_energy: float | None = 0.01,
        seed: int = 0,
    ):
        super().__init__()
        check_int("model.hidden", hidden, 1, MAX_WIDTH)
        self.save_hyperparameters()
        self._build_net(2)

    def layer_sizes(self) -> list[int]:
        hp = self.hparams
        return ae_sizes(hp.n_inputs, hp.hidden, hp.input_layer)

    def _targets(self, x, y):
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, upto=-1)

    def test_step(self, batch, batch_idx):
        x = batch[0]
        e_n, delta, delta_abs = energy_and_delta(self.net(x), x)
        self._log_pair("test", e_n.mean(), delta, delta_abs, len(x))

    def predict_step(self, batch, batch_idx):
        return self.encode(batch[0])


# ------------------------------------------------------------------------------------------ hybrid
class _LocationNet(nn.Module):
    """One member of the locations head: hidden layers (sigmoid with the paper's U[-r, r] init, or
    ReLU with PyTorch's), dropout, then the logits over the `n_locations` slots."""

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int],
        n_locations: int,
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
        self.logits = nn.Linear(hidden[-1] if hidden else n_in, n_locations)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits(self.drop(self.body(z)))


class GomHybrid(_GomBase):
    """Autoencoder code -> MLP regressor of (scaled) latitude and longitude.

    The autoencoder (`ae_*`) is trained first, at fit start, with the same full-batch gradient
    descent as `Autoencoder` (vectorized engine, G=1, identical numbers); its weights at the
    epoch of lowest validation energy become a frozen encoder (buffers, saved in checkpoints).
    The regressor is then trained by Lightning with `optimizer`/`loss` on minibatches.

    head: regression (paper): sigmoid outputs = scaled (lat, lon), loss mae | energy | mse | km
            (km = mean great-circle distance, the evaluation metric itself).
          locations: softmax over the distinct origin locations of the training split (at most
            `max_locations`), cross-entropy loss; the prediction is the training location that
            minimises the expected great-circle distance under the predicted distribution.
            `ensemble` members (own init and dropout, same batches) average their softmax;
            `knn_blend` mixes in the location histogram of the `knn_k` nearest training tracks;
            `activation` relu|sigmoid, `label_smoothing`, `standardize` (z-scored input).
    Paper/authors: regression head [3] sigmoid, Adam(0.01), MAE, 500 epochs, batch 50.
    """

    history_keys = {**_GomBase.history_keys, "val": ("energy", "delta", "delta_abs", "loss", "km")}

    def __init__(
        self,
        ae_hidden: int = 19,
        ae_lr: float = 0.1,
        ae_epochs: int = 100,
        ae_grad_reduction: str = "mean",
        ae_bias: bool = True,
        ae_input_layer: bool = False,
        ae_stop_energy: float | None = 0.01,
        hidden: Sequence[int] = (3,),
        lr: float = 0.01,
        optimizer: str = "adam",
        loss: str = "mae",
        head: str = "regression",
        bias: bool = True,
        init_range: float | None = 1.0,
        weight_decay: float = 0.0,
        dropout: float = 0.0,
        include_features: bool = False,
        use_code: bool = True,
        early_stop_patience: int = 0,
        early_stop_on: str = "energy",
        max_locations: int = 64,
        activation: str = "sigmoid",
        standardize: bool = False,
        label_smoothing: float = 0.0,
        ensemble: int = 1,
        knn_blend: float = 0.0,
        knn_k: int = 10,
        n_inputs: int = 68,
        seed: int = 0,
    ):
        super().__init__()
        # long for its 29 documented options: the checks of each first, then the network
        check_int("model.ae_hidden", ae_hidden, 1, MAX_WIDTH)
        check_choice("model.activation", activation, ("sigmoid", "relu"))
        check_fraction("model.label_smoothing", label_smoothing)
        check_int("model.ensemble", ensemble, 1, 256)
        check_fraction("model.knn_blend", knn_blend, hi_included=True)
        check_int("model.knn_k", knn_k, 1, 100_000)
        if head == "regression" and (activation != "sigmoid" or ensemble > 1 or knn_blend or label_smoothing):
            raise ConfigError("model.activation/ensemble/knn_blend/label_smoothing apply to model.head=locations only")
        check_int("model.n_inputs", n_inputs, 1, MAX_INPUTS)
        check_float("model.ae_lr", ae_lr, 0.0, MAX_LR)
        check_int("model.ae_epochs", ae_epochs, 1, 100_000)
        check_choice("model.ae_grad_reduction", ae_grad_reduction, ("mean", "sum"))
        check_float("model.lr", lr, 0.0, MAX_LR)
        check_choice("model.optimizer", optimizer, ("adam", "adamw", "sgd"))
        check_choice("model.head", head, ("regression", "locations"))
        if head == "regression":
            check_choice("model.loss", loss, ("mae", "energy", "mse", "km"))
        check_choice("model.early_stop_on", early_stop_on, ("energy", "loss", "km"))
        check_int("model.early_stop_patience", early_stop_patience, 0, 100_000)
        check_fraction("model.dropout", dropout)
        if not use_code and not include_features:
            raise ConfigError("model.use_code=false needs model.include_features=true (the regressor needs an input)")
        hidden = [int(w) for w in hidden]
        check_int("model.hidden (number of layers)", len(hidden), 0, MAX_DEPTH)
        check_int_list("model.hidden", hidden, 1, MAX_WIDTH)
        self.save_hyperparameters()
        self.ae_sizes = ae_sizes(n_inputs, ae_hidden, ae_input_layer)
        enc_sizes = self.ae_sizes[:-1]
        for i, (a, b) in enumerate(zip(enc_sizes[:-1], enc_sizes[1:])):
            self.register_buffer(f"enc_w{i}", torch.zeros(b, a))
            self.register_buffer(f"enc_b{i}", torch.zeros(b))
        self.n_enc = len(enc_sizes) - 1
        self.register_buffer("ae_trained", torch.zeros((), dtype=torch.bool))
        code = (ae_hidden if use_code else 0) + (n_inputs if include_features else 0)
        # the regressor's input z-scored with the training split's statistics (identity until fit)
        self.register_buffer("in_mu", torch.zeros(code))
        self.register_buffer("in_sd", torch.ones(code))
        if head == "regression":
            self.reg = SigmoidNet([code] + hidden + [2], seed + 1, bias, init_range)
            self.drop = nn.Identity()
        else:
            self.members = nn.ModuleList(
                _LocationNet(code, hidden, max_locations, activation, dropout, bias, init_range, seed + 1 + 1000 * i)
                for i in range(ensemble)
            )
            self.register_buffer("locs", torch.zeros(max_locations, 2, dtype=torch.float64))
            self.register_buffer("loc_valid", torch.zeros(max_locations, dtype=torch.bool))
            # k-NN posterior (model.knn_blend): the training tracks' scaled features and location index,
            # sized at fit start (and from a checkpoint on load)
            self.register_buffer("knn_x", torch.zeros(0, n_inputs))
            self.register_buffer("knn_loc", torch.zeros(0, dtype=torch.long))
        self._init_common(n_inputs, 2)

    # ---- network
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The regressor's input: [code, features] as configured, z-scored when `standardize`."""
        z = self._raw_input(x)
        return (z - self.in_mu.to(z.dtype)) / self.in_sd.to(z.dtype) if self.hparams.standardize else z

    def _raw_input(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i in range(self.n_enc):
            h = torch.sigmoid(h @ getattr(self, f"enc_w{i}").T + getattr(self, f"enc_b{i}"))
        parts = ([h] if self.hparams.use_code else []) + ([x] if self.hparams.include_features else [])
        return torch.cat(parts, 1) if len(parts) > 1 else parts[0]

    def _member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        z = self.encode(x)
        return [m(z).masked_fill(~self.loc_valid, float("-inf")) for m in self.members]

    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C] probability of each training location: the mean of the members' softmax, blended
        with the k-NN histogram of the nearest training tracks (`knn_blend`)."""
        p = torch.stack([z.softmax(1).double() for z in self._member_logits(x)]).mean(0)
        a = self.hparams.knn_blend
        if a and len(self.knn_x):
            k = min(self.hparams.knn_k, len(self.knn_x))
            idx = torch.cdist(x.double(), self.knn_x.double()).topk(k, largest=False).indices
            q = torch.zeros_like(p).scatter_add_(1, self.knn_loc[idx], torch.full(idx.shape, 1.0 / k, dtype=p.dtype))
            p = (1 - a) * p + a * q
        return p

    def predict_scaled(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled (lat, lon) prediction in [0, 1] for either head."""
        if self.hparams.head == "regression":
            return self.reg(self.encode(x))
        p = self.posterior(x)  # [N, C]
        L = self.locs
        D = haversine_km(L[:, None, 0], L[:, None, 1], L[None, :, 0], L[None, :, 1])  # [C, C]
        cost = (p @ D).masked_fill(~self.loc_valid, float("inf"))
        deg = L[cost.argmin(1)]
        return ((deg - self.y_lo) / self.y_span).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict_scaled(x)

    # ---- fit start: scalers, autoencoder, location table
    def setup(self, stage: str) -> None:
        super().setup(stage)
        d = self._dm_data()
        if stage == "fit" and d is not None and not bool(self.ae_trained):
            if self.hparams.use_code:
                self.pretrain_autoencoder(d)
            if self.hparams.head == "locations":
                locs = np.unique(np.round(d.yd_train.numpy(), 4), axis=0)
                if len(locs) > self.hparams.max_locations:
                    raise ConfigError(
                        f"model.max_locations={self.hparams.max_locations} but the training split has "
                        f"{len(locs)} distinct locations; raise model.max_locations"
                    )
                with torch.no_grad():
                    self.locs[: len(locs)] = torch.as_tensor(locs)
                    self.loc_valid[: len(locs)] = True
                    self.knn_x = d.x_train.detach().clone().to(self.knn_x.dtype)
                    self.knn_loc = self._loc_index(d.yd_train)
            if self.hparams.standardize:
                with torch.no_grad():
                    z = self._raw_input(d.x_train.to(self.in_mu.dtype))
                    self.in_mu.copy_(z.mean(0))
                    self.in_sd.copy_(z.std(0).clamp_min(1e-6))
            self.ae_trained.fill_(True)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The k-NN buffers take the size of the training split they were saved with."""
        sd = checkpoint.get("state_dict") or {}
        for name in ("knn_x", "knn_loc"):
            if name in sd and hasattr(self, name):
                setattr(self, name, torch.empty_like(sd[name], device=getattr(self, name).device))

    def _loc_index(self, yd: torch.Tensor) -> torch.Tensor:
        d = (yd.double()[:, None, :] - self.locs[None]).abs().sum(-1)
        d = d.masked_fill(~self.loc_valid, float("inf"))
        return d.argmin(1)

    def pretrain_autoencoder(self, d: GomData) -> None:
        h = self.hparams
        spec = NetSpec(tuple(self.ae_sizes), h.ae_lr, h.seed, {"hidden": h.ae_hidden})
        res = train_sigmoid_grid(
            [spec],
            d.x_train,
            d.x_train,
            d.x_val,
            d.x_val,
            epochs=h.ae_epochs,
            grad_reduction=h.ae_grad_reduction,
            bias=h.ae_bias,
            stop_energy=h.ae_stop_energy,
        )
        params = res.best_params[0]
        with torch.no_grad():
            for i in range(self.n_enc):
                w, b = params[i]
                getattr(self, f"enc_w{i}").copy_(w)
                getattr(self, f"enc_b{i}").copy_(b if b is not None else torch.zeros_like(getattr(self, f"enc_b{i}")))
        self.extra_results.update(
            ae_best_val_energy=float(res.best_val[0]),
            ae_best_epoch=int(res.best_epoch[0]),
            ae_epochs_run=int(res.epochs_run[0]),
            ae_history={"train_energy": res.train_energy[0].tolist(), "val_energy": res.val_energy[0].tolist()},
        )

    # ---- steps
    def _loss(self, x: torch.Tensor, y: torch.Tensor, yd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss, scaled prediction)."""
        if self.hparams.head == "locations":
            target = self._loc_index(yd)
            ls = self.hparams.label_smoothing
            if ls:  # smoothing over the valid locations only (the padded classes stay at -inf)
                n_valid = int(self.loc_valid.sum())
                soft = torch.where(self.loc_valid, ls / n_valid, 0.0).expand(len(x), -1).clone()
                soft[torch.arange(len(x)), target] += 1 - ls
            losses = []
            for z in self._member_logits(x):
                if ls:
                    logp = z.log_softmax(1).masked_fill(~self.loc_valid, 0.0)
                    losses.append(-(soft.to(logp.dtype) * logp).sum(1).mean())
                else:
                    losses.append(nn.functional.cross_entropy(z, target))
            loss = torch.stack(losses).sum()  # each member learns on its own
            with torch.no_grad():
                out = self.predict_scaled(x)
            return loss, out
        out = self.reg(self.encode(x))
        kind = self.hparams.loss
        if kind == "mae":
            loss = (out - y).abs().mean()
        elif kind == "mse":
            loss = ((out - y) ** 2).mean()
        elif kind == "km":
            deg = out * self.y_span.to(out.dtype) + self.y_lo.to(out.dtype)
            loss = haversine_km(deg[:, 0], deg[:, 1], yd[:, 0].to(out.dtype), yd[:, 1].to(out.dtype)).mean() / 1000
        else:
            loss = 0.5 * ((out - y) ** 2).sum(1).mean()
        return loss, out

    def training_step(self, batch, batch_idx):
        x, y, yd = batch
        loss, out = self._loss(x, y, yd)
        e_n, delta, delta_abs = energy_and_delta(out.detach(), y)
        self._log_pair("train", e_n.mean(), delta, delta_abs, len(x))
        self._log("train/loss", loss, len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, yd = batch
        loss, out = self._loss(x, y, yd)
        e_n, delta, delta_abs = energy_and_delta(out, y)
        self._log_pair("val", e_n.mean(), delta, delta_abs, len(x))
        self._log("val/loss", loss, len(x))
        self._log("val/km", haversine_km(*self.to_degrees(out).T, *yd.double().T).mean(), len(x))

    def configure_callbacks(self) -> list[L.Callback]:
        """`early_stop_patience` epochs without a lower validation `early_stop_on` end the fit."""
        h = self.hparams
        if not h.early_stop_patience:
            return []
        return [
            GomEarlyStopping(
                monitor=f"val/{h.early_stop_on}",
                mode="min",
                patience=h.early_stop_patience,
                check_on_train_epoch_end=False,
                check_finite=False,
                strict=False,
            )
        ]

    def test_step(self, batch, batch_idx):
        x, y, yd = batch
        out = self.predict_scaled(x)
        e_n, delta, delta_abs = energy_and_delta(out, y)
        self._log_pair("test", e_n.mean(), delta, delta_abs, len(x))
        self._collect_test(out, yd)

    def predict_step(self, batch, batch_idx):
        return self.to_degrees(self.predict_scaled(batch[0]))

    def configure_optimizers(self):
        h = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if h.optimizer == "adam":
            return torch.optim.Adam(params, lr=h.lr, weight_decay=h.weight_decay)
        if h.optimizer == "adamw":  # decoupled weight decay
            return torch.optim.AdamW(params, lr=h.lr, weight_decay=h.weight_decay)
        return torch.optim.SGD(params, lr=h.lr, weight_decay=h.weight_decay)
