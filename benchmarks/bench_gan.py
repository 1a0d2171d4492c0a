"""Steady-state training throughput of the MLP GAN: a bare PyTorch loop vs `experiment=gan_mnist`.

    DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_gan.py [--steps 12 --warmup 3 --rounds 2]

Both sides run the same model and the same algorithm (D step on real + fake at batch 512, then G
step with fresh noise through the frozen D); data resident in memory. The Lightning side is the
real experiment config (Hydra-composed, MNIST in memory, CSV + TensorBoard loggers, progress bar
off) with FID switched off during the timed steps: its per-epoch cost is measured separately.
Variants are interleaved over `rounds` so drifting machine load hits every variant alike; the table
shows the median img/s per variant and the ratio to the bare loop of the same round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("DATA_DIR", str((ROOT / ".." / "shared" / "data").resolve()))

BATCH, LATENT = 512, 128


def bare_nets():
    g = nn.Sequential(nn.Linear(LATENT, 256), nn.LeakyReLU(0.2), nn.Linear(256, 512), nn.LeakyReLU(0.2),
                      nn.Linear(512, 1024), nn.LeakyReLU(0.2), nn.Linear(1024, 784), nn.Tanh())
    d = nn.Sequential(nn.Linear(784, 1024), nn.LeakyReLU(0.2), nn.Dropout(0.3), nn.Linear(1024, 512),
                      nn.LeakyReLU(0.2), nn.Dropout(0.3), nn.Linear(512, 256), nn.LeakyReLU(0.2), nn.Dropout(0.3),
                      nn.Linear(256, 1), nn.Sigmoid())
    return g, d


def bare_loop(steps: int, warmup: int, fused: bool = False) -> float:
    """Plain PyTorch, sigmoid + BCELoss as in the paper; returns img/s over the steps after warmup."""
    torch.manual_seed(0)
    g, d = bare_nets()
    kw = {"fused": True} if fused else {}
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999), **kw)
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999), **kw)
    data = torch.rand(8, BATCH, 1, 28, 28) * 2 - 1
    ones, zeros = torch.ones(BATCH, 1), torch.zeros(BATCH, 1)
    stamps = []
    for i in range(steps):
        real = data[i % len(data)]
        with torch.no_grad():
            fake = g(torch.randn(BATCH, LATENT)).view(BATCH, 1, 28, 28)
        p = d(torch.cat([real, fake]).flatten(1))
        loss_d = F.binary_cross_entropy(p, torch.cat([ones, zeros]))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        for q in d.parameters():
            q.requires_grad_(False)
        loss_g = F.binary_cross_entropy(d(g(torch.randn(BATCH, LATENT))), ones)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        for q in d.parameters():
            q.requires_grad_(True)
        stamps.append(time.perf_counter())
    return BATCH * (steps - warmup) / (stamps[-1] - stamps[warmup - 1])


def lightning_run(steps: int, warmup: int, overrides: list[str]) -> float:
    import lightning as L
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from hybridlearn.cli import _instantiate_group

    class Stamps(L.Callback):
        def __init__(self):
            self.t: list[float] = []

        def on_train_batch_end(self, *a, **k):
            self.t.append(time.perf_counter())

    out = Path(tempfile.mkdtemp(prefix="bench_gan_"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=gan_mnist", f"+trainer.limit_train_batches={steps}",
                                          "trainer.max_epochs=1", "model.fid.enabled=false",
                                          "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
                                          "~callbacks.model_summary", "callbacks.gan_samples.at_start=false",
                                          *overrides], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg["hydra"]
    L.seed_everything(0, verbose=False)
    dm = instantiate(cfg.data)
    dm.setup("fit")  # MNIST decoded before timing
    model = instantiate(cfg.model)
    stamps = Stamps()
    trainer = instantiate(cfg.trainer, callbacks=[*_instantiate_group(cfg.callbacks), stamps],
                          logger=_instantiate_group(cfg.logger) or False, default_root_dir=str(out))
    trainer.fit(model, datamodule=dm)
    t = stamps.t
    return BATCH * (len(t) - warmup) / (t[-1] - t[warmup - 1])


def fid_cost(n: int = 10000) -> float:
    """Seconds for one end-of-epoch evaluation (n samples: FID + class histogram)."""
    from hybridlearn.data.mnist import load_mnist, to_float
    from hybridlearn.gan_metrics import GANEvaluator, cached_classifier
    from hybridlearn.models.gan import Generator

    cache = os.environ.get("HYBRIDLEARN_CACHE", str(Path.home() / ".cache" / "hybridlearn"))
    net, info = cached_classifier(cache, os.environ["DATA_DIR"], 60000, 1)
    ev = GANEvaluator(net, info)
    real = to_float(load_mnist(os.environ["DATA_DIR"])["train_x"][:n], "tanh")
    ev.set_reference(real)
    g = Generator()
    t0 = time.perf_counter()
    ev.evaluate(g, LATENT, n)
    return time.perf_counter() - t0


VARIANTS = {
    "lightning (default: fused Adam)": [],
    "lightning foreach Adam": ["model.optimizer_impl=foreach"],
    "lightning for-loop Adam": ["model.optimizer_impl=forloop"],
    "lightning fused + reuse_fake": ["model.reuse_fake=true"],
    "lightning fused + torch.compile": ["model.compile=true"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", default="all", help="comma-separated names from VARIANTS, or all")
    ap.add_argument("--no-fid", action="store_true")
    args = ap.parse_args()
    names = list(VARIANTS) if args.variants == "all" else [n for n in VARIANTS if any(k in n for k in args.variants.split(","))]
    res: dict[str, list[float]] = {"bare loop (for-loop Adam)": [], "bare loop, fused Adam": []}
    ratios: dict[str, list[float]] = {}
    for r in range(args.rounds):
        bare = bare_loop(args.steps, args.warmup)
        res["bare loop (for-loop Adam)"].append(bare)
        res["bare loop, fused Adam"].append(bare_loop(args.steps, args.warmup, fused=True))
        for n in names:
            v = lightning_run(args.steps, args.warmup, VARIANTS[n])
            res.setdefault(n, []).append(v)
            ratios.setdefault(n, []).append(v / bare)
        print(f"round {r + 1}: " + ", ".join(f"{k}={v[-1]:.0f}" for k, v in res.items()), flush=True)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, "
          f"{args.steps - args.warmup} timed steps x {args.rounds} rounds (median)\n")
    print("| variant | img/s | s/step | vs bare loop |")
    print("|---|---|---|---|")
    for k, v in res.items():
        m = statistics.median(v)
        ratio = statistics.median(ratios[k]) if k in ratios else m / statistics.median(res["bare loop (for-loop Adam)"])
        print(f"| {k} | {m:.0f} | {BATCH / m:.3f} | {ratio:.2f}x |")
    if not args.no_fid:
        print(f"\nend-of-epoch evaluation (10k samples: LeNet-FID + class histogram): {fid_cost():.1f} s")


if __name__ == "__main__":
    main()
