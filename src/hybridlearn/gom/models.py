"""GOM study models (paper section on autoencoders + MLP regressors of music origin), LightningModules
that train the networks of gom.nets handed to them (`model.net`):

- `SigmoidMLP`: a SigmoidMLPNet (L hidden layers of l sigmoid neurons, sigmoid output, weights
  U[-1,1]) by full-batch gradient descent on the instant energy E = 1/2 sum_k e_k^2.
- `Autoencoder`: an AutoencoderNet (one hidden sigmoid layer) reconstructing the scaled features (68,
  or 116 with `data.features=chromatic`), trained the same way.
- the hybrids are in gom.hybrid.

Authors' code quirks are named switches (paper text is the default; declared in gom.conf):
  grad_reduction: mean | sum       gradient of the average energy (paper) or of the summed energy
  net.bias: true | false           bias terms (the authors' networks had none)
  net.input_layer: false | true    an extra n_in -> n_in sigmoid layer in front (authors' "input layer")
(and in the data config: target_scaling per_column | joint, n_features 68 | 67).

Logged per epoch, train and val: `energy` (average instant energy, mean over samples of
1/2 sum_k e_k^2) and `delta` (mean local output gradient delta_k = e_k * phi'(v_k), averaged over
samples and output neurons; `delta_abs` is the mean of |delta_k|), as Lightning's epoch means.
Stopping goes through Lightning's EarlyStopping: the paper's energy < `stop_energy` rule
(`stopping_threshold` on train/energy) and the hybrid's `early_stop_patience`.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torchmetrics import CatMetric

from hybridlearn.gom.data import GomData
from hybridlearn.gom.metrics import baselines, geo_metrics
from hybridlearn.gom.nets import AutoencoderNet, SigmoidMLPNet, energy_and_delta


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
class GomModule(L.LightningModule):
    """What every GOM model shares: its network `net` (an nn.Module of gom.nets, built from config),
    the scalers as buffers (saved in checkpoints), per-epoch histories, km/R^2 test metrics.

    Per-epoch values are Lightning's own epoch means of what the steps log (weighted by batch size,
    logged in float64 so the means are exact); `history` copies them from `trainer.callback_metrics`
    at each epoch end, for results.json and the reports.
    """

    # per split: the logged `<split>/<name>` values kept per epoch in history["<split>_<name>"]
    history_keys: dict[str, tuple[str, ...]] = {
        "train": ("energy", "delta", "delta_abs"),
        "val": ("energy", "delta", "delta_abs"),
    }

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        for name, n in (("x_lo", net.n_inputs), ("x_span", net.n_inputs), ("y_lo", 2), ("y_span", 2)):
            self.register_buffer(name, torch.zeros(n, dtype=torch.float64))
        self.history: dict[str, list[float]] = {f"{s}_{k}": [] for s, ks in self.history_keys.items() for k in ks}
        self.extra_results: dict[str, Any] = {}
        # test predictions and truths in degrees, gathered over the test batches (float64, NaN kept)
        self.test_pred = CatMetric(nan_strategy="disable")
        self.test_true = CatMetric(nan_strategy="disable")
        self.test_degrees: tuple[np.ndarray, np.ndarray] | None = None  # the last test's (predicted, true)

    def data_signature(self) -> dict[str, Any]:
        return {"input": (self.net.n_inputs,)}

    # ---- data hooks
    def _dm_data(self) -> GomData | None:
        """The GomDataModule's tensors, when a Trainer runs this model with one."""
        try:
            dm = self.trainer.datamodule
        except RuntimeError:  # not attached to a Trainer (Lightning's answer)
            return None
        return getattr(dm, "data", None)

    def setup(self, stage: str) -> None:
        """The training split's scalers (data=gom's rules keep model.net.n_inputs = data.n_features and
        the data's dtype = the trainer's precision)."""
        d = self._dm_data()
        if d is not None and stage == "fit":
            xs, ys = d.x_scaler, d.y_scaler
            with torch.no_grad():
                self.x_lo.copy_(torch.as_tensor(xs.lo))
                self.x_span.copy_(torch.as_tensor(xs.span))
                self.y_lo.copy_(torch.as_tensor(ys.lo))
                self.y_span.copy_(torch.as_tensor(ys.span))

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
        self.test_degrees = (pred, true)
        res = geo_metrics(pred, true, "test/")
        d = self._dm_data()
        if d is not None:
            res.update({f"test/{k}": v for k, v in baselines(d).items()})
        for k, v in res.items():
            self.log(k, float(v))
        self.extra_results.update(res)
        self.extra_results["test_predictions_deg"] = pred.round(4).tolist()
        self.extra_results["test_true_deg"] = true.round(4).tolist()


class FullBatchSigmoid(GomModule):
    """The training of SigmoidMLP and Autoencoder (the paper's algorithm): full-batch gradient descent
    on the energy of a sigmoid net, stopped by the energy rule."""

    def __init__(self, net: nn.Module, lr: float, grad_reduction: str, stop_energy: float | None):
        super().__init__(net)
        self.save_hyperparameters(ignore=["net"])

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


class SigmoidMLP(FullBatchSigmoid):
    """The paper's sigmoid MLP regressor (net: a SigmoidMLPNet) of the scaled latitude and longitude."""

    net: SigmoidMLPNet

    def test_step(self, batch, batch_idx):
        x, y, yd = batch
        out = self.net(x)
        e_n, delta, delta_abs = energy_and_delta(out, y)
        self._log_pair("test", e_n.mean(), delta, delta_abs, len(x))
        self._collect_test(out, yd)

    def predict_step(self, batch, batch_idx):
        return self.to_degrees(self.net(batch[0]))


class Autoencoder(FullBatchSigmoid):
    """The paper's sigmoid autoencoder (net: an AutoencoderNet) of the scaled features."""

    net: AutoencoderNet

    def _targets(self, x, y):
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(x)

    def test_step(self, batch, batch_idx):
        x = batch[0]
        e_n, delta, delta_abs = energy_and_delta(self.net(x), x)
        self._log_pair("test", e_n.mean(), delta, delta_abs, len(x))

    def predict_step(self, batch, batch_idx):
        return self.encode(batch[0])
