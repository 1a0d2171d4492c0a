"""The custom-digits study (paper sections 2.2 / 3.2): learning curves, the seed table for the
paper's setup and for the transfer-learning fix, and leave-one-writer-out.

- `CurvesPlot`: a Lightning callback writing the train/val loss and accuracy curves (figs 12-13).
- `run_study` (`python train.py experiment=digits_study`): every run of the study in one job,
  writing `study.md`, `study.json` and `curves_paper.png` into the run directory.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.config import conf_dir
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.io import atomic_output, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

# Paper, section 3.2 (Keras LeNet-5 retrained on the 488 custom digits).
PAPER = {10: {"train_acc": 0.645, "val_acc": 0.492}, 50: {"train_acc": 0.973, "val_acc": 0.615}}
KEYS = {"train_loss": "train/loss_epoch", "train_acc": "train/acc", "val_loss": "val/loss", "val_acc": "val/acc"}


class EpochHistory(L.Callback):
    """Per-epoch train/val loss and accuracy; test accuracy at the epochs in `test_at`."""

    def __init__(self, test_data: tuple[torch.Tensor, torch.Tensor] | None = None, test_at: Sequence[int] = ()):
        self.history: list[dict[str, float]] = []
        self.test_data, self.test_at = test_data, set(test_at)
        self.test_acc: dict[int, float] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1}
        for k, key in KEYS.items():
            if key in m or (k == "train_loss" and "train/loss" in m):
                row[k] = float(m.get(key, m.get("train/loss")))
        self.history.append(row)
        if self.test_data is not None and row["epoch"] in self.test_at:
            self.test_acc[row["epoch"]] = accuracy(pl_module, *self.test_data)


class CurvesPlot(EpochHistory):
    """Writes `path` (PNG: loss and accuracy per epoch, train vs val) when fitting ends."""

    def __init__(self, path: str, title: str = ""):
        super().__init__()
        self.path, self.title = path, title

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.history or trainer.fast_dev_run:
            return
        plot_curves([self.history], self.path, self.title)


def plot_curves(histories: list[list[dict]], path: str | Path, title: str = "",
                paper: dict | None = None) -> Path:
    """Mean (and min-max band when several runs) of train/val loss and accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "acc")):
        for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
            k = f"{split}_{metric}"
            n = min(len(h) for h in histories)
            vals = torch.tensor([[h[e].get(k, float("nan")) for e in range(n)] for h in histories])
            ep = list(range(1, n + 1))
            ax.plot(ep, vals.mean(0).tolist(), color=color, label=split)
            if len(histories) > 1:
                ax.fill_between(ep, vals.min(0).values.tolist(), vals.max(0).values.tolist(), color=color, alpha=0.2)
        if metric == "acc" and paper:
            for e, p in paper.items():
                ax.scatter([e, e], [p["train_acc"], p["val_acc"]], marker="x", color=["tab:blue", "tab:orange"],
                           zorder=5, label="paper" if e == min(paper) else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if metric == "acc" else "cross-entropy loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title + (f" (mean of {len(histories)} seeds, band = min-max)" if len(histories) > 1 else ""))
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was = model.training
    model.eval()
    pred = torch.cat([model.eval_logits(x[i : i + 1024]).argmax(1) for i in range(0, len(x), 1024)])
    model.train(was)
    return float((pred == y).float().mean())


def _compose(overrides: list[str]) -> DictConfig:
    """The composed config of `train.py <overrides>` (inside or outside a running Hydra app)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=overrides)
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=overrides)


def fit_one(experiment: str, seed: int, epochs: int, base: DictConfig, extra: Sequence[str] = (),
            test_at: Sequence[int] = ()) -> dict[str, Any]:
    """One quiet run of `experiment` (no checkpoints, no loggers); final-epoch metrics and test accuracy."""
    overrides = [f"experiment={experiment}", f"seed={seed}", f"trainer.max_epochs={epochs}",
                 f"paths.data_dir={base.paths.data_dir}", f"paths.cache_dir={base.paths.cache_dir}", *extra]
    cfg = _compose(overrides)
    L.seed_everything(seed, workers=True, verbose=False)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    model = instantiate(cfg.model)
    hist = EpochHistory(dm.tensors["test"], test_at=set(test_at) | {epochs})
    if epochs > 0:
        train_loop(model, dm, epochs, hist, seed)
    else:  # the (pretrained) model as it is, no fine-tuning
        hist.history.append({"epoch": 0})
        hist.test_acc[0] = accuracy(model, *dm.tensors["test"])
    last = hist.history[-1]
    return {"experiment": experiment, "seed": seed, "epochs": epochs, "extra": list(extra),
            "train_acc": last.get("train_acc"), "val_acc": last.get("val_acc"),
            "test_acc": hist.test_acc[epochs], "test_acc_at": dict(hist.test_acc), "history": hist.history,
            "n": {k: len(v[1]) for k, v in dm.tensors.items()}, "model": model, "dm": dm}


def train_loop(model, dm, epochs: int, hist: EpochHistory, seed: int) -> None:
    """The LeNet5 module's training (same loss, optimizer, scheduler, augmentation) as a plain loop:
    Lightning's per-epoch overhead dominates on 439 images, and a study has dozens of runs.
    Train metrics are running means over the epoch (as Keras and Lightning report them)."""
    import torch.nn.functional as F

    hp = model.hparams
    params = [p for p in model.parameters() if p.requires_grad]
    if hp.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay)
    x, y = dm.tensors["train"]
    bs = dm.batch_size
    steps = epochs * (-(-len(y) // bs))
    sched = None
    if hp.scheduler == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=steps)
    elif hp.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    vx, vy = dm.tensors["val"]
    for epoch in range(epochs):
        model.train()
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        tot_loss = tot_ok = 0.0
        for idx in torch.randperm(len(y), generator=g).split(bs):
            xb, yb = x[idx], y[idx]
            if model.augment is not None:
                with torch.no_grad():
                    xb = model.augment(xb)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            tot_loss += float(loss.detach()) * len(yb)
            tot_ok += float((logits.argmax(1) == yb).sum())
        row = {"epoch": epoch + 1, "train_loss": tot_loss / len(y), "train_acc": tot_ok / len(y)}
        if len(vy):
            model.eval()
            with torch.no_grad():
                vl = model.eval_logits(vx)  # with the model's test-time augmentation, as the test
            row.update(val_loss=float(F.cross_entropy(vl, vy)), val_acc=float((vl.argmax(1) == vy).float().mean()))
        hist.history.append(row)
        if row["epoch"] in hist.test_at:
            hist.test_acc[row["epoch"]] = accuracy(model, *hist.test_data)
    model.eval()


def mean_std(vals: Sequence[float]) -> str:
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def run_study(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Entry `hybridlearn.digits.study:run_study` (experiment=digits_study)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(int(cfg.study.get("threads") or threads))
        return _run_study(cfg, output_dir)
    finally:
        torch.set_num_threads(threads)


def _run_study(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    st = cfg.study
    pass_on = list(st.get("extra_overrides") or [])
    if cfg.trainer.get("fast_dev_run"):  # debug=fdr: one seed, one epoch each, tiny pretraining
        st = OmegaConf.merge(st, {"seeds": list(st.seeds)[:1], "lowo_seeds": list(st.lowo_seeds)[:1],
                                  "paper_epochs": [1], "transfer_epochs": 1, "ablations": [], "lowo": False})
        pass_on += ["++model.pretrain.epochs=1", "++model.pretrain.subset=2000"]

    def fit(experiment, seed, epochs, base, extra=(), test_at=()):
        return fit_one(experiment, seed, epochs, base, [*pass_on, *extra], test_at)

    unknown = [a for a in (st.ablations or []) if a not in ablation_runs("")]
    if unknown:  # before any training
        raise ConfigError(f"study.ablations: unknown {unknown}; choose from {', '.join(ablation_runs(''))}")
    seeds, lowo_seeds = list(st.seeds), list(st.lowo_seeds)
    started = time.time()
    out: dict[str, Any] = {"seeds": seeds, "lowo_seeds": lowo_seeds}
    md = ["# Custom handwritten digits: LeNet-5 study", "",
          f"Seeds {seeds} (each seed draws its own train/val/test split, initialisation and batch order).", ""]

    # 1. The paper's setup: one run per seed; the 10-epoch numbers are read at epoch 10 of the
    # 50-epoch run (no LR schedule, so identical to a separate 10-epoch run with the same seed).
    paper_runs = []
    max_ep = max(st.paper_epochs)
    for s in seeds:
        r = fit(st.paper_experiment, s, max_ep, cfg, test_at=st.paper_epochs)
        paper_runs.append(r)
        log.info("paper setup seed %d: train %.3f val %.3f test %.3f", s, r["train_acc"], r["val_acc"], r["test_acc"])
    plot_curves([r["history"] for r in paper_runs], output_dir / "curves_paper.png",
                "LeNet-5 on the custom digits, paper setup", paper=PAPER)
    n = paper_runs[0]["n"]
    md += ["## Paper setup (Keras LeNet-5: tanh, average pooling, Adam 1e-3, 32x32, plain slicing)", "",
           f"Split: {n['train']} train / {n['val']} val / {n['test']} test.", "",
           "| epochs | train acc (paper) | train acc (ours) | val acc (paper) | val acc (ours) | test acc (ours) |",
           "|---|---|---|---|---|---|"]
    table = {}
    for e in st.paper_epochs:
        tr = [r["history"][e - 1]["train_acc"] for r in paper_runs]
        va = [r["history"][e - 1]["val_acc"] for r in paper_runs]
        te = [r["test_acc_at"][e] for r in paper_runs]
        p = PAPER.get(e, {})
        md.append(f"| {e} | {p.get('train_acc', 'n/a')} | {mean_std(tr)} | {p.get('val_acc', 'n/a')} | {mean_std(va)} | {mean_std(te)} |")
        table[e] = {"train_acc": tr, "val_acc": va, "test_acc": te}
    out["paper_setup"] = table

    # 2. The fix: MNIST-pretrained LeNet-5, MNIST-like cells, handwriting augmentation.
    variants = [("transfer (pretrained + augmentation)", st.transfer_experiment, [])]
    ablations = ablation_runs(st.transfer_experiment)
    variants += [ablations[a] for a in (st.ablations or [])]
    zero = [fit(st.transfer_experiment, s, 0, cfg)["test_acc"] for s in seeds] if st.get("zero_shot", True) else None
    md += ["", "## The fix: transfer learning + augmentation (28x28 MNIST-like cells)", "",
           f"{st.transfer_epochs} epochs of fine-tuning; test accuracy on the same per-seed test split as above.", "",
           "| model | test acc (mean ± std) | per seed |", "|---|---|---|",
           f"| paper setup, {max_ep} epochs | {mean_std(table[max_ep]['test_acc'])} | "
           + ", ".join(f"{v:.3f}" for v in table[max_ep]["test_acc"]) + " |"]
    if zero is not None:
        md.append(f"| MNIST-pretrained LeNet-5, no fine-tuning | {mean_std(zero)} | " + ", ".join(f"{v:.3f}" for v in zero) + " |")
        out["zero_shot_test_acc"] = zero
    out["transfer"] = {}
    for label, exp, extra in variants:
        accs, wrong = [], []
        for s in seeds:
            r = fit(exp, s, st.transfer_epochs, cfg, extra)
            accs.append(r["test_acc"])
            log.info("%s seed %d: test %.3f", label, s, r["test_acc"])
            if not extra and s == seeds[0]:
                wrong = misclassified(r)
        out["transfer"][label] = accs
        md.append(f"| {label} | {mean_std(accs)} | " + ", ".join(f"{v:.3f}" for v in accs) + " |")
        if wrong:
            out["transfer_errors_seed0"] = wrong
    if out.get("transfer_errors_seed0"):
        md += ["", f"Misclassified test digits of the transfer model, seed {seeds[0]} (sheet, row, col: true -> predicted): "
               + "; ".join(f"{w['sheet']} r{w['row']} c{w['col']}: {w['true']} -> {w['pred']}" for w in out["transfer_errors_seed0"])]

    # 3. Leave-one-writer-out.
    if st.lowo:
        digits = fit_writers(cfg)
        md += ["", "## Leave-one-writer-out (train + val on the other writers, test on all digits of one)", "",
               f"Seeds {lowo_seeds}. Writer groups: " + ", ".join(f"{w} ({k} digits)" for w, k in digits.items()) + ".", "",
               "| held-out writer | digits | paper setup | MNIST model, no fine-tuning | transfer + augmentation |",
               "|---|---|---|---|---|"]
        out["lowo"] = {}
        for w in digits:
            row = {"mnist_only": [fit(st.transfer_experiment, lowo_seeds[0], 0, cfg, [f"data.test_writer={w}"])["test_acc"]]}
            for label, exp, ep in (("paper", st.paper_experiment, max_ep), ("transfer", st.transfer_experiment, st.transfer_epochs)):
                row[label] = [fit(exp, s, ep, cfg, [f"data.test_writer={w}"])["test_acc"] for s in lowo_seeds]
                log.info("LOWO %s %s: %s", w, label, row[label])
            out["lowo"][w] = row
            md.append(f"| {w} | {digits[w]} | {mean_std(row['paper'])} | {mean_std(row['mnist_only'])} | {mean_std(row['transfer'])} |")
        allp = [statistics.mean(v["paper"]) for v in out["lowo"].values()]
        allt = [statistics.mean(v["transfer"]) for v in out["lowo"].values()]
        allz = [statistics.mean(v["mnist_only"]) for v in out["lowo"].values()]
        md.append(f"| mean over writers | | {statistics.mean(allp):.3f} | {statistics.mean(allz):.3f} | {statistics.mean(allt):.3f} |")

    md += ["", f"Total time: {time.time() - started:.0f} s on {torch.get_num_threads()} CPU thread(s).", ""]
    write_text_atomic(output_dir / "study.md", "\n".join(md))
    write_json_atomic(output_dir / "study.json", out)
    print("\n".join(md))
    metrics = {f"paper_{e}ep_{k}_mean": statistics.mean(v[k]) for e, v in table.items() for k in ("train_acc", "val_acc", "test_acc")}
    metrics.update({f"transfer_test_acc_mean/{k}": statistics.mean(v) for k, v in out["transfer"].items()})
    if st.lowo:
        metrics.update({f"lowo/{w}/{k}": statistics.mean(v) for w, r in out["lowo"].items() for k, v in r.items()})
    if zero is not None:
        metrics["zero_shot_test_acc_mean"] = statistics.mean(zero)
    metrics["study_md"] = str(output_dir / "study.md")
    return metrics


def ablation_runs(experiment: str) -> dict[str, tuple[str, str, list[str]]]:
    """{study.ablations name: (table label, experiment, overrides)}: the transfer run with one part off."""
    return {"no_augment": ("pretrained, no augmentation", experiment, ["~model.augment"]),
            "from_scratch": ("from scratch + augmentation (same pipeline)", experiment, ["model.pretrained=null"]),
            "no_tta": ("transfer, no test-time augmentation", experiment, ["model.tta=null"]),
            "no_despeckle": ("transfer, no despeckling", experiment, ["data.despeckle=0"]),
            "no_tta_no_despeckle": ("transfer, neither (the earlier settings)", experiment,
                                    ["model.tta=null", "data.despeckle=0"])}


def fit_writers(cfg: DictConfig) -> dict[str, int]:
    """{writer group: number of digits} of the transfer experiment's data."""
    c = _compose([f"experiment={cfg.study.transfer_experiment}", f"paths.data_dir={cfg.paths.data_dir}"])
    d = instantiate(c.data).load()
    return {w: d.writer.count(w) for w in d.writers}


def misclassified(r: dict[str, Any]) -> list[dict[str, Any]]:
    dm, model = r["dm"], r["model"]
    x, y = dm.tensors["test"]
    idx = dm.indices["test"]
    model.eval()
    with torch.no_grad():
        pred = model.eval_logits(x).argmax(1)
    d = dm.digits
    out = []
    for j in torch.nonzero(pred != y).flatten().tolist():
        i = int(idx[j])
        out.append({"sheet": d.sheets[int(d.sheet[i])].name, "row": int(d.cell[i, 0]), "col": int(d.cell[i, 1]),
                    "true": int(y[j]), "pred": int(pred[j])})
    return out
