"""Leave-one-writer-out with ensembles over MNIST pretraining seeds (issue 22): every member is the
default transfer variant of `experiment=digits_study` (study.variants.transfer), fine-tuned by
`hybridlearn.digits.fitting.fit_one` (a Trainer from the run's config), with its own
`model.pretrain.seed` (p) and fine-tuning seed (s). Saves each member's test probabilities, then
prints single models, and ensembles of the three pretraining seeds for each fine-tuning seed.

    DATA_DIR=../shared/data python benchmarks/exp_digits_ensemble.py --out lightning_logs/exp_digits_ensemble

Resumable: a member whose probabilities are saved is not trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from hybridlearn.core.config import conf_dir
from hybridlearn.core.reproduce import override_value
from hybridlearn.core.trainer import TrainerFactory
from hybridlearn.digits.fitting import fit_one
from hybridlearn.digits.study import scores

WRITERS = ["jpossaz", "JuanRengifo", "cossio"]


def config(out: Path):
    """experiment=digits_study as `train.py` composes it, writing into `out`."""
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        over = [f"paths.{k}={override_value(str(out))}" for k in ("output_dir", "log_dir")]
        return compose("train", overrides=["experiment=digits_study", "logger=csv", *over])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("lightning_logs/exp_digits_ensemble"))
    ap.add_argument("--pretrain-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--writers", nargs="+", default=WRITERS)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    a.out.mkdir(parents=True, exist_ok=True)
    cfg = config(a.out)
    st = cfg.study
    trainers = TrainerFactory()
    probs: dict[tuple[str, int, int], torch.Tensor] = {}
    labels: dict[str, torch.Tensor] = {}
    for p in a.pretrain_seeds:
        for w in a.writers:
            for s in a.seeds:
                f = a.out / f"probs_{w}_p{p}_s{s}.pt"
                if not f.is_file():
                    extra = {"model": {"pretrain": {"seed": p}}}
                    r = fit_one(
                        trainers,
                        cfg,
                        f"lowo_{w}_p{p}",
                        s,
                        st.transfer_epochs,
                        a.out,
                        st.variants.transfer,
                        extra,
                        {"data": {"test_writer": w}},
                    )
                    tmp = f.with_suffix(".tmp")
                    torch.save({"probs": r["probs"], "labels": r["labels"]}, tmp)
                    tmp.rename(f)
                d = torch.load(f)
                probs[w, p, s], labels[w] = d["probs"], d["labels"]
                acc = float((d["probs"].argmax(1) == d["labels"]).float().mean())
                print(f"{w} pretrain seed {p} seed {s}: {acc:.4f}", flush=True)
    summary = {}
    for w in a.writers:
        y = labels[w]
        single = {p: scores([probs[w, p, s] for s in a.seeds], y) for p in a.pretrain_seeds}
        ens = scores([torch.stack([probs[w, p, s] for p in a.pretrain_seeds]).mean(0) for s in a.seeds], y)
        summary[w] = {
            "digits": len(y),
            "single": {str(p): sc.acc for p, sc in single.items()},
            "single_mean": {str(p): statistics.mean(sc.acc) for p, sc in single.items()},
            "ensemble_over_pretrain_seeds": ens.acc,
            "ensemble_mean": statistics.mean(ens.acc),
            "ensemble_ece": statistics.mean(ens.ece),
            "single_ece_p0": statistics.mean(single[a.pretrain_seeds[0]].ece),
        }
        print(json.dumps({w: summary[w]}), flush=True)
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
