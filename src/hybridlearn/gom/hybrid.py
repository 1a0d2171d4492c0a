"""The GOM hybrids: an autoencoder trained first, its code (and/or the features) then feeding a head
trained by Lightning on minibatches. One LightningModule per model, each handed its network (gom.nets):

- `HybridRegressor` (the paper's): HybridRegressorNet, sigmoid outputs = the scaled (latitude,
  longitude), loss mae | energy | mse | km (km: the mean great-circle distance, the metric itself).
  Paper/authors: autoencoder M1* = 19 -> [3] sigmoid, Adam(0.01), MAE, 500 epochs, batch 50.
- `OriginClassifier` (beyond the paper): OriginClassifierNet, a softmax over the training split's
  distinct origins, cross-entropy (label-smoothed over the valid origins); the prediction is the
  origin with the least expected great-circle distance under the posterior.

The autoencoder (`autoencoder.*`) is trained at fit start with the full-batch gradient descent of
`Autoencoder` (vectorized engine, one network, identical numbers); its weights at the epoch of lowest
validation energy become the net's frozen encoder (buffers, saved in checkpoints).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from hybridlearn.core.config import plain
from hybridlearn.gom.data import GomData
from hybridlearn.gom.grid import NetSpec, train_sigmoid_grid
from hybridlearn.gom.metrics import haversine_km
from hybridlearn.gom.models import GomEarlyStopping, GomModule
from hybridlearn.gom.nets import HybridRegressorNet, OriginClassifierNet, energy_and_delta


class Hybrid(GomModule):
    """The training both hybrids share: the autoencoder and the input statistics at fit start, the
    optimizer, early stopping, and the train/val/test steps around the subclass's `loss_and_output`."""

    history_keys = {**GomModule.history_keys, "val": ("energy", "delta", "delta_abs", "loss", "km")}

    def __init__(self, net: nn.Module):
        super().__init__(net)
        # set once the autoencoder, the input statistics (and origins) come from a training split, so a
        # resumed fit or a checkpoint keeps them
        self.register_buffer("prepared", torch.zeros((), dtype=torch.bool))

    # ---- fit start
    def setup(self, stage: str) -> None:
        super().setup(stage)
        d = self._dm_data()
        if stage == "fit" and d is not None and not bool(self.prepared):
            if self.net.input.use_code:
                self.pretrain_autoencoder(d)
            self.prepare_head(d)
            if self.net.input.standardize:
                self.net.input.fit_standardizer(d.x_train)
            self.prepared.fill_(True)

    def prepare_head(self, d: GomData) -> None:
        """What the head needs from the training split before it trains (the origins' classifier)."""

    def pretrain_autoencoder(self, d: GomData) -> None:
        a = self.hparams.autoencoder
        spec = NetSpec(tuple(self.net.input.ae_sizes), a["lr"], a["seed"], {"hidden": a["hidden"]})
        res = train_sigmoid_grid(
            [spec],
            d.x_train,
            d.x_train,
            d.x_val,
            d.x_val,
            epochs=a["epochs"],
            grad_reduction=a["grad_reduction"],
            bias=a["bias"],
            stop_energy=a["stop_energy"],
        )
        self.net.input.load_encoder(res.best_params[0])
        self.extra_results.update(
            ae_best_val_energy=float(res.best_val[0]),
            ae_best_epoch=int(res.best_epoch[0]),
            ae_epochs_run=int(res.epochs_run[0]),
            ae_history={"train_energy": res.train_energy[0].tolist(), "val_energy": res.val_energy[0].tolist()},
        )

    # ---- steps
    def loss_and_output(self, x: torch.Tensor, y: torch.Tensor, yd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss, scaled prediction) of a batch."""
        raise NotImplementedError

    def predict_scaled(self, x: torch.Tensor) -> torch.Tensor:
        """The scaled (latitude, longitude) prediction, in [0, 1]."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict_scaled(x)

    def training_step(self, batch, batch_idx):
        x, y, yd = batch
        loss, out = self.loss_and_output(x, y, yd)
        e_n, delta, delta_abs = energy_and_delta(out.detach(), y)
        self._log_pair("train", e_n.mean(), delta, delta_abs, len(x))
        self._log("train/loss", loss, len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, yd = batch
        loss, out = self.loss_and_output(x, y, yd)
        e_n, delta, delta_abs = energy_and_delta(out, y)
        self._log_pair("val", e_n.mean(), delta, delta_abs, len(x))
        self._log("val/loss", loss, len(x))
        self._log("val/km", haversine_km(*self.to_degrees(out).T, *yd.double().T).mean(), len(x))

    def test_step(self, batch, batch_idx):
        x, y, yd = batch
        out = self.predict_scaled(x)
        e_n, delta, delta_abs = energy_and_delta(out, y)
        self._log_pair("test", e_n.mean(), delta, delta_abs, len(x))
        self._collect_test(out, yd)

    def predict_step(self, batch, batch_idx):
        return self.to_degrees(self.predict_scaled(batch[0]))

    def configure_callbacks(self) -> list[L.Callback]:
        """`early_stop_patience` validations without a lower validation `early_stop_on` end the fit."""
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

    def configure_optimizers(self):
        h = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if h.optimizer == "adam":
            return torch.optim.Adam(params, lr=h.lr, weight_decay=h.weight_decay)
        if h.optimizer == "adamw":  # decoupled weight decay
            return torch.optim.AdamW(params, lr=h.lr, weight_decay=h.weight_decay)
        return torch.optim.SGD(params, lr=h.lr, weight_decay=h.weight_decay)


class HybridRegressor(Hybrid):
    """The paper's hybrid: autoencoder code -> sigmoid MLP regressor of (scaled) latitude and longitude
    (settings: gom.conf.HybridRegressorConfig, `model=gom_hybrid`)."""

    net: HybridRegressorNet

    def __init__(
        self,
        net: HybridRegressorNet,
        autoencoder: dict[str, Any],
        lr: float,
        optimizer: str,
        weight_decay: float,
        early_stop_patience: int,
        early_stop_on: str,
        loss: str,
    ):
        super().__init__(net)
        autoencoder = plain(autoencoder)  # plain values: checkpoints load with weights_only=True
        self.save_hyperparameters(ignore=["net"])

    def predict_scaled(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss_and_output(self, x: torch.Tensor, y: torch.Tensor, yd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
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


class OriginClassifier(Hybrid):
    """Beyond the paper: a softmax over the training split's origins (settings:
    gom.conf.OriginClassifierConfig, `model=gom_origin_classifier`; experiment=gom_cv's best model)."""

    net: OriginClassifierNet

    def __init__(
        self,
        net: OriginClassifierNet,
        autoencoder: dict[str, Any],
        lr: float,
        optimizer: str,
        weight_decay: float,
        early_stop_patience: int,
        early_stop_on: str,
        label_smoothing: float,
    ):
        super().__init__(net)
        autoencoder = plain(autoencoder)  # plain values: checkpoints load with weights_only=True
        self.save_hyperparameters(ignore=["net"])

    def prepare_head(self, d: GomData) -> None:
        self.net.set_origins(d.x_train, d.yd_train)

    def predict_scaled(self, x: torch.Tensor) -> torch.Tensor:
        deg = self.net.decide(self.net(x))
        return ((deg - self.y_lo) / self.y_span).to(x.dtype)

    def loss_and_output(self, x: torch.Tensor, y: torch.Tensor, yd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's cross-entropy, summed (each learns on its own); smoothing spreads `label_smoothing`
        over the valid origins only (the padded slots stay at -inf)."""
        net, ls = self.net, self.hparams.label_smoothing
        target = net.origin_index(yd)
        if ls:
            n_valid = int(net.loc_valid.sum())
            soft = torch.where(net.loc_valid, ls / n_valid, 0.0).expand(len(x), -1).clone()
            soft[torch.arange(len(x)), target] += 1 - ls
        losses = []
        for z in net.member_logits(x):
            if ls:
                logp = z.log_softmax(1).masked_fill(~net.loc_valid, 0.0)
                losses.append(-(soft.to(logp.dtype) * logp).sum(1).mean())
            else:
                losses.append(nn.functional.cross_entropy(z, target))
        loss = torch.stack(losses).sum()
        with torch.no_grad():
            out = self.predict_scaled(x)
        return loss, out
