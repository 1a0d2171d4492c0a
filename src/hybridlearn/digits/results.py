"""What the digits study finds, as typed records: `study.json` is written and read back only
through `write_study` / `read_study`, so the study and the report that reads it share one shape.

Optional parts (None) are absent from the file: the zero-shot row, the misread digits, the
synthetic pages and leave-one-writer-out each run only when the study's config asks for them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hybridlearn.core.errors import DataError
from hybridlearn.core.io import write_json_atomic

# the models of every leave-one-writer-out row (the report's columns); the row also holds one
# entry per fine-tuned ablation
LOWO_MODELS = ("paper", "mnist_only", "transfer")


@dataclass
class PaperEpoch:
    """The paper setup at one epoch: one value per seed."""

    train_acc: list[float]
    val_acc: list[float]
    test_acc: list[float]


@dataclass
class PooledScore:
    """One variant's test digits pooled over the seeds (each seed has its own split)."""

    correct: int
    n: int
    ci95: list[float]  # Wilson 95 % interval of correct / n
    ece: list[float]  # expected calibration error per seed


@dataclass
class SeedScores:
    """Several seeds' runs on the same test digits: per seed, pooled and as an ensemble."""

    acc: list[float]
    correct: list[int]
    n: int
    ece: list[float]
    ci95: list[float]
    ensemble_acc: float
    ensemble_ece: float


@dataclass
class Misread:
    """A test digit the model got wrong: where it is on its sheet, its label and the guess."""

    sheet: str
    row: int
    col: int
    true: int
    pred: int


@dataclass
class PageReading:
    """Synthetic pages read by the sheet reader: shares of their `n` digits."""

    n: int
    found: float  # found in reading order
    page_acc: float  # read right on the page
    clean_acc: float  # read right as clean cells


@dataclass
class StudyResult:
    seeds: list[int]
    lowo_seeds: list[int]
    paper_setup: dict[int, PaperEpoch]  # by epoch
    zero_shot_test_acc: list[float] | None = None
    transfer: dict[str, list[float]] = field(default_factory=dict)  # label -> test accuracy per seed
    transfer_scores: dict[str, PooledScore] = field(default_factory=dict)
    transfer_errors_seed0: list[Misread] | None = None
    pages: dict[str, PageReading] | None = None  # by kind of page
    lowo: dict[str, dict[str, list[float]]] | None = None  # writer -> model -> accuracy per seed
    lowo_scores: dict[str, dict[str, SeedScores]] | None = None  # writer -> fine-tuned variant -> scores


def write_study(path: str | Path, result: StudyResult) -> Path:
    """`result` as JSON (atomically), its optional parts left out when None."""
    doc = {k: v for k, v in asdict(result).items() if v is not None}
    return write_json_atomic(path, doc)


def read_study(path: str | Path) -> StudyResult:
    """The StudyResult of a `study.json`; DataError naming the file when it cannot be read."""
    try:
        doc = json.loads(Path(path).read_text())
        return _from_doc(doc)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise DataError(
            f"{path}: not a readable digits study.json ({type(e).__name__}: {e}); rerun the study"
        ) from None


def _from_doc(doc: dict[str, Any]) -> StudyResult:
    def each(d: dict | None, make) -> dict | None:
        return None if d is None else {k: make(v) for k, v in d.items()}

    errors = doc.get("transfer_errors_seed0")
    lowo, lowo_scores = doc.get("lowo"), doc.get("lowo_scores")
    for w, row in (lowo or {}).items():
        missing = [m for m in LOWO_MODELS if m not in row]
        if missing:
            raise ValueError(f"lowo.{w}: no `{missing[0]}`")
    return StudyResult(
        seeds=doc["seeds"],
        lowo_seeds=doc["lowo_seeds"],
        paper_setup={int(e): PaperEpoch(**t) for e, t in doc["paper_setup"].items()},
        zero_shot_test_acc=doc.get("zero_shot_test_acc"),
        transfer=doc.get("transfer", {}),
        transfer_scores=each(doc.get("transfer_scores", {}), lambda s: PooledScore(**s)),
        transfer_errors_seed0=None if errors is None else [Misread(**w) for w in errors],
        pages=each(doc.get("pages"), lambda p: PageReading(**p)),
        lowo=lowo,
        lowo_scores=each(lowo_scores, lambda row: {k: SeedScores(**s) for k, s in row.items()}),
    )
