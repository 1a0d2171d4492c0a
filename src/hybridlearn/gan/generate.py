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
from pathlib import Path

from hybridlearn.core.cli import ArgumentParser, load_entry
from hybridlearn.core.errors import ConfigError, one_line_errors
from hybridlearn.gan.conf import MAX_GRID  # images in one PNG grid or .pt (-n, and model.n_predict)

MAX_FILES = 100_000  # single PNGs in a folder (-n with --out <folder>)
# The sampling itself (torch) is imported only once the arguments are known to be good.
WRITE_SAMPLES = "hybridlearn.gan.sampling:write_samples"


def parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpt", help="MLPGAN checkpoint (.ckpt)")
    ap.add_argument("--out", required=True, help="grid .png, a folder for single PNGs, or a .pt tensor file")
    ap.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fixed", action="store_true", help="use the checkpoint's fixed latent vectors")
    ap.add_argument("--nrow", type=int, default=8, help="images per grid row")
    ap.add_argument("--overwrite", action="store_true")
    return ap


def check_args(args: argparse.Namespace) -> None:
    """Every refusal that needs no checkpoint: -n, --out, an existing output."""
    if args.n <= 0:
        raise ConfigError(f"-n must be > 0 (got {args.n})")
    out = Path(args.out)
    kind = out.suffix.lower()
    if kind not in (".png", ".pt", ""):
        raise ConfigError(f"--out must end in .png (grid) or .pt (tensor), or be a folder (got {out})")
    cap = MAX_GRID if kind else MAX_FILES
    if args.n > cap:
        hint = (
            "write a folder of single PNGs (--out samples/) or split into several .pt files"
            if kind == ".png"
            else "split the samples into several runs (--seed)"
        )
        raise ConfigError(f"-n {args.n} is more than {cap:,} samples for --out {out}; {hint}")
    if not args.overwrite and kind and out.exists():
        raise ConfigError(f"{out} already exists; choose another --out or pass --overwrite")
    if not args.overwrite and not kind and any(out.glob("sample_*.png")):
        raise ConfigError(f"{out} already holds samples; choose another --out or pass --overwrite")
    if not Path(args.ckpt).expanduser().is_file():
        raise ConfigError(f"checkpoint {args.ckpt} is not a file; give a .ckpt (e.g. <run>/checkpoints/last.ckpt)")


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    check_args(args)
    n = load_entry(WRITE_SAMPLES)(args)
    print(f"wrote {n} sample(s) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
