"""report.md of one GOM study run: the grids' picked networks, the hybrids and the baselines on
the test set, the figures, and the time each part took."""

from __future__ import annotations

from pathlib import Path

from hybridlearn.core.io import write_text_atomic
from hybridlearn.gom.results import StudyResult


def write_study_report(out: Path, m: StudyResult) -> Path:
    L = ["# GOM study report", ""]
    L += [
        "## MLP grid (best / median / worst by validation energy)",
        "",
        "| rank | depth | width | lr | best val energy | epochs run | test energy | test km |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rank in ("best", "median", "worst"):
        if r := m.mlp.picks.get(rank):
            L.append(
                f"| {rank} | {r.depth} | {r.width} | {r.lr} | {r.best_val_energy:.5f} | "
                f"{r.epochs_run} | {r.test_energy:.5f} | {r.test_km:.0f} |"
            )
    L += [
        "",
        "## Autoencoder grid",
        "",
        "| family | rank | hidden | lr | best val energy | epochs run | test energy |",
        "|---|---|---|---|---|---|---|",
    ]
    for fam in ("M1", "M2"):
        for rank in ("best", "median", "worst"):
            if r := m.autoencoder.picks.get(f"{fam}_{rank}"):
                L.append(
                    f"| {fam} | {rank} | {r.hidden} | {r.lr} | {r.best_val_energy:.5f} | "
                    f"{r.epochs_run} | {r.test_energy:.5f} |"
                )
    return write_text_atomic(out / "report.md", "\n".join(L + _hybrid_lines(m)) + "\n")


def _hybrid_lines(m: StudyResult) -> list[str]:
    """The hybrids beside the baselines, the figures, the times."""
    L = [
        "",
        "## Hybrid (autoencoder code -> regressor), test set",
        "",
        "| model | AE hidden | AE lr | mean km | median km | R^2 lat | R^2 lon |",
        "|---|---|---|---|---|---|---|",
    ]
    for fam, r in m.hybrid.items():
        t = r.test
        L.append(
            f"| hybrid {fam}* | {r.ae_hidden} | {r.ae_lr} | {t.km:.0f} | {t.km_median:.0f} | "
            f"{t.r2_lat:.3f} | {t.r2_lon:.3f} |"
        )
    b = m.baselines
    for label, s in (("training mean", b.mean), (f"k-NN (k={b.knn_k})", b.knn)):
        L.append(f"| {label} | | | {s.km:.0f} | {s.km_median:.0f} | {s.r2_lat:.3f} | {s.r2_lon:.3f} |")
    L += ["", "## Figures", ""] + [f"- {k}: ![{k}]({v})" for k, v in m.figures.items()]
    L += [
        "",
        f"Grids: {m.mlp.n} MLPs in {m.mlp.seconds:.1f} s, {m.autoencoder.n} "
        f"autoencoders in {m.autoencoder.seconds:.1f} s (vectorized); whole study {m.seconds:.0f} s.",
    ]
    return L
