"""MLP GAN on 28x28 digits (the paper's MNIST GAN), trained with Lightning manual optimization.

Generator 128 -> 256 -> 512 -> 1024 -> 784 (LeakyReLU 0.2, tanh output, images in [-1, 1]);
discriminator 784 -> 1024 -> 512 -> 256 -> 1 (LeakyReLU 0.2 + dropout 0.3, sigmoid output).
Each batch: one discriminator step on real + fake, then one generator step through the frozen
discriminator (as Keras' `combined` model with `discriminator.trainable = False`).

The discriminator's sigmoid is folded into the loss (`binary_cross_entropy_with_logits`), which is
the same function as sigmoid + BCE but does not saturate to inf/NaN; `Discriminator.forward` still
returns probabilities.

Quality is measured with FID in the 84-d feature space of a LeNet-5 trained on MNIST (see
`hybridlearn.gan.metrics`), next to the real-vs-real floor (test images vs training images).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from hybridlearn.core.config import check_choice, check_fraction, check_int
from hybridlearn.core.errors import HybridlearnError
from hybridlearn.core.io import atomic_output
from hybridlearn.core.loaders import tensor_loader
from hybridlearn.core.trainer import TrainerFactory
from hybridlearn.gan.callbacks import save_png, to_grid
from hybridlearn.gan.generate import MAX_GRID
from hybridlearn.gan.metrics import FIDConfig, GANEvaluator, collect_images

log = logging.getLogger(__name__)

OPTIMIZER_IMPLS = ("fused", "foreach", "forloop")


class NonFiniteLossError(HybridlearnError):
    """A GAN loss became NaN/inf: training stops before the bad update (one-line CLI error)."""


class Generator(nn.Module):
    def __init__(
        self,
        latent_dim: int = 128,
        hidden: Sequence[int] = (256, 512, 1024),
        img_shape: Sequence[int] = (1, 28, 28),
        negative_slope: float = 0.2,
    ):
        super().__init__()
        self.latent_dim, self.img_shape = latent_dim, tuple(img_shape)
        layers: list[nn.Module] = []
        d = latent_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LeakyReLU(negative_slope, inplace=True)]
            d = h
        layers += [nn.Linear(d, math.prod(self.img_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.img_shape)


class GenDropout(nn.Dropout):
    """nn.Dropout drawing its masks from `self.generator` (the GAN's private RNG) when one is set."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.generator is None:
            return super().forward(x)
        mask = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator).mul_(1 / (1 - self.p))
        return x * mask


class Discriminator(nn.Module):
    """`spectral_norm`: every linear layer's weight divided by its largest singular value (Miyato
    et al. 2018), which bounds D's Lipschitz constant; off in the paper's model."""

    def __init__(
        self,
        img_shape: Sequence[int] = (1, 28, 28),
        hidden: Sequence[int] = (1024, 512, 256),
        negative_slope: float = 0.2,
        dropout: float = 0.3,
        spectral_norm: bool = False,
    ):
        super().__init__()

        def linear(i: int, o: int) -> nn.Module:
            return nn.utils.parametrizations.spectral_norm(nn.Linear(i, o)) if spectral_norm else nn.Linear(i, o)

        layers: list[nn.Module] = []
        d = math.prod(img_shape)
        for h in hidden:
            layers += [linear(d, h), nn.LeakyReLU(negative_slope, inplace=True)]
            if dropout > 0:
                layers.append(GenDropout(dropout))
            d = h
        layers.append(linear(d, 1))
        self.net = nn.Sequential(*layers)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """P(real) per image."""
        return torch.sigmoid(self.logits(x))


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """requires_grad=False on every parameter inside the block (no weight gradients computed)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def make_adam(params, lr: float, betas: tuple[float, float], impl: str) -> torch.optim.Adam:
    if impl == "fused":
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    return torch.optim.Adam(params, lr=lr, betas=betas, foreach=impl == "foreach")


class MLPGAN(L.LightningModule):
    def __init__(
        self,
        latent_dim: int = 128,
        img_shape: Sequence[int] = (1, 28, 28),
        g_hidden: Sequence[int] = (256, 512, 1024),
        d_hidden: Sequence[int] = (1024, 512, 256),
        negative_slope: float = 0.2,
        dropout: float = 0.3,
        g_lr: float = 2e-4,
        d_lr: float = 2e-4,
        b1: float = 0.5,
        b2: float = 0.999,
        optimizer_impl: str = "fused",
        reuse_fake: bool = False,
        compile: bool = False,
        num_fixed: int = 64,
        fixed_seed: int = 0,
        label_smoothing: float = 0.0,
        spectral_norm: bool = False,
        n_predict: int = 64,
        predict_seed: int = 0,
        fid: dict[str, Any] | None = None,
    ):
        """The paper's GAN by default. Modern options, both off by default:
        `label_smoothing` s > 0: one-sided label smoothing, the discriminator's real targets are
        1 - s (fakes stay 0, the generator's targets stay 1; Salimans et al. 2016);
        `spectral_norm`: spectral normalisation of the discriminator's layers.
        `n_predict` / `predict_seed`: the images task=predict generates (hybridlearn.gan.generate caps)."""
        super().__init__()
        check_fraction("model.label_smoothing", label_smoothing, 0.5, hi_included=True)
        check_int("model.n_predict", n_predict, 1, MAX_GRID)
        check_choice("model.optimizer_impl", optimizer_impl, OPTIMIZER_IMPLS)
        check_int("model.latent_dim", latent_dim, 1, 1_000_000)
        check_int("model.num_fixed", num_fixed, 1, 1_000_000)
        check_fraction("model.dropout", dropout)
        self.fid_cfg = FIDConfig.from_mapping(fid)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = Generator(latent_dim, g_hidden, img_shape, negative_slope)
        self.discriminator = Discriminator(img_shape, d_hidden, negative_slope, dropout, spectral_norm)
        if compile:
            self.generator.compile()
            self.discriminator.compile()
        # The grid's latent vectors: a buffer, so checkpoints carry it and resumes reuse it.
        g = torch.Generator().manual_seed(fixed_seed)
        self.register_buffer("fixed_noise", torch.randn(num_fixed, latent_dim, generator=g))
        # Training noise and dropout masks come from a private generator whose state is saved in
        # checkpoints: the global RNG is also drawn by DataLoader iterators, at points that differ
        # between a fresh epoch and a resumed one, so it cannot make resumes exact on its own.
        self._rng_seed = int(torch.randint(0, 2**62, (1,)).item())  # seeded by seed_everything
        self._rng: torch.Generator | None = None
        self._rng_pending: dict[str, Any] | None = None
        self.evaluator: GANEvaluator | None = None  # LeNet-FID: made by prepare_helpers
        self.extra_results: dict[str, Any] = {}

    def prepare_helpers(self, trainers: TrainerFactory | None = None) -> None:
        """The LeNet-FID evaluator, its classifier read from `model.fid.classifier_ckpt` or the cached
        MNIST pretraining, trained by a Trainer of `trainers` (the run's; None: a quiet one) when not
        cached. Once; `setup` calls it when no caller did (Python API)."""
        if self.fid_cfg.enabled and self.evaluator is None:
            self.evaluator = GANEvaluator.from_config(self.fid_cfg, trainers)

    def setup(self, stage: str) -> None:
        self.prepare_helpers()

    # ---------------------------------------------------------------- sampling
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    @torch.no_grad()
    def sample_fixed(self) -> torch.Tensor:
        """Images of the fixed latent vectors, in [-1, 1]."""
        return self.generator(self.fixed_noise)

    # ---------------------------------------------------------------- private RNG
    def bind_rng(self) -> torch.Generator:
        """Make the private generator on the model's device (from its seed, or the state a resumed
        checkpoint saved) and have the discriminator's dropout layers draw their masks from it."""
        device = self.fixed_noise.device
        g = torch.Generator(device=device)
        g.manual_seed(self._rng_seed)
        saved, self._rng_pending = self._rng_pending, None
        if saved is not None and saved["device"] == device.type:
            g.set_state(saved["state"].cpu())
        elif saved is not None:
            log.warning("GAN RNG state saved on %s, now on %s: reseeded", saved["device"], device.type)
        self._rng = g
        for m in self.discriminator.modules():
            if isinstance(m, GenDropout):
                m.generator = g
        return g

    def rng_is_bound(self) -> bool:
        return self._rng is not None and self._rng.device == self.fixed_noise.device

    def private_rng(self) -> torch.Generator:
        """The private generator; bound first when it is not (outside a Trainer: unit tests, benchmarks)."""
        return self._rng if self.rng_is_bound() else self.bind_rng()

    def on_train_start(self) -> None:
        # On the training device, after a resumed checkpoint restored its state (on_load_checkpoint
        # unbinds it); a second fit of the same model continues the stream.
        if not self.rng_is_bound():
            self.bind_rng()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        g = self.private_rng()
        checkpoint["gan_rng"] = {"state": g.get_state(), "device": g.device.type}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "gan_rng" in checkpoint:
            self._rng_pending, self._rng = checkpoint["gan_rng"], None

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(
            n,
            self.hparams.latent_dim,
            device=self.fixed_noise.device,
            dtype=self.fixed_noise.dtype,
            generator=self.private_rng(),
        )

    # ---------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        hp = self.hparams
        opt_g = make_adam(self.generator.parameters(), hp.g_lr, (hp.b1, hp.b2), hp.optimizer_impl)
        opt_d = make_adam(self.discriminator.parameters(), hp.d_lr, (hp.b1, hp.b2), hp.optimizer_impl)
        return [opt_g, opt_d]

    def _backward(self, loss: torch.Tensor) -> None:
        if self._trainer is not None:
            self.manual_backward(loss)
        else:  # used outside a Trainer (unit tests, benchmarks)
            loss.backward()

    def _check_finite(self, name: str, loss: torch.Tensor) -> None:
        if torch.isfinite(loss).item():
            return
        where, last = "", ""
        if self._trainer is not None:
            where = f" at epoch {self.current_epoch} batch {self.trainer.fit_loop.epoch_loop.batch_idx}"
            ckpt = self.trainer.checkpoint_callback
            last = getattr(ckpt, "last_model_path", "") or getattr(ckpt, "best_model_path", "") if ckpt else ""
        keep = (
            f"the last good checkpoint is {last}; resume from it with ckpt_path={last}"
            if last
            else "no checkpoint had been saved yet"
        )
        raise NonFiniteLossError(
            f"non-finite GAN loss {name}={loss.item()}{where}; training stopped before this update "
            f"({keep}); try lower model.g_lr / model.d_lr"
        )

    def d_step(
        self,
        real: torch.Tensor,
        opt_d: torch.optim.Optimizer,
        z: torch.Tensor | None = None,
    ):
        """Discriminator update on real (label 1) + fake (label 0). Returns (loss, fake, D(x), D(G(z)))."""
        b = real.shape[0]
        if z is None:
            z = self.noise(b).to(real.dtype)
        if self.hparams.reuse_fake:
            fake = self.generator(z)
            fake_in = fake.detach()
        else:
            with torch.no_grad():
                fake = self.generator(z)
            fake_in = fake
        logits = self.discriminator.logits(torch.cat([real, fake_in]))
        real_target = 1.0 - self.hparams.label_smoothing  # one-sided: fakes stay 0
        target = torch.cat(
            [
                torch.full((b,), real_target, device=real.device),
                torch.zeros(b, device=real.device),
            ]
        ).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        self._check_finite("d_loss", loss)
        opt_d.zero_grad(set_to_none=True)
        self._backward(loss)
        opt_d.step()
        with torch.no_grad():
            p = torch.sigmoid(logits)
        return loss.detach(), fake, p[:b].mean(), p[b:].mean()

    def g_step(self, b: int, opt_g: torch.optim.Optimizer, fake: torch.Tensor | None = None):
        """Generator update through the frozen discriminator (labels 1). Returns the loss."""
        if fake is None or not fake.requires_grad:
            fake = self.generator(self.noise(b))
        with frozen(self.discriminator):
            logits = self.discriminator.logits(fake)
            loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            self._check_finite("g_loss", loss)
            opt_g.zero_grad(set_to_none=True)
            self._backward(loss)
        opt_g.step()
        return loss.detach()

    def training_step(self, batch, batch_idx):
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        opt_g, opt_d = self.optimizers()
        d_loss, fake, d_real, d_fake = self.d_step(real, opt_d)
        g_loss = self.g_step(real.shape[0], opt_g, fake if self.hparams.reuse_fake else None)
        self.log_dict(
            {"train/d_loss": d_loss, "train/g_loss": g_loss},
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=real.shape[0],
            sync_dist=True,
        )
        self.log_dict(
            {"train/d_real": d_real, "train/d_fake": d_fake},
            on_step=False,
            on_epoch=True,
            batch_size=real.shape[0],
            sync_dist=True,
        )

    # ---------------------------------------------------------------- quality metrics
    def _datamodule_images(self, split: str, n: int) -> torch.Tensor | None:
        dm = getattr(self.trainer, "datamodule", None)
        fn = getattr(dm, f"{split}_dataloader", None)
        if fn is None:
            return None
        try:
            return collect_images(fn(), n)
        except Exception as e:  # noqa: BLE001 - a datamodule without that split
            log.warning("no %s images for the FID floor: %s", split, e)
            return None

    def on_fit_start(self) -> None:
        """The real reference (training images), the untrained generator's FID and the floor."""
        ev, c = self.evaluator, self.fid_cfg
        if ev is None:
            return
        self.extra_results["fid_classifier"] = ev.classifier_info
        real = self._datamodule_images("train", c.num_real)
        ev.set_reference(real)
        if self.current_epoch == 0 and not self.trainer.ckpt_path and "fid_init" not in self.extra_results:
            self.extra_results["fid_init"] = ev.evaluate(self.generator, self.hparams.latent_dim, c.num_samples)["fid"]
        other = self._datamodule_images("test", c.num_samples)
        if other is not None and len(other) >= 2:
            floor = ev.fid_of_images(other)
            self.extra_results.update({"fid_floor": floor, "fid_floor_n": len(other), "fid_real_n": len(real)})
            log.info("FID floor (test vs %d training images): %.3f", len(real), floor)

    def on_train_epoch_end(self) -> None:
        c = self.fid_cfg
        if self.evaluator is None or (self.current_epoch + 1) % c.every_n_epochs:
            return
        stats = self.evaluator.evaluate(self.generator, self.hparams.latent_dim, c.num_samples)
        self.log("fid", stats["fid"], prog_bar=True, sync_dist=True)
        if "fid_floor" in self.extra_results:
            self.log("fid_floor", self.extra_results["fid_floor"], sync_dist=True)
        self.log_dict(
            {f"gen/{k}": v for k, v in stats.items() if k not in ("fid", "class_hist")},
            sync_dist=True,
        )
        self.log_dict(
            {f"gen/class_{i}": v for i, v in enumerate(stats["class_hist"])},
            sync_dist=True,
        )
        self.extra_results["gen/class_hist"] = stats["class_hist"]
        hist = self.extra_results.setdefault("fid_history", [])
        hist.append([self.current_epoch + 1, round(stats["fid"], 4)])

    # test = quality of the (best) generator against the held-out real images
    def test_step(self, batch, batch_idx):
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        self._test_real.append(real.detach().cpu())

    def on_test_epoch_start(self) -> None:
        self._test_real: list[torch.Tensor] = []

    def on_test_epoch_end(self) -> None:
        if self.evaluator is None or not self._test_real:
            return
        self.extra_results["fid_classifier"] = self.evaluator.classifier_info
        ev = self.evaluator.with_new_reference()  # the training reference stays for later epochs
        test_real = torch.cat(self._test_real)[: self.fid_cfg.num_samples]
        if len(test_real) < 2:
            return
        ev.set_reference(test_real)
        stats = ev.evaluate(self.generator, self.hparams.latent_dim, self.fid_cfg.num_samples)
        out = {
            "test/fid": stats["fid"],
            "test/confidence": stats["confidence"],
            "test/modes_covered": stats["modes_covered"],
        }
        train = self._datamodule_images("train", len(test_real))
        if train is not None and len(train) >= 2:
            out["test/fid_floor"] = ev.fid_of_images(train)
        self.log_dict(out, sync_dist=True)
        self.extra_results["test/class_hist"] = stats["class_hist"]

    # ---------------------------------------------------------------- task=predict
    def predict_latents(self) -> torch.Tensor:
        """The `n_predict` latent vectors of task=predict (seeded by `predict_seed`)."""
        g = torch.Generator().manual_seed(self.hparams.predict_seed)
        return torch.randn(self.hparams.n_predict, self.hparams.latent_dim, generator=g)

    def predict_dataloader(self) -> DataLoader:
        """The latent vectors in batches of 1000 (used when no datamodule is given)."""
        return tensor_loader(self.predict_latents(), batch_size=1000, shuffle=False)

    def predict_step(self, batch, batch_idx):
        """Images in [-1, 1] of a batch of latent vectors. A datamodule's predict split (real
        images, which the CLI passes) only drives the loop: its first batch yields all
        `n_predict` images of the model's own latent vectors, the others none."""
        z = batch[0] if isinstance(batch, (tuple, list)) else batch
        if z.dim() != 2 or z.shape[1] != self.hparams.latent_dim:
            if batch_idx > 0:
                return torch.empty(0, *self.hparams.img_shape)
            z = self.predict_latents()
        return torch.cat([self.generator(b.to(self.fixed_noise)).float().cpu() for b in z.split(1000)])

    def write_predictions(self, predictions: list, output_dir: Path) -> dict[str, Any]:
        """`samples.pt` (float [N, C, H, W] in [-1, 1]) and `samples.png` (grid of the first
        MAX_GRID) in `output_dir` (task=predict)."""
        images = torch.cat(predictions)
        pt = Path(output_dir) / "samples.pt"
        with atomic_output(pt) as tmp:
            torch.save(images.contiguous(), tmp)
        png = save_png(
            to_grid(
                images[:MAX_GRID],
                nrow=max(1, min(32, math.isqrt(min(len(images), MAX_GRID)))),
            ),
            Path(output_dir) / "samples.png",
        )
        return {"samples": str(pt), "samples_grid": str(png), "n": len(images)}
