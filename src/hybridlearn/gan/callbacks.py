"""Sample grids of a GAN's fixed latent vectors during training (the paper's fig. 14), an animated
GIF of them, and the same grids as images in TensorBoard / W&B when those loggers are active."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from hybridlearn.core.io import atomic_output, save_gif

log = logging.getLogger(__name__)
FRAME_RE = re.compile(r"epoch_(\d+)\.png$")


def to_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """[-1, 1] images [N, C, H, W] -> uint8 grid [3, H', W']."""
    grid = make_grid(
        images.detach().float().cpu().clamp(-1, 1),
        nrow=nrow,
        padding=padding,
        normalize=True,
        value_range=(-1, 1),
    )
    return grid.mul(255).round().to(torch.uint8)


def save_png(grid: torch.Tensor, path: Path) -> Path:
    with atomic_output(path, overwrite=True) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
    return path


def write_gif(
    frames: Sequence[Path],
    path: Path,
    duration_ms: int = 300,
    last_ms: int = 1500,
    label: bool = True,
) -> Path:
    """Animated GIF of PNG frames (named epoch_NNNN.png), each labelled with its epoch."""
    images = []
    for f in frames:
        im = Image.open(f).convert("RGB")
        if label:
            m = FRAME_RE.search(f.name)
            band = Image.new("RGB", (im.width, 14), (0, 0, 0))
            ImageDraw.Draw(band).text((2, 1), f"epoch {int(m.group(1)) if m else '?'}", fill=(255, 255, 0))
            canvas = Image.new("RGB", (im.width, im.height + 14))
            canvas.paste(band, (0, 0))
            canvas.paste(im, (0, 14))
            im = canvas
        images.append(im.quantize(colors=64))
    durations = [duration_ms] * (len(images) - 1) + [last_ms]
    save_gif(images, path, durations)
    return path


class GANSampleGrid(L.Callback):
    """Every `every_n_epochs` epochs, at each epoch listed in `epochs` (1-based) and at the last
    epoch, write `<dirpath>/epoch_NNNN.png`: an 8x8 grid of `pl_module.sample_fixed()`, i.e. the
    same latent vectors every time. `at_start` adds epoch_0000 (the untrained generator).
    `<dirpath>/training.gif` animates all grids of the run and is rewritten at each new grid.
    """

    def __init__(
        self,
        dirpath: str,
        every_n_epochs: int,
        epochs: Sequence[int],
        at_start: bool,
        nrow: int,
        gif: bool,
        gif_ms: int,
    ):
        """Settings: `callbacks.gan_samples` (hybridlearn.gan.conf.GANSampleGridConfig)."""
        self.dirpath, self.every, self.epochs = (
            Path(dirpath),
            every_n_epochs,
            {int(e) for e in epochs},
        )
        self.at_start, self.nrow, self.gif, self.gif_ms = at_start, nrow, gif, gif_ms
        self.written: list[Path] = []

    def _due(self, trainer: L.Trainer, epoch: int) -> bool:
        return (
            epoch in self.epochs
            or (self.every > 0 and epoch % self.every == 0)
            or epoch == trainer.max_epochs
            or trainer.fast_dev_run
        )

    @rank_zero_only
    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        was = pl_module.training
        pl_module.eval()
        images = pl_module.sample_fixed()
        pl_module.train(was)
        grid = to_grid(images, self.nrow)
        path = save_png(grid, self.dirpath / f"epoch_{epoch:04d}.png")
        self.written.append(path)
        if self.gif:
            frames = sorted(self.dirpath.glob("epoch_*.png"))
            write_gif(frames, self.dirpath / "training.gif", self.gif_ms)
        for lg in trainer.loggers:
            name = type(lg).__name__
            try:
                if name == "TensorBoardLogger":
                    lg.experiment.add_image("samples/fixed_noise", grid, global_step=epoch)
                elif name == "WandbLogger":
                    lg.log_image(
                        key="samples/fixed_noise",
                        images=[grid.permute(1, 2, 0).numpy()],
                        caption=[f"epoch {epoch}"],
                    )
            except Exception as e:  # noqa: BLE001 - a logger failing must not stop training
                log.warning("could not log the sample grid to %s: %s", name, e)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_start and trainer.current_epoch == 0 and not trainer.sanity_checking:
            self._write(trainer, pl_module, 0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self._due(trainer, epoch):
            self._write(trainer, pl_module, epoch)
