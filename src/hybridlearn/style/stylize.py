"""Stylize a video (or an image) with one style image from Python: `stylize(input, style, output)`.

The objects are built from the settings dataclasses (style/conf.py) and checked as the command line
checks them (core.settings), so a bad value is the same one-line ConfigError naming its key. The
command line (`python stylize.py ...`, `hybridlearn-stylize ...`) is style/cli.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hybridlearn.core.checkpoint import instantiate_module
from hybridlearn.core.cli import one_line
from hybridlearn.core.conf import PathsConfig
from hybridlearn.core.errors import ConfigError, root_error
from hybridlearn.core.memory import DEFAULT_KEEP_MB, keep_freed_memory
from hybridlearn.core.settings import check_settings
from hybridlearn.core.trainer import build_trainer
from hybridlearn.style.conf import StyleTransferConfig, StyleWriterConfig, VideoDataConfig
from hybridlearn.style.model import StyleTransfer


def _node(schema: type, values: dict | None, path: str) -> DictConfig:
    """The settings dataclass `schema` with `values` merged in; a wrong key or type is one line."""
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), values or {})
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}.{one_line(e)}") from None


def build(node: DictConfig, module: bool = False) -> Any:
    """The object a settings node describes (a LightningModule with `module`: instantiate_module, so
    it keeps its config as the runner's do); our one-line errors raised by a constructor (a missing
    file) come out as themselves, not wrapped by Hydra."""
    try:
        return instantiate_module(node) if module else instantiate(node)
    except InstantiationException as e:
        cause = root_error(e)
        if cause is not e:
            raise cause from None
        raise


def settings(
    input: str | os.PathLike | None = None,
    style: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    data: dict | None = None,
    model: dict | None = None,
    writer: dict | None = None,
    mirrors: list | str | None = None,
) -> DictConfig:
    """The config `experiment=style_video input=... style=... output=...` composes (its `data`, `model`,
    `callbacks.style_writer` and `paths`), with `data` / `model` / `writer` merged into those nodes,
    checked like the command's. DATA_DIR (default ./data) holds the data, as for the command."""
    out_dir = Path(output).parent if output else Path(".")
    root = OmegaConf.create(
        {
            "input": None if input is None else str(input),
            "style": None if style is None else str(style),
            "output": None if output is None else str(output),
            "overwrite": bool(overwrite),
        }
    )
    root.paths = OmegaConf.structured(
        PathsConfig(data_dir=os.environ.get("DATA_DIR") or "data", output_dir=str(out_dir))
    )
    root.data = _node(VideoDataConfig, {**({} if mirrors is None else {"mirrors": mirrors}), **(data or {})}, "data")
    # the style images and Magenta files are fetched like the input (as conf/experiment/style_video.yaml)
    fetch = {"mirrors": "${data.mirrors}", "download_timeout": "${data.download_timeout}"}
    root.model = _node(StyleTransferConfig, {**fetch, **(model or {})}, "model")
    root.callbacks = {"style_writer": _node(StyleWriterConfig, writer, "callbacks.style_writer")}
    check_settings(root)
    return root


def style_model(style: str | os.PathLike, **model: Any) -> StyleTransfer:
    """A StyleTransfer for the style image `style` with the settings `model` (the rest their
    defaults: StyleTransferConfig), checked like the command's; e.g. style_model("starry_night.jpg",
    precision="fp32")."""
    return build(settings(style=style, model=model).model, module=True)


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

    data / model / writer: settings of VideoDataConfig, StyleTransferConfig and StyleWriterConfig
    (style/conf.py), the rest their defaults. `style` may be a path, an http(s) URL or a known
    painting; known files missing from DATA_DIR (default ./data, as the command line) are
    downloaded, from `mirrors` first (style/sources.py). malloc_keep_mb: as the command line's key,
    freed memory glibc keeps for reuse, for the whole process (core/memory.py; None: leave malloc alone).
    """
    cfg = settings(input, style, output, overwrite, data, model, {"progress": progress, **(writer or {})}, mirrors)
    keep_freed_memory(malloc_keep_mb)
    dm = build(cfg.data)
    module = build(cfg.model, module=True)
    w = build(cfg.callbacks.style_writer)
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    trainer = build_trainer(None, cfg.paths.output_dir, callbacks=[w], accelerator=accelerator)
    trainer.predict(module, datamodule=dm, return_predictions=False)
    return dict(module.extra_results)
