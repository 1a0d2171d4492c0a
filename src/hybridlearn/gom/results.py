"""The GOM study's and CV's results as types: what `run_study` / `run_grid` / `run_cv` return (the
`metrics` of results.json) and what the report reads back. One pair per type, `metrics()` and
`read(...)`, so a renamed key fails where it is read (a ResultsError naming it) instead of printing
"n/a" in a table."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from hybridlearn.core.errors import HybridlearnError

# Zhou et al. 2014 (random forests, 10-fold CV on 1,142 tracks of 73 countries): mean great-circle error
ZHOU_2014_KM = 3113.0


class ResultsError(HybridlearnError):
    """A results.json that lacks a key its type needs (written by another version, or renamed)."""


def _need(m: dict[str, Any], key: str, where: str) -> Any:
    if key not in m:
        raise ResultsError(f"{where}: results.json metrics have no `{key}`; run the experiment again with this version")
    return m[key]


@dataclass(frozen=True)
class Score:
    """Great-circle error (km) and R² (degrees) of one predictor on the test split."""

    km: float
    km_median: float
    r2_lat: float
    r2_lon: float
    r2: float

    def metrics(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}{f.name}": getattr(self, f.name) for f in fields(self)}

    @classmethod
    def read(cls, m: dict[str, Any], prefix: str, where: str) -> Score:
        return cls(**{f.name: _need(m, f"{prefix}{f.name}", where) for f in fields(cls)})


@dataclass(frozen=True)
class MlpRow:
    """One MLP of the grid (a row of grid_mlp.csv)."""

    depth: int
    width: int
    lr: float
    best_val_energy: float
    best_epoch: int
    epochs_run: int
    final_train_energy: float
    test_energy: float
    test_km: float
    test_r2: float


@dataclass(frozen=True)
class AutoencoderRow:
    """One autoencoder of the grid (a row of grid_autoencoder.csv); family M1 (reduction) or M2 (extraction)."""

    hidden: int
    lr: float
    family: str
    best_val_energy: float
    best_epoch: int
    epochs_run: int
    final_train_energy: float
    test_energy: float


ROWS = {"mlp": MlpRow, "autoencoder": AutoencoderRow}


@dataclass(frozen=True)
class GridSummary:
    """A trained grid: its size, time, and the picked networks ("best", "median", "worst"; the
    autoencoders per family: "M1_best", ...)."""

    kind: str
    n: int
    seconds: float
    picks: dict[str, MlpRow | AutoencoderRow]

    def metrics(self) -> dict[str, Any]:
        picks = {f"{self.kind}_{name}": asdict(row) for name, row in self.picks.items()}
        return {f"{self.kind}_n": self.n, f"{self.kind}_seconds": self.seconds, **picks}

    @classmethod
    def read(cls, kind: str, m: dict[str, Any], where: str) -> GridSummary:
        row, pick = ROWS[kind], re.compile(rf"{kind}_((?:M[12]_)?(?:best|median|worst))$")
        picks = {p.group(1): row(**_fields(row, m[k], f"{where}: {k}")) for k in m if (p := pick.match(k))}
        return cls(kind, _need(m, f"{kind}_n", where), _need(m, f"{kind}_seconds", where), picks)


def _fields(cls: type, d: dict[str, Any], where: str) -> dict[str, Any]:
    return {f.name: _need(d, f.name, where) for f in fields(cls)}


@dataclass(frozen=True)
class HybridResult:
    """A hybrid trained on the code of the picked autoencoder (M1* or M2*), tested on the test split."""

    ae_hidden: int
    ae_lr: float
    scalars: dict[str, Any]  # the fit's scalar results as written: test/km, ..., epochs_trained, best_ckpt

    @property
    def test(self) -> Score:
        return Score.read(self.scalars, "test/", "hybrid")

    def metrics(self) -> dict[str, Any]:
        return {"ae_hidden": self.ae_hidden, "ae_lr": self.ae_lr, **self.scalars}

    @classmethod
    def read(cls, m: dict[str, Any], where: str) -> HybridResult:
        Score.read(m, "test/", where)  # the test scores are there, or the error names the missing one
        scalars = {k: v for k, v in m.items() if k not in ("ae_hidden", "ae_lr")}
        return cls(_need(m, "ae_hidden", where), _need(m, "ae_lr", where), scalars)


@dataclass(frozen=True)
class Baselines:
    """The training-mean predictor and k-NN (k chosen on the validation split) on the test split."""

    mean: Score
    knn: Score
    knn_k: int

    def metrics(self) -> dict[str, Any]:
        return {
            **self.mean.metrics("baseline_mean_"),
            **self.knn.metrics("baseline_knn_"),
            "baseline_knn_k": self.knn_k,
        }

    @classmethod
    def read(cls, m: dict[str, Any], where: str) -> Baselines:
        mean, knn = Score.read(m, "baseline_mean_", where), Score.read(m, "baseline_knn_", where)
        return cls(mean, knn, _need(m, "baseline_knn_k", where))


@dataclass(frozen=True)
class StudyResult:
    """`experiment=gom_study`: both grids, the hybrids of M1*/M2*, the baselines, the figures' files."""

    mlp: GridSummary
    autoencoder: GridSummary
    grids_seconds: float
    hybrid: dict[str, HybridResult]  # "M1", "M2" (a family without autoencoders is left out)
    baselines: Baselines
    figures: dict[str, str]  # figure key -> file name in the run folder
    seconds: float

    def metrics(self) -> dict[str, Any]:
        return {
            **self.mlp.metrics(),
            **self.autoencoder.metrics(),
            "grids_seconds": self.grids_seconds,
            "hybrid": {fam: h.metrics() for fam, h in self.hybrid.items()},
            "baselines": self.baselines.metrics(),
            "figures": dict(self.figures),
            "seconds": self.seconds,
        }

    @classmethod
    def read(cls, m: dict[str, Any], where: str) -> StudyResult:
        hybrid = {fam: HybridResult.read(h, f"{where}: hybrid.{fam}") for fam, h in _need(m, "hybrid", where).items()}
        return cls(
            GridSummary.read("mlp", m, where),
            GridSummary.read("autoencoder", m, where),
            _need(m, "grids_seconds", where),
            hybrid,
            Baselines.read(_need(m, "baselines", where), f"{where}: baselines"),
            dict(_need(m, "figures", where)),
            _need(m, "seconds", where),
        )


@dataclass(frozen=True)
class CvResult:
    """`experiment=gom_cv`: great-circle km pooled over every held-out track of the k folds, per
    predictor (model; the baselines mean, knn, rf_<target>), and core.cv's row of each fold (`cv/folds`:
    fold, n_test, test/km, ..., val/km). The model's keys are core.cv's names (cv/km, cv/km_median:
    here the median over all tracks), the baselines' cv/baseline_<name>_km(_median)."""

    pooled: dict[str, tuple[float, float]]  # predictor -> (mean km, median km)
    folds: list[dict[str, Any]]
    forest_trees: int
    val_km: float | None = None  # the mean of the folds' inner validation km (none: no fold validated)
    zhou2014_km: float = ZHOU_2014_KM

    @staticmethod
    def key(name: str) -> str:
        return "cv/km" if name == "model" else f"cv/baseline_{name}_km"

    @property
    def folds_n(self) -> int:
        return len(self.folds)

    @property
    def fold_km(self) -> list[float]:
        """The model's mean km on each test fold."""
        return [f["test/km"] for f in self.folds]

    def metrics(self) -> dict[str, Any]:
        res: dict[str, Any] = {}
        for name, (km, median) in self.pooled.items():
            res[self.key(name)], res[f"{self.key(name)}_median"] = km, median
        if self.val_km is not None:
            res["cv/val_km"] = self.val_km
        return {**res, "cv/forest_trees": self.forest_trees, "cv/folds": self.folds, "zhou2014_rf_km": self.zhou2014_km}

    @classmethod
    def read(cls, m: dict[str, Any], where: str) -> CvResult:
        names = ["model", *(p.group(1) for k in m if (p := re.fullmatch(r"cv/baseline_(\w+?)_km", k)))]
        pooled = {n: (_need(m, cls.key(n), where), _need(m, f"{cls.key(n)}_median", where)) for n in names}
        folds = list(_need(m, "cv/folds", where))
        for i, f in enumerate(folds):
            _need(f, "test/km", f"{where}: cv/folds[{i}]")
            _need(f, "n_test", f"{where}: cv/folds[{i}]")
        return cls(
            pooled, folds, _need(m, "cv/forest_trees", where), m.get("cv/val_km"), m.get("zhou2014_rf_km", ZHOU_2014_KM)
        )
