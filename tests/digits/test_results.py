"""study.json: the study's typed results written and read back by one pair of functions."""

from __future__ import annotations

import json

import pytest

from hybridlearn.core.errors import DataError
from hybridlearn.digits.results import (
    Misread,
    PageReading,
    PaperEpoch,
    PooledScore,
    SeedScores,
    StudyResult,
    read_study,
    write_study,
)

LOWO = SeedScores(
    acc=[0.9, 0.8], correct=[9, 8], n=10, ece=[0.1, 0.2], ci95=[0.6, 0.95], ensemble_acc=0.9, ensemble_ece=0.05
)
FULL = StudyResult(
    seeds=[0, 1],
    lowo_seeds=[0],
    paper_setup={10: PaperEpoch([0.6, 0.7], [0.5, 0.4], [0.5, 0.6]), 50: PaperEpoch([0.9, 1.0], [0.6], [0.6])},
    zero_shot_test_acc=[0.8, 0.7],
    transfer={"transfer": [0.95, 0.97]},
    transfer_scores={"transfer": PooledScore(correct=236, n=244, ci95=[0.93, 0.98], ece=[0.02, 0.03])},
    transfer_errors_seed0=[Misread("cossio.png", 3, 4, 7, 1)],
    pages={"scans": PageReading(n=100, found=1.0, page_acc=0.97, clean_acc=0.98)},
    lowo={"cossio": {"mnist_only": [0.8], "paper": [0.4], "transfer": [0.9, 0.8]}},
    lowo_scores={"cossio": {"transfer": LOWO}},
)
# What the report and the committed docs read from study.json: these names, this nesting.
FULL_JSON = {
    "seeds": [0, 1],
    "lowo_seeds": [0],
    "paper_setup": {
        "10": {"train_acc": [0.6, 0.7], "val_acc": [0.5, 0.4], "test_acc": [0.5, 0.6]},
        "50": {"train_acc": [0.9, 1.0], "val_acc": [0.6], "test_acc": [0.6]},
    },
    "zero_shot_test_acc": [0.8, 0.7],
    "transfer": {"transfer": [0.95, 0.97]},
    "transfer_scores": {"transfer": {"correct": 236, "n": 244, "ci95": [0.93, 0.98], "ece": [0.02, 0.03]}},
    "transfer_errors_seed0": [{"sheet": "cossio.png", "row": 3, "col": 4, "true": 7, "pred": 1}],
    "pages": {"scans": {"n": 100, "found": 1.0, "page_acc": 0.97, "clean_acc": 0.98}},
    "lowo": {"cossio": {"mnist_only": [0.8], "paper": [0.4], "transfer": [0.9, 0.8]}},
    "lowo_scores": {
        "cossio": {
            "transfer": {
                "acc": [0.9, 0.8],
                "correct": [9, 8],
                "n": 10,
                "ece": [0.1, 0.2],
                "ci95": [0.6, 0.95],
                "ensemble_acc": 0.9,
                "ensemble_ece": 0.05,
            }
        }
    },
}


def test_study_json_has_the_fields_the_report_reads_and_reads_back(tmp_path):
    path = write_study(tmp_path / "study.json", FULL)
    text = path.read_text()
    assert json.loads(text) == FULL_JSON and list(json.loads(text)) == list(FULL_JSON)  # names and order
    assert read_study(path) == FULL


def test_optional_parts_are_left_out_and_read_back_as_none(tmp_path):
    bare = StudyResult(seeds=[0], lowo_seeds=[0], paper_setup={1: PaperEpoch([0.5], [0.4], [0.3])})
    path = write_study(tmp_path / "study.json", bare)
    assert set(json.loads(path.read_text())) == {"seeds", "lowo_seeds", "paper_setup", "transfer", "transfer_scores"}
    assert read_study(path) == bare


def test_a_field_renamed_on_one_side_fails(tmp_path):
    doc = json.loads(json.dumps(FULL_JSON).replace('"page_acc"', '"page_accuracy"'))
    (tmp_path / "study.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"study.json: not a readable digits study.json .*page_accuracy"):
        read_study(tmp_path / "study.json")
    with pytest.raises(DataError, match="study.json: not a readable"):
        read_study(tmp_path / "missing" / "study.json")


def test_a_leave_one_writer_out_row_without_a_model_of_the_report_fails(tmp_path):
    doc = json.loads(json.dumps(FULL_JSON))
    doc["lowo"]["cossio"]["mnist_zero_shot"] = doc["lowo"]["cossio"].pop("mnist_only")
    (tmp_path / "study.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"study.json: not a readable .*lowo.cossio: no `mnist_only`"):
        read_study(tmp_path / "study.json")
