"""Samples from a trained GAN generator (experiment=gan_mnist / gan_digits).

    python generate.py CKPT --out grid.png                 # 8x8 grid of 64 random samples
    python generate.py CKPT --out grid.png --fixed         # the run's fixed latent vectors (its sample grids)
    python generate.py CKPT --out samples/ -n 100          # 100 single PNGs (sample_0000.png ...)
    python generate.py CKPT --out samples.pt -n 1000       # a float tensor [N, 1, 28, 28] in [-1, 1]

CKPT is a Lightning checkpoint of `hybridlearn.gan.model.MLPGAN` (e.g. <run>/checkpoints/last.ckpt);
it is read with torch.load(weights_only=True). -n is capped at 10,000 for a grid PNG or a .pt file
and at 100,000 for a folder of single PNGs. Errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from hybridlearn.core.checkpoint import check_class, describe, read_checkpoint
from hybridlearn.core.errors import ConfigError, HybridlearnError
from hybridlearn.core.io import atomic_output
from hybridlearn.gan.callbacks import save_png, to_grid
from hybridlearn.gan.model import MAX_GRID, MLPGAN, Generator

MAX_FILES = 100_000  # single PNGs in a folder (-n with --out <folder>)


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
    hp = ck.get("hyper_parameters", {})
    g = Generator(
        hp.get("latent_dim", 128),
        hp.get("g_hidden", (256, 512, 1024)),
        hp.get("img_shape", (1, 28, 28)),
        hp.get("negative_slope", 0.2),
    )
    try:
        g.load_state_dict(
            {k[len("generator.") :].replace("_orig_mod.", ""): v for k, v in sd.items() if k.startswith("generator.")}
        )
    except RuntimeError as e:
        raise ConfigError(
            f"checkpoint {ckpt}: generator weights do not fit ({str(e).strip().splitlines()[0]})"
        ) from None
    return g.eval(), sd.get("fixed_noise"), hp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpt", help="MLPGAN checkpoint (.ckpt)")
    ap.add_argument(
        "--out",
        required=True,
        help="grid .png, a folder for single PNGs, or a .pt tensor file",
    )
    ap.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fixed", action="store_true", help="use the checkpoint's fixed latent vectors")
    ap.add_argument("--nrow", type=int, default=8, help="images per grid row")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.n <= 0:
            raise ConfigError(f"-n must be > 0 (got {args.n})")
        out = Path(args.out)
        cap = MAX_GRID if out.suffix.lower() in (".png", ".pt") else MAX_FILES
        if args.n > cap:
            hint = (
                "write a folder of single PNGs (--out samples/) or split into several .pt files"
                if out.suffix.lower() == ".png"
                else "split the samples into several runs (--seed)"
            )
            raise ConfigError(f"-n {args.n} is more than {cap:,} samples for --out {out}; {hint}")
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
            if out.exists() and not args.overwrite:
                raise ConfigError(f"{out} already exists; choose another --out or pass --overwrite")
            save_png(to_grid(images, args.nrow), out)
        elif out.suffix.lower() == ".pt":
            with atomic_output(out, overwrite=args.overwrite) as tmp:
                torch.save(images.contiguous(), tmp)
        elif out.suffix == "":
            if out.exists() and any(out.glob("sample_*.png")) and not args.overwrite:
                raise ConfigError(f"{out} already holds samples; choose another --out or pass --overwrite")
            for i, im in enumerate(images):
                save_png(to_grid(im[None], 1, padding=0), out / f"sample_{i:04d}.png")
        else:
            raise ConfigError(f"--out must end in .png (grid) or .pt (tensor), or be a folder (got {out})")
    except HybridlearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(images)} sample(s) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
