"""Samples from a GAN checkpoint: the work behind `generate.py` (see hybridlearn/gan/generate.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybridlearn.core.checkpoint import CLASS_KEY, check_class, class_name, describe, read_checkpoint
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.io import atomic_output
from hybridlearn.gan.callbacks import save_png, to_grid
from hybridlearn.gan.model import GAN, MLPGAN
from hybridlearn.gan.nets import MLPGenerator, build_net

# MLPGAN checkpoints written before the networks were handed to the module (flat hyper-parameters)
LEGACY_GENERATOR_KEYS = ("latent_dim", "g_hidden", "img_shape", "negative_slope")  # MLPGenerator's order


def generator_of(ck: dict[str, Any], ckpt: str | Path) -> tuple[nn.Module, str]:
    """The untrained generator a checkpoint's hyper-parameters describe, and the state_dict prefix of
    the weights samples come from: the EMA generator's when the run kept one (model.ema_decay)."""
    hp = ck.get("hyper_parameters") or {}
    sd = ck["state_dict"]
    if isinstance(hp.get("generator"), dict):
        g = build_net(hp["generator"], f"checkpoint {ckpt}: hyper_parameters.generator")
    elif all(k in hp for k in LEGACY_GENERATOR_KEYS):
        g = MLPGenerator(*(hp[k] for k in LEGACY_GENERATOR_KEYS))
    else:
        raise ConfigError(
            f"checkpoint {ckpt} lacks the generator's hyper-parameters (a `generator` spec); give a checkpoint saved by GAN"
        )
    ema = "generator_ema.module."
    return g, ema if any(k.startswith(ema) for k in sd) else "generator."


def load_generator(ckpt: str | Path):
    """(generator in eval mode, fixed_noise, hyper-parameters) from a GAN checkpoint, read by the
    one checkpoint loader (weights_only=True; one line for a non-checkpoint or another model's).
    The generator holds the EMA weights when the run kept them, else the generator's own."""
    ck = read_checkpoint(ckpt, "checkpoint")
    if ck.get(CLASS_KEY) != class_name(MLPGAN):
        check_class(ck, GAN, ckpt)
    sd = ck["state_dict"]
    if not any(k.startswith("generator.") for k in sd):
        raise ConfigError(
            f"checkpoint {ckpt} holds {describe(ck)}, not a GAN (no generator weights); "
            "give a checkpoint of experiment=gan_mnist, gan_mnist_dcgan or gan_digits"
        )
    g, prefix = generator_of(ck, ckpt)
    try:
        g.load_state_dict(
            {k[len(prefix) :].replace("_orig_mod.", ""): v for k, v in sd.items() if k.startswith(prefix)}
        )
    except RuntimeError as e:
        raise ConfigError(
            f"checkpoint {ckpt}: generator weights do not fit ({str(e).strip().splitlines()[0]})"
        ) from None
    return g.eval(), sd.get("fixed_noise"), ck.get("hyper_parameters") or {}


def write_samples(args: argparse.Namespace) -> int:
    """Draw `args.n` samples and write them to `args.out` (checked by generate.py); returns how many."""
    out = Path(args.out)
    g, fixed, _ = load_generator(args.ckpt)
    if args.fixed:
        if fixed is None:
            raise ConfigError(f"{args.ckpt} has no fixed_noise buffer; drop --fixed")
        z = fixed[: args.n]
    else:
        z = torch.randn(args.n, g.latent_dim, generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        images = torch.cat([g(b) for b in z.split(1000)])
    if out.suffix.lower() == ".png":
        save_png(to_grid(images, args.nrow), out)
    elif out.suffix.lower() == ".pt":
        with atomic_output(out, overwrite=args.overwrite) as tmp:
            torch.save(images.contiguous(), tmp)
    else:
        for i, im in enumerate(images):
            save_png(to_grid(im[None], 1, padding=0), out / f"sample_{i:04d}.png")
    return len(images)
