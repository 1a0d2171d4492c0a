"""Steady-state training throughput of the MLP GAN: a bare PyTorch loop vs `experiment=gan_mnist`;
and (`--dcgan`) the wall time of an epoch of the paper's MLP GAN vs its modern training
(`experiment=gan_mnist_modern`) and the DCGAN (`experiment=gan_mnist_dcgan`).

    DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_gan.py --paired   # the recorded table
    DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_gan.py [--steps 12 --warmup 3 --rounds 2]
    DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_gan.py --dcgan [--steps 20 --rounds 5]

`--dcgan`: the experiments as configured (Hydra-composed, FID on at full size), each fitted for
`steps` batches of 512 on a subset, in interleaved rounds (mlp, modern, dcgan, mlp, ...); per
variant the best and median seconds per batch, of the end-of-epoch evaluation (10k samples: FID,
val FID when there is a val split, class histogram), and the estimated full run:
max_epochs x (117 batches x step + evaluation).

Both sides run the same model and the same algorithm (D step on real + fake at batch 512, then G
step with fresh noise through the frozen D); data resident in memory. The Lightning side is the
real experiment config (Hydra-composed, MNIST in memory, CSV + TensorBoard loggers, progress bar
off) with FID switched off during the timed steps: its per-epoch cost is measured separately.
Variants are interleaved over `rounds` so drifting machine load hits every variant alike; the table
shows the median img/s per variant and the ratio to the bare loop of the same round.
`--paired` (use this on a shared machine): one bare-loop step runs right after every Lightning
step, timed apart, and the ratio is the median of per-step ratios, so load swings cancel out.
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
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import describe  # noqa: E402

os.environ.setdefault("DATA_DIR", str((ROOT / ".." / "shared" / "data").resolve()))

BATCH, LATENT = 512, 128


def bare_nets():
    g = nn.Sequential(
        nn.Linear(LATENT, 256),
        nn.LeakyReLU(0.2),
        nn.Linear(256, 512),
        nn.LeakyReLU(0.2),
        nn.Linear(512, 1024),
        nn.LeakyReLU(0.2),
        nn.Linear(1024, 784),
        nn.Tanh(),
    )
    d = nn.Sequential(
        nn.Linear(784, 1024),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(1024, 512),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(512, 256),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(256, 1),
        nn.Sigmoid(),
    )
    return g, d


class BareStepper:
    """One bare-loop step at a time (so it can run interleaved with Lightning's steps)."""

    def __init__(self, fused: bool = False):
        torch.manual_seed(0)
        self.g, self.d = bare_nets()
        kw = {"fused": True} if fused else {}
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=2e-4, betas=(0.5, 0.999), **kw)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=2e-4, betas=(0.5, 0.999), **kw)
        self.data = torch.rand(8, BATCH, 1, 28, 28) * 2 - 1
        self.ones, self.zeros = torch.ones(BATCH, 1), torch.zeros(BATCH, 1)
        self.i = 0

    def step(self) -> None:
        g, d = self.g, self.d
        real = self.data[self.i % len(self.data)]
        self.i += 1
        with torch.no_grad():
            fake = g(torch.randn(BATCH, LATENT)).view(BATCH, 1, 28, 28)
        p = d(torch.cat([real, fake]).flatten(1))
        loss_d = F.binary_cross_entropy(p, torch.cat([self.ones, self.zeros]))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        for q in d.parameters():
            q.requires_grad_(False)
        loss_g = F.binary_cross_entropy(d(g(torch.randn(BATCH, LATENT))), self.ones)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        for q in d.parameters():
            q.requires_grad_(True)


def bare_loop(steps: int, warmup: int, fused: bool = False) -> tuple[float, float]:
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
        stamps.append((time.perf_counter(), time.process_time()))
    return rates(stamps, warmup)


def rates(stamps: list[tuple[float, float]], warmup: int) -> tuple[float, float]:
    """(img/s wall clock, img per CPU-second of this process) over the steps after warmup."""
    n = BATCH * (len(stamps) - warmup)
    (w0, c0), (w1, c1) = stamps[warmup - 1], stamps[-1]
    return n / (w1 - w0), n / (c1 - c0)


def register_settings() -> None:
    """The settings dataclasses Hydra composes conf/train.yaml from (as train.py registers them)."""
    from hybridlearn.core.conf import register_core
    from hybridlearn.core.settings import load_settings

    register_core()
    load_settings()


def lightning_run(steps: int, warmup: int, overrides: list[str], paired: bool = False):
    import lightning as L
    from hydra.utils import instantiate

    from hybridlearn.core.trainer import instantiate_group

    class Stamps(L.Callback):
        """Wall/CPU stamps per Lightning step; with `paired`, one bare-loop step after each
        Lightning step, timed apart, so both see the same machine load (ratio per step)."""

        def __init__(self):
            self.t: list[tuple[float, float]] = []
            self.bare = BareStepper() if paired else None
            self.pairs: list[tuple[float, float]] = []  # (lightning s, bare s)
            self._bare_s = 0.0

        def on_train_batch_end(self, *a, **k):
            now = time.perf_counter()
            if self.t and self.bare is not None:
                self.pairs.append((now - self.t[-1][0] - self._bare_s, 0.0))
            self.t.append((now, time.process_time()))
            if self.bare is not None:
                b0 = time.perf_counter()
                self.bare.step()
                self._bare_s = time.perf_counter() - b0
                if self.pairs:
                    self.pairs[-1] = (self.pairs[-1][0], self._bare_s)

    out = Path(tempfile.mkdtemp(prefix="bench_gan_"))
    cfg = compose_experiment(
        "gan_mnist",
        [
            f"+trainer.limit_train_batches={steps}",
            "trainer.max_epochs=1",
            "model.fid.enabled=false",
            "trainer.enable_progress_bar=false",
            "+trainer.enable_model_summary=false",
            "~callbacks.model_summary",
            "~callbacks.progress_bar",
            "callbacks.gan_samples.at_start=false",
            *overrides,
        ],
        out,
    )
    L.seed_everything(0, verbose=False)
    dm = instantiate(cfg.data)
    dm.setup("fit")  # MNIST decoded before timing
    model = instantiate(cfg.model)
    stamps = Stamps()
    trainer = instantiate(
        cfg.trainer,
        callbacks=[*instantiate_group(cfg.callbacks), stamps],
        logger=instantiate_group(cfg.logger) or False,
        default_root_dir=str(out),
    )
    trainer.fit(model, datamodule=dm)
    if paired:
        pairs = stamps.pairs[warmup:]
        return [(BATCH / lt, BATCH / bt) for lt, bt in pairs]
    return rates(stamps.t, warmup)


def compose_experiment(experiment: str, overrides: list[str], out: Path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    register_settings()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", *overrides], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg["hydra"]
    return cfg


def epoch_cost(experiment: str, overrides: list[str], steps: int, warmup: int) -> tuple[list[float], float, int, int]:
    """(seconds of each batch after `warmup`, seconds of one end-of-epoch evaluation, batches per
    epoch of the full data, max_epochs) of `experiment` fitted for `steps` batches."""
    import lightning as L
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from hybridlearn.core.trainer import TrainerFactory, instantiate_group

    class Stamps(L.Callback):
        def __init__(self):
            self.t: list[float] = []

        def on_train_batch_end(self, *a, **k):
            self.t.append(time.perf_counter())

    out = Path(tempfile.mkdtemp(prefix="bench_gan_"))
    batch = 512
    cfg = compose_experiment(
        experiment,
        [
            f"data.train_subset={steps * batch}",
            "trainer.enable_progress_bar=false",
            "~callbacks.progress_bar",
            "~callbacks.model_summary",
            "callbacks.gan_samples.at_start=false",
            "logger=csv",
            *overrides,
        ],
        out,
    )
    epochs = int(cfg.trainer.max_epochs)  # the experiment's, for the estimate; one is fitted here
    with open_dict(cfg):
        cfg.trainer.max_epochs = 1
    L.seed_everything(0, verbose=False)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    full_batches = (60000 - int(cfg.data.val_size)) // int(cfg.data.batch_size)
    model = instantiate(cfg.model)
    model.prepare_helpers(TrainerFactory())
    stamps = Stamps()
    trainer = instantiate(
        cfg.trainer,
        callbacks=[*instantiate_group(cfg.callbacks), stamps],
        logger=instantiate_group(cfg.logger) or False,
        default_root_dir=str(out),
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    step_s = [b - a for a, b in zip(stamps.t[warmup - 1 :], stamps.t[warmup:])]
    # one end-of-epoch evaluation, as GAN.on_train_epoch_end does it (reference already set by fit)
    c = model.fid_cfg
    t0 = time.perf_counter()
    images = model.evaluator.samples(model.sampler, model.latent_dim, c.num_samples)
    model.evaluator.evaluate_images(images)
    if model.val_evaluator is not None:
        model.val_evaluator.fid_of_images(images)
    return step_s, time.perf_counter() - t0, full_batches, epochs


DCGAN_VARIANTS = {
    "mlp (experiment=gan_mnist)": ("gan_mnist", []),
    "mlp, modern training (experiment=gan_mnist_modern)": ("gan_mnist_modern", []),
    "dcgan (experiment=gan_mnist_dcgan)": ("gan_mnist_dcgan", []),
    "dcgan, 2x channels": (
        "gan_mnist_dcgan",
        ["model.generator.channels=[128,64]", "model.discriminator.channels=[64,128]"],
    ),
}


def machine() -> str:
    return f"{describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def dcgan_table(args) -> None:
    """Per-epoch wall time of the MLP GAN vs the DCGAN, interleaved rounds; best and median."""
    names = [n for n in DCGAN_VARIANTS if args.variants == "all" or any(k in n for k in args.variants.split(","))]
    steps: dict[str, list[float]] = {n: [] for n in names}
    evals: dict[str, list[float]] = {n: [] for n in names}
    shape: dict[str, tuple[int, int]] = {}
    print(f"before: {machine()}", flush=True)
    for r in range(args.rounds):
        for n in names:
            exp, ov = DCGAN_VARIANTS[n]
            st, ev, batches, epochs = epoch_cost(exp, ov, args.steps, args.warmup)
            steps[n].append(statistics.median(st))  # the round's median batch
            evals[n].append(ev)
            shape[n] = (batches, epochs)
            print(f"round {r + 1} {n}: batch {steps[n][-1]:.3f} s, evaluation {ev:.2f} s", flush=True)
    print(f"after: {machine()}")
    print(
        f"\n{args.steps - args.warmup} timed batches of 512 x {args.rounds} interleaved rounds; per round the median "
        "batch; estimated run = max_epochs x (batches per epoch x batch + evaluation), from the medians\n"
    )
    print("| variant | batch s (best / median) | evaluation s (best / median) | epoch s | epochs | run min | vs mlp |")
    print("|---|---|---|---|---|---|---|")
    med = statistics.median
    base = None
    for n in names:
        batches, epochs = shape[n]
        epoch = batches * med(steps[n]) + med(evals[n])
        run = epochs * epoch
        base = base or run
        print(
            f"| {n} | {min(steps[n]):.3f} / {med(steps[n]):.3f} | {min(evals[n]):.2f} / {med(evals[n]):.2f} "
            f"| {epoch:.1f} | {epochs} | {run / 60:.1f} | {run / base:.2f}x |"
        )


def fid_cost(n: int = 10000) -> float:
    """Seconds for one end-of-epoch evaluation (n samples: FID + class histogram)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from hybridlearn.gan.conf import FIDConfig, MLPGANConfig
    from hybridlearn.gan.metrics import GANEvaluator, mnist_classifier
    from hybridlearn.mnist.data import load_mnist, to_float

    cache = os.environ.get("HYBRIDLEARN_CACHE", str(Path.home() / ".cache" / "hybridlearn"))
    fid = FIDConfig()
    net, info = mnist_classifier(os.environ["DATA_DIR"], cache, fid.classifier_train_size, fid.classifier_epochs)
    ev = GANEvaluator(net, info, fid.batch_size, fid.seed)
    real = to_float(load_mnist(os.environ["DATA_DIR"])["train_x"][:n], "tanh")
    ev.set_reference(real)
    g = instantiate(OmegaConf.structured(MLPGANConfig).generator, _convert_="all")
    t0 = time.perf_counter()
    ev.evaluate(g, LATENT, n)
    return time.perf_counter() - t0


VARIANTS = {
    "lightning (default: fused Adam)": [],
    "lightning for-loop Adam": ["model.optimizer_impl=forloop"],
    "lightning foreach Adam": ["model.optimizer_impl=foreach"],
    "lightning + reuse_fake": ["model.reuse_fake=true"],
    "lightning + torch.compile": ["model.compile=true"],
}


def paired_table(names: list[str], args) -> None:
    med = statistics.median
    rows = []
    for n in names:
        pairs = []
        for _ in range(args.rounds):
            pairs += lightning_run(args.steps, args.warmup, VARIANTS[n], paired=True)
        rows.append(
            (n, med(b for _, b in pairs), med(lt for lt, _ in pairs), med(lt / b for lt, b in pairs), len(pairs))
        )
        print(f"{n}: {rows[-1]}", flush=True)
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}; each Lightning step "
        f"is followed by one bare-loop step (for-loop Adam) timed apart; medians over steps\n"
    )
    print("| variant | steps | bare loop img/s | Lightning img/s | ratio (median of per-step ratios) |")
    print("|---|---|---|---|---|")
    for n, b, lt, r, k in rows:
        print(f"| {n} | {k} | {b:.0f} | {lt:.0f} | {r:.2f}x |")
    if not args.no_fid:
        print(f"\nend-of-epoch evaluation (10k samples: LeNet-FID + class histogram): {fid_cost():.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", default="all", help="comma-separated names from VARIANTS, or all")
    ap.add_argument("--no-fid", action="store_true")
    ap.add_argument("--dcgan", action="store_true", help="per-epoch time: the MLP GAN vs the DCGAN (interleaved)")
    ap.add_argument(
        "--paired",
        action="store_true",
        help="interleave one bare step after every Lightning step (robust on a shared machine)",
    )
    args = ap.parse_args()
    if args.dcgan:
        return dcgan_table(args)
    names = (
        list(VARIANTS)
        if args.variants == "all"
        else [n for n in VARIANTS if any(k in n for k in args.variants.split(","))]
    )
    if args.paired:
        return paired_table(names, args)
    res: dict[str, list[tuple[float, float]]] = {"bare loop (for-loop Adam)": [], "bare loop, fused Adam": []}
    ratios: dict[str, list[tuple[float, float]]] = {}
    for r in range(args.rounds):
        bare = bare_loop(args.steps, args.warmup)
        res["bare loop (for-loop Adam)"].append(bare)
        res["bare loop, fused Adam"].append(bare_loop(args.steps, args.warmup, fused=True))
        for n in names:
            v = lightning_run(args.steps, args.warmup, VARIANTS[n])
            res.setdefault(n, []).append(v)
        for k, v in res.items():
            ratios.setdefault(k, []).append((v[-1][0] / bare[0], v[-1][1] / bare[1]))
        print(f"round {r + 1}: " + ", ".join(f"{k}={v[-1][0]:.0f}/{v[-1][1]:.0f}" for k, v in res.items()), flush=True)
    med = statistics.median
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, "
        f"{args.steps - args.warmup} timed steps x {args.rounds} rounds (median of rounds; ratios per round)\n"
    )
    print("| variant | img/s (wall) | vs bare (wall) | img per CPU-s | vs bare (CPU) |")
    print("|---|---|---|---|---|")
    for k, v in res.items():
        print(
            f"| {k} | {med(x[0] for x in v):.0f} | {med(x[0] for x in ratios[k]):.2f}x "
            f"| {med(x[1] for x in v):.0f} | {med(x[1] for x in ratios[k]):.2f}x |"
        )
    if not args.no_fid:
        print(f"\nend-of-epoch evaluation (10k samples: LeNet-FID + class histogram): {fid_cost():.1f} s")


if __name__ == "__main__":
    main()
