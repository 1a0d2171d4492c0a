"""Stylize a video (or an image) with one style image from Python: `stylize(input, style, output)`.

The command line (`python stylize.py ...`, `hybridlearn-stylize ...`) is style/cli.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from hybridlearn.core.memory import DEFAULT_KEEP_MB, keep_freed_memory
from hybridlearn.core.trainer import build_trainer
from hybridlearn.style.model import StyleTransfer
from hybridlearn.style.video import VideoFramesDataModule
from hybridlearn.style.writer import StylizedVideoWriter


def stylize(
    input: str | os.PathLike,
    style: str | os.PathLike,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    data: dict | None = None,
    model: dict | None = None,
    writer: dict | None = None,
    accelerator: str = "auto",
    progress: bool = True,
    mirrors: list | str | None = None,
    malloc_keep_mb: int | None = DEFAULT_KEEP_MB,
) -> dict[str, Any]:
    """Stylize a video (or an image) file; returns the run's results (frames, flicker, fps...).

    `style` may be a path, an http(s) URL or a known painting; known files missing from DATA_DIR
    (default ./data, as the command line) are downloaded, from `mirrors` first (style/sources.py).
    malloc_keep_mb: as the command line's key, freed memory glibc keeps for reuse, for the whole
    process (core/memory.py; None: leave malloc alone).
    """
    keep_freed_memory(malloc_keep_mb)
    data_dir = os.environ.get("DATA_DIR") or "data"
    dm = VideoFramesDataModule(path=str(input), data_dir=data_dir, **{"mirrors": mirrors, **(data or {})})
    module = StyleTransfer(style_image=str(style), data_dir=data_dir, **{"mirrors": mirrors, **(model or {})})
    w = StylizedVideoWriter(
        **{
            "output": None if output is None else str(output),
            "overwrite": overwrite,
            "progress": progress,
            **(writer or {}),
        }
    )
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    trainer = build_trainer(None, Path(output).parent if output else ".", callbacks=[w], accelerator=accelerator)
    trainer.predict(module, datamodule=dm, return_predictions=False)
    return dict(module.extra_results)
