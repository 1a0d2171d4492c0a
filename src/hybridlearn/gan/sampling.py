"""Samples from an MLPGAN checkpoint: the work behind `generate.py` (see hybridlearn/gan/generate.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hybridlearn.core.checkpoint import check_class, describe, read_checkpoint
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.io import atomic_output
from hybridlearn.gan.callbacks import save_png, to_grid
from hybridlearn.gan.model import MLPGAN, Generator

GENERATOR_KEYS = ("latent_dim", "g_hidden", "img_shape", "negative_slope")  # MLPGAN's, in Generator's order


def load_generator(ckpt: str | Path):
    """(generator in eval mode, fixed_noise, hyper-parameters) from an MLPGAN checkpoint, read by the
    one checkpoint loader (weights_only=True; one line for a non-checkpoint or another model's)."""
    ck = read_checkpoint(ckpt, "checkpoint")
    check_class(ck, MLPGAN, ckpt)
    sd = ck["state_dict"]
    if not any(k.startswith("generator.") for k in sd):
        raise ConfigError(
            f"checkpoint {ckpt} holds {describe(ck)}, not an MLPGAN (no generator weights); "
            "give a checkpoint of experiment=gan_mnist or gan_digits"
        )
    hp = ck.get("hyper_parameters") or {}
    missing = [k for k in GENERATOR_KEYS if k not in hp]
    if missing:
        raise ConfigError(
            f"checkpoint {ckpt} lacks the generator's hyper-parameters {missing}; give a checkpoint saved by MLPGAN"
        )
    g = Generator(*(hp[k] for k in GENERATOR_KEYS))
    try:
        g.load_state_dict(
            {k[len("generator.") :].replace("_orig_mod.", ""): v for k, v in sd.items() if k.startswith("generator.")}
        )
    except RuntimeError as e:
        raise ConfigError(
            f"checkpoint {ckpt}: generator weights do not fit ({str(e).strip().splitlines()[0]})"
        ) from None
    return g.eval(), sd.get("fixed_noise"), hp


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
