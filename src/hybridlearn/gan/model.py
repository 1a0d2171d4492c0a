"""The GAN LightningModule (Lightning's GAN example as a recipe: manual optimization, per batch a
discriminator step, then a generator step) and `MLPGAN`, the paper's MNIST GAN.

The networks are plain nn.Modules built from config (`model.generator`, `model.discriminator`,
hybridlearn.gan.nets) and handed to `GAN`, which is about training only: the losses
(`model.loss`, hybridlearn.gan.losses), the D:G update ratio (`model.d_steps`), one-sided label
smoothing, the EMA generator (`model.ema_decay`, hybridlearn.gan.ema), the optimizers, the private
RNG that makes resumes exact, and the LeNet-FID evaluations (hybridlearn.gan.metrics).

Paper's model (`MLPGAN`, model=mlp_gan: hybridlearn.gan.conf.MLPGANConfig): generator 128 -> 256
-> 512 -> 1024 -> 784 (LeakyReLU 0.2, tanh), discriminator 784 -> 1024 -> 512 -> 256 -> 1 (LeakyReLU
0.2 + dropout 0.3);
each batch one D step on real + fake, then one G step through the frozen D (as Keras' `combined`
model with `discriminator.trainable = False`). The discriminator's sigmoid is folded into the loss
(`binary_cross_entropy_with_logits`, the same function without saturating to inf/NaN).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from hybridlearn.core.checkpoint import last_checkpoint
from hybridlearn.core.errors import ConfigError, HybridlearnError
from hybridlearn.core.io import atomic_output
from hybridlearn.core.loaders import tensor_loader
from hybridlearn.core.trainer import TrainerFactory
from hybridlearn.gan.callbacks import save_png, to_grid
from hybridlearn.gan.conf import MAX_GRID, MLPGANConfig
from hybridlearn.gan.ema import EMA
from hybridlearn.gan.losses import d_loss, g_loss, r1_penalty
from hybridlearn.gan.metrics import GANEvaluator, collect_images, fid_settings
from hybridlearn.gan.nets import GenDropout, build_net

log = logging.getLogger(__name__)


class NonFiniteLossError(HybridlearnError):
    """A GAN loss became NaN/inf: training stops before the bad update (one-line CLI error)."""


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


def as_net(net: nn.Module | Mapping[str, Any], what: str) -> nn.Module:
    """A network, or the `{_target_: ...}` spec a checkpoint's hyper-parameters hold (load_from_checkpoint)."""
    if isinstance(net, nn.Module):
        return net
    if isinstance(net, Mapping):
        return build_net(net, what)
    raise ConfigError(f"{what} must be a network config with a _target_ (got {net!r})")


class GAN(L.LightningModule):
    """A GAN of any generator / discriminator pair (hybridlearn.gan.nets), trained with manual
    optimization. Options beyond the paper, all off by default:
    `loss`: nonsaturating (the paper's BCE) | hinge;
    `d_steps` k: the generator is updated after every k-th discriminator step (one D step per batch);
    `label_smoothing` s > 0: one-sided label smoothing, D's real targets 1 - s (Salimans et al. 2016);
    `ema_decay`: an EMA of the generator's weights (hybridlearn.gan.ema) gives the samples, the FIDs
    (so the "best" checkpoint), task=predict and generate.py; the raw generator keeps training.
    `n_predict` / `predict_seed`: the images task=predict generates (hybridlearn.gan.generate caps)."""

    def __init__(
        self,
        generator: nn.Module | Mapping[str, Any],
        discriminator: nn.Module | Mapping[str, Any],
        g_lr: float,
        d_lr: float,
        b1: float,
        b2: float,
        loss: str,
        d_steps: int,
        label_smoothing: float,
        r1_gamma: float,
        r1_every: int,
        ema_decay: float | None,
        optimizer_impl: str,
        reuse_fake: bool,
        compile: bool,
        num_fixed: int,
        fixed_seed: int,
        n_predict: int,
        predict_seed: int,
        fid: Mapping[str, Any],
    ):
        """The settings are those of `model` (hybridlearn.gan.conf.GANConfig: their types, ranges and
        defaults, checked before torch is imported); the Python API builds a GAN from that dataclass."""
        super().__init__()
        self.generator = as_net(generator, "model.generator")
        self.discriminator = as_net(discriminator, "model.discriminator")
        if not isinstance(getattr(self.generator, "latent_dim", None), int):
            raise ConfigError("model.generator must have an integer `latent_dim` (the size of its input noise)")
        self.save_hyperparameters(ignore=["generator", "discriminator"])
        self.fid_cfg = fid_settings(fid)
        # the networks' specs, so a checkpoint rebuilds them (generate.py, load_from_checkpoint)
        self.hparams.update(
            generator=getattr(self.generator, "spec", None), discriminator=getattr(self.discriminator, "spec", None)
        )
        self.automatic_optimization = False
        self.latent_dim: int = self.generator.latent_dim
        self.generator_ema = EMA(self.generator, ema_decay) if ema_decay is not None else None
        if compile:
            self.generator.compile()
            self.discriminator.compile()
        # The grid's latent vectors: a buffer, so checkpoints carry it and resumes reuse it.
        g = torch.Generator().manual_seed(fixed_seed)
        self.register_buffer("fixed_noise", torch.randn(num_fixed, self.latent_dim, generator=g))
        # Training noise and dropout masks come from a private generator whose state is saved in
        # checkpoints: the global RNG is also drawn by DataLoader iterators, at points that differ
        # between a fresh epoch and a resumed one, so it cannot make resumes exact on its own.
        self._rng_seed = int(torch.randint(0, 2**62, (1,)).item())  # seeded by seed_everything
        self._rng: torch.Generator | None = None
        self._rng_pending: dict[str, Any] | None = None
        self.evaluator: GANEvaluator | None = None  # LeNet-FID vs training images: made by prepare_helpers
        self.val_evaluator: GANEvaluator | None = None  # vs held-out training images (data's val split)
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
    @property
    def sampler(self) -> nn.Module:
        """The generator samples come from: its EMA when `model.ema_decay` is set, else itself."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.sampler(z)

    @torch.no_grad()
    def sample_fixed(self) -> torch.Tensor:
        """Images of the fixed latent vectors, in [-1, 1]."""
        return self.sampler(self.fixed_noise)

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
            self.latent_dim,
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

    def attached(self) -> bool:
        """Inside a Trainer (outside: unit tests, benchmarks call d_step / g_step directly)."""
        try:
            return self.trainer is not None
        except RuntimeError:
            return False

    def backward_(self, loss: torch.Tensor) -> None:
        self.manual_backward(loss) if self.attached() else loss.backward()

    def check_finite(self, name: str, loss: torch.Tensor) -> None:
        if torch.isfinite(loss).item():
            return
        where, keep = "", "no checkpoint had been saved yet"
        if self.attached():
            where = f" at epoch {self.current_epoch} batch {self.trainer.fit_loop.epoch_loop.batch_idx}"
            last = last_checkpoint(self.trainer)
            keep = f"the last good checkpoint is {last}; resume from it with ckpt_path={last}" if last else keep
        raise NonFiniteLossError(
            f"non-finite GAN loss {name}={loss.item()}{where}; training stopped before this update "
            f"({keep}); try lower model.g_lr / model.d_lr"
        )

    def d_step(
        self, real: torch.Tensor, opt_d: torch.optim.Optimizer, z: torch.Tensor | None = None, batch_idx: int = 0
    ):
        """Discriminator update on real + fake (one forward of both), with R1 on the reals on every
        `r1_every`-th batch of the epoch. Returns (loss, fake, D(x), D(G(z)))."""
        b, hp = real.shape[0], self.hparams
        z = self.noise(b).to(real.dtype) if z is None else z
        with contextlib.nullcontext() if hp.reuse_fake else torch.no_grad():
            fake = self.generator(z)
        r1 = hp.r1_gamma > 0 and batch_idx % hp.r1_every == 0
        if r1:
            real = real.detach().requires_grad_(True)
        logits = self.discriminator.logits(torch.cat([real, fake.detach()]))
        loss = d_loss(hp.loss, logits[:b], logits[b:], 1.0 - hp.label_smoothing)  # one-sided: fakes stay 0
        if r1:  # lazy: every r1_every-th step, scaled by r1_every so the mean pull is the same
            loss = loss + 0.5 * hp.r1_gamma * hp.r1_every * r1_penalty(logits[:b], real)
        self.check_finite("d_loss", loss)
        opt_d.zero_grad(set_to_none=True)
        self.backward_(loss)
        opt_d.step()
        with torch.no_grad():
            p = torch.sigmoid(logits)
        return loss.detach(), fake, p[:b].mean(), p[b:].mean()

    def g_step(self, b: int, opt_g: torch.optim.Optimizer, fake: torch.Tensor | None = None):
        """Generator update through the frozen discriminator, then the EMA update. Returns the loss."""
        if fake is None or not fake.requires_grad:
            fake = self.generator(self.noise(b))
        with frozen(self.discriminator):
            loss = g_loss(self.hparams.loss, self.discriminator.logits(fake))
            self.check_finite("g_loss", loss)
            opt_g.zero_grad(set_to_none=True)
            self.backward_(loss)
        opt_g.step()
        if self.generator_ema is not None:
            self.generator_ema.update(self.generator)
        return loss.detach()

    def training_step(self, batch, batch_idx):
        """One D step per batch; a G step after every `d_steps`-th (the batch index within the epoch)."""
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        opt_g, opt_d = self.optimizers()
        d_loss_, fake, d_real, d_fake = self.d_step(real, opt_d, batch_idx=batch_idx)
        losses = {"train/d_loss": d_loss_}
        if (batch_idx + 1) % self.hparams.d_steps == 0:
            losses["train/g_loss"] = self.g_step(real.shape[0], opt_g, fake if self.hparams.reuse_fake else None)
        b = real.shape[0]
        self.log_dict(losses, on_step=True, on_epoch=True, prog_bar=True, batch_size=b, sync_dist=True)
        self.log_dict(
            {"train/d_real": d_real, "train/d_fake": d_fake}, on_step=False, on_epoch=True, batch_size=b, sync_dist=True
        )

    # ---------------------------------------------------------------- quality metrics
    def datamodule_images(self, split: str, n: int) -> torch.Tensor | None:
        """The first n images of the datamodule's `split`; None when it has none."""
        dm = getattr(self.trainer, "datamodule", None)
        fn = getattr(dm, f"{split}_dataloader", None)
        if fn is None:
            return None
        try:
            loader = fn()
            return collect_images(loader, n) if len(loader) else None
        except Exception as e:  # noqa: BLE001 - a datamodule without that split
            log.warning("no %s images for the FID: %s", split, e)
            return None

    def on_fit_start(self) -> None:
        """The real references (training images; held-out training images for `val/fid` when the
        data module has a val split), the untrained generator's FID and the floors."""
        ev, c = self.evaluator, self.fid_cfg
        if ev is None:
            return
        self.extra_results["fid_classifier"] = ev.classifier_info
        real = self.datamodule_images("train", c.num_real)
        ev.set_reference(real)
        held_out = self.datamodule_images("val", c.num_real)
        if held_out is not None and len(held_out) >= 2:
            self.val_evaluator = ev.with_new_reference()
            self.val_evaluator.set_reference(held_out)
            # the val floor: as many training images as held-out ones, against the held-out ones
            floor = self.val_evaluator.fid_of_images(real[: len(held_out)])
            self.extra_results.update({"val/fid_floor": floor, "fid_val_n": len(held_out)})
        if self.current_epoch == 0 and not self.trainer.ckpt_path and "fid_init" not in self.extra_results:
            self.extra_results["fid_init"] = ev.evaluate(self.sampler, self.latent_dim, c.num_samples)["fid"]
        other = self.datamodule_images("test", c.num_samples)
        if other is not None and len(other) >= 2:
            floor = ev.fid_of_images(other)
            self.extra_results.update({"fid_floor": floor, "fid_floor_n": len(other), "fid_real_n": len(real)})
            log.info("FID floor (test vs %d training images): %.3f", len(real), floor)

    def on_train_epoch_end(self) -> None:
        c = self.fid_cfg
        if self.evaluator is None or (self.current_epoch + 1) % c.every_n_epochs:
            return
        images = self.evaluator.samples(self.sampler, self.latent_dim, c.num_samples)
        stats = self.evaluator.evaluate_images(images)
        self.log("fid", stats["fid"], prog_bar=True, sync_dist=True)
        if self.val_evaluator is not None:
            self.log("val/fid", self.val_evaluator.fid_of_images(images), prog_bar=True, sync_dist=True)
        if "fid_floor" in self.extra_results:
            self.log("fid_floor", self.extra_results["fid_floor"], sync_dist=True)
        self.log_dict(
            {f"gen/{k}": v for k, v in stats.items() if k not in ("fid", "class_hist", "balanced")}, sync_dist=True
        )
        self.log_dict({f"gen/class_{i}": v for i, v in enumerate(stats["class_hist"])}, sync_dist=True)
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
        """test/fid: mean over `model.fid.test_draws` independent sample draws (test/fid_std their
        standard deviation), class histogram and balance of the first draw."""
        if self.evaluator is None or not self._test_real:
            return
        self.extra_results["fid_classifier"] = self.evaluator.classifier_info
        ev = self.evaluator.with_new_reference()  # the training reference stays for later epochs
        test_real = torch.cat(self._test_real)[: self.fid_cfg.num_samples]
        if len(test_real) < 2:
            return
        ev.set_reference(test_real)
        stats = ev.evaluate(self.sampler, self.latent_dim, self.fid_cfg.num_samples, draws=self.fid_cfg.test_draws)
        out = {f"test/{k}": stats[k] for k in ("fid", "fid_std", "confidence", "modes_covered", "classes_balanced")}
        train = self.datamodule_images("train", len(test_real))
        if train is not None and len(train) >= 2:
            out["test/fid_floor"] = ev.fid_of_images(train)
        self.log_dict({k: v for k, v in out.items() if v is not None}, sync_dist=True)
        self.extra_results.update(
            {f"test/{k}": stats[k] for k in ("class_hist", "balanced", "fid_draws")} | {"test/fid_n": len(test_real)}
        )

    # ---------------------------------------------------------------- task=predict
    def predict_latents(self) -> torch.Tensor:
        """The `n_predict` latent vectors of task=predict (seeded by `predict_seed`)."""
        g = torch.Generator().manual_seed(self.hparams.predict_seed)
        return torch.randn(self.hparams.n_predict, self.latent_dim, generator=g)

    def predict_dataloader(self) -> DataLoader:
        """The latent vectors in batches of 1000 (used when no datamodule is given)."""
        return tensor_loader(self.predict_latents(), batch_size=1000, shuffle=False)

    def predict_step(self, batch, batch_idx):
        """Images in [-1, 1] of a batch of latent vectors. A datamodule's predict split (real
        images, which the CLI passes) only drives the loop: its first batch yields all
        `n_predict` images of the model's own latent vectors, the others none."""
        z = batch[0] if isinstance(batch, (tuple, list)) else batch
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            if batch_idx > 0:
                return torch.empty(0, *self.sampler.img_shape)
            z = self.predict_latents()
        return torch.cat([self.sampler(b.to(self.fixed_noise)).float().cpu() for b in z.split(1000)])

    def write_predictions(self, predictions: list, output_dir: Path) -> dict[str, Any]:
        """`samples.pt` (float [N, C, H, W] in [-1, 1]) and `samples.png` (grid of the first
        MAX_GRID) in `output_dir` (task=predict)."""
        images = torch.cat(predictions)
        pt = Path(output_dir) / "samples.pt"
        with atomic_output(pt) as tmp:
            torch.save(images.contiguous(), tmp)
        png = save_png(
            to_grid(images[:MAX_GRID], nrow=max(1, min(32, math.isqrt(min(len(images), MAX_GRID))))),
            Path(output_dir) / "samples.png",
        )
        return {"samples": str(pt), "samples_grid": str(png), "n": len(images)}


class MLPGAN(GAN):
    """The paper's MNIST GAN: `GAN` whose networks default to the paper's MLPs (model=mlp_gan,
    hybridlearn.gan.conf.MLPGANConfig). A class of its own so the paper's model reads as such and its
    checkpoints keep their class tag."""

    def __init__(
        self,
        generator: nn.Module | Mapping | None = None,
        discriminator: nn.Module | Mapping | None = None,
        **kwargs: Any,
    ):
        paper = OmegaConf.structured(MLPGANConfig)  # the discriminator's img_shape follows the generator's
        super().__init__(
            instantiate(paper.generator, _convert_="all") if generator is None else generator,
            instantiate(paper.discriminator, _convert_="all") if discriminator is None else discriminator,
            **kwargs,
        )
