"""make reproduce: the plan, the resume logic, the report read from the runs' own files, and the
quick mode end to end with tiny settings (every stage a real subprocess, seconds each)."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import time
from pathlib import Path

import pytest
from conftest import compose_cfg, train_cli
from PIL import Image

import hybridlearn.reproduce.stages as stages_mod
from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.core.reproduce import Run, flatten
from hybridlearn.gom.results import ResultsError
from hybridlearn.reproduce.report import write_report
from hybridlearn.reproduce.stages import MARKER, lanes_for, make_plan, resolve_jobs, run_state

# Every stage in seconds: one GOM seed on a 2x2 grid, 2-fold CV, one digits seed for 1-2 epochs,
# the GAN for 2 epochs on 1024 images, the video for 6 frames at 64 px.
TINY = [
    "reproduce.quick=true",
    "reproduce.scale.quick.gom.seeds=[0]",
    "reproduce.scale.quick.gom.cv_features=[default]",
    "++reproduce.scale.quick.gom.set.grid.depths=[1]",
    "++reproduce.scale.quick.gom.set.grid.widths=[1,2]",
    "++reproduce.scale.quick.gom.set.grid.mlp_lrs=[0.1]",
    "++reproduce.scale.quick.gom.set.grid.ae_hidden=[[1,3],[69,70]]",
    "++reproduce.scale.quick.gom.set.grid.ae_lrs=[0.1]",
    "++reproduce.scale.quick.gom.set.grid.epochs=5",
    "++reproduce.scale.quick.gom.set.trainer.max_epochs=3",
    "++reproduce.scale.quick.gom.cv_set.data.cv_folds=2",
    "++reproduce.scale.quick.gom.cv_set.trainer.max_epochs=2",
    "++reproduce.scale.quick.gom.cv_set.cv.forest_trees=4",
    "reproduce.scale.quick.digits.set.study.seeds=[0]",
    "++reproduce.scale.quick.digits.set.study.variants.transfer.model.pretrain.epochs=1",
    "++reproduce.scale.quick.digits.set.study.variants.transfer.model.pretrain.subset=2000",
    "++reproduce.scale.quick.digits.set.study.paper_epochs=[1,2]",
    "reproduce.scale.quick.digits.set.study.transfer_epochs=1",
    "reproduce.scale.quick.gan.set.trainer.max_epochs=2",
    "reproduce.scale.quick.gan.set.data.train_subset=1024",
    "++reproduce.scale.quick.gan.set.data.batch_size=256",
    "++reproduce.scale.quick.gan.set.data.test_subset=500",
    "++reproduce.scale.quick.gan.set.model.fid.num_samples=500",
    "++reproduce.scale.quick.gan.set.model.fid.num_real=500",
    "reproduce.scale.quick.gan.set.callbacks.gan_samples.epochs=[1,2]",
    "reproduce.scale.quick.style.set.data.max_frames=6",
    "reproduce.scale.quick.style.set.data.max_side=64",
]


def table(md: str, heading: str) -> list[list[str]]:
    """Rows (cells) of the first markdown table after the line starting with `heading`."""
    lines = md.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[i if lines[i].startswith("|") else i + 1 :]:
        if line.startswith("|"):
            if not set(line) <= set("|-"):
                rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return rows[1:]  # without the header


def first_number(cell: str) -> float:
    return float(re.search(r"-?\d+(\.\d+)?", cell).group())


# ------------------------------------------------------------------------------------ plan, state
def test_flatten_quotes_values_for_hydra():
    got = flatten({"a": {"b": 1, "c": [1, 2.5], "d": None, "e": True}, "s": "x y", "p": "/tmp/a_b.png"})
    assert got == ["a.b=1", "a.c=[1,2.5]", "a.d=null", "a.e=true", "s='x y'", "p=/tmp/a_b.png"]


def test_the_registry_is_the_composed_reproduce_modules(tmp_path):
    only_gom = ["experiment=reproduce", "reproduce.modules=[hybridlearn.gom.reproduce]"]
    cfg = compose_cfg([*only_gom, "reproduce.stages=[gom]"], tmp_path)
    assert list(make_plan(cfg, check=False).runs) == ["gom"]
    with pytest.raises(ConfigError, match=r"reproduce.stages\[0\] must be one of gom \(got 'digits'\)"):
        make_plan(compose_cfg([*only_gom, "reproduce.stages=[digits]"], tmp_path), check=False)
    with pytest.raises(ConfigError, match="reproduce.modules: No module named 'hybridlearn.nope'"):
        make_plan(compose_cfg(["experiment=reproduce", "reproduce.modules=[hybridlearn.nope.reproduce]"], tmp_path))
    md = write_report(tmp_path / "r", quick=False, stages=["gom"], modules=["hybridlearn.gom.reproduce"]).read_text()
    assert "## 1. Geographical" in md and "## 2. LeNet-5" not in md


def test_plan_quick_and_paper(tmp_path, data_dir):
    paper = make_plan(compose_cfg(["experiment=reproduce"], tmp_path))
    assert [r.name for r in paper.runs["gom"]][:5] == [f"study_seed{s}" for s in range(5)]  # >= 5 seeds
    assert [r.rel for r in paper.runs["gan"]] == ["gan/mnist"] and paper.runs["gan"][0].resumable
    assert not any("max_epochs" in a for a in paper.runs["gan"][0].args)  # the paper's 200 epochs
    quick = make_plan(
        compose_cfg(["experiment=reproduce", "reproduce.quick=true", "reproduce.stages=[gan,style]"], tmp_path)
    )
    assert list(quick.runs) == ["gan", "style"]
    assert "trainer.max_epochs=5" in quick.runs["gan"][0].args
    assert {r.name for r in quick.runs["style"]} == {"per_frame", "temporal_blend"}
    assert "model.temporal_blend=0.6" in next(r for r in quick.runs["style"] if r.name == "temporal_blend").args
    # the modern GAN: off by default, the paper GAN's settings (same steps) on experiment=gan_mnist_modern
    assert "gan_modern" not in paper.runs
    both = make_plan(
        compose_cfg(["experiment=reproduce", "reproduce.quick=true", "reproduce.stages=[gan,gan_modern]"], tmp_path)
    )
    g, m = both.runs["gan"][0], both.runs["gan_modern"][0]
    assert m.rel == "gan_modern/mnist" and m.resumable
    assert m.args[0] == "experiment=gan_mnist_modern" and m.args[1:] == g.args[1:]


def test_plan_draws_the_contact_sheet_with_its_command(tmp_path, data_dir):
    sheet = next(
        r
        for r in make_plan(compose_cfg(["experiment=reproduce"], tmp_path)).runs["digits"]
        if r.name == "contact_sheet"
    )
    assert sheet.kind == "module" and sheet.args[:3] == [
        "hybridlearn.digits.contact",
        "--contact-sheet",
        "fig04_digits.png",
    ]


def test_plan_refuses_unknown_stage_and_keys(tmp_path, data_dir):
    with pytest.raises(ConfigError, match="reproduce.stages"):
        make_plan(compose_cfg(["experiment=reproduce", "reproduce.stages=[gom,gann]"], tmp_path))
    with pytest.raises(ConfigError, match="does not compose"):  # a typo fails before any run starts
        make_plan(
            compose_cfg(
                [
                    "experiment=reproduce",
                    "reproduce.stages=[gan]",
                    "++reproduce.scale.paper.gan.set.trainer.max_epoch=3",
                ],
                tmp_path,
            )
        )


def test_run_state(tmp_path):
    run = Run("gan", "mnist", ["experiment=gan_mnist"], resumable=True)
    d = tmp_path / "gan" / "mnist"
    assert run_state(d, run) == "new"
    d.mkdir(parents=True)
    (d / MARKER).write_text(json.dumps({"args": run.args}))
    assert run_state(d, run) == "rerun"  # killed before any checkpoint
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (d / "results.json").write_text(json.dumps({"status": "interrupted"}))
    assert run_state(d, run) == "resume"
    assert run_state(d, Run("gan", "mnist", run.args)) == "rerun"  # not resumable: start again
    (d / "results.json").write_text(json.dumps({"status": "completed"}))
    assert run_state(d, run) == "done"
    assert run_state(d, Run("gan", "mnist", [*run.args, "trainer.max_epochs=3"], resumable=True)) == "stale"


def test_a_changed_default_behind_the_same_args_makes_a_run_stale(tmp_path):
    """The plan hashes each train run's composed config; a finished run whose marker holds another
    hash (a YAML default changed since) is run again, not reused. Markers without a hash are kept."""
    plan = make_plan(compose_cfg(["experiment=reproduce", "reproduce.stages=[gom]"], tmp_path / "c"))
    run = next(r for r in plan.runs["gom"] if r.name == "cv_default_seed0")
    assert run.config and len({r.config for r in plan.runs["gom"]}) == len(plan.runs["gom"])
    d = tmp_path / "gom" / run.name
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"status": "completed"}))
    (d / MARKER).write_text(json.dumps({"args": run.args, "config": run.config}))
    assert run_state(d, run) == "done"
    (d / MARKER).write_text(json.dumps({"args": run.args, "config": "0123456789abcdef"}))
    assert run_state(d, run) == "stale"
    (d / MARKER).write_text(json.dumps({"args": run.args}))  # written before configs were hashed
    assert run_state(d, run) == "done"


def test_lanes_spread_the_longest_stages_first():
    exp = {"gom": 4200, "digits": 560, "gan": 2850, "style": 45}
    order = ["gom", "digits", "gan", "style"]
    assert lanes_for(order, exp, 1) == [order]
    # LPT: gom alone, the GAN with the two short stages (each lane in report order)
    assert lanes_for(order, exp, 2) == [["gom"], ["digits", "gan", "style"]]
    assert lanes_for(["gan", "style"], exp, 2) == [["gan"], ["style"]]
    assert resolve_jobs(5, 2) == 2 and resolve_jobs(1, 4) == 1
    assert resolve_jobs("auto", 4) == (2 if (os.cpu_count() or 1) >= 2 else 1)
    for bad in (0, -1, "two", 1.5, True):
        with pytest.raises(ConfigError, match=r"reproduce\.jobs"):
            resolve_jobs(bad, 4)


def test_two_lanes_run_at_once_each_in_order_with_one_thread(tmp_path, monkeypatch):
    """jobs=2: the runs of the two lanes overlap in time, each stage's runs keep their order, every
    run gets OMP_NUM_THREADS=cores/2, and each stage logs one line. (execute faked: no training.)"""
    calls = []

    def fake_execute(run, root, python, env=None):
        t0 = time.time()
        time.sleep(0.05)
        calls.append((run.stage, run.name, t0, time.time(), dict(env or {})))
        return {"state": "ran", "seconds": 0.05, "ok": True}

    monkeypatch.setattr(stages_mod, "execute", fake_execute)
    monkeypatch.setattr(stages_mod, "write_report", lambda root, **kw: root / "REPORT.md")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(stages_mod.os, "cpu_count", lambda: 2)
    cfg = compose_cfg(
        ["experiment=reproduce", "reproduce.stages=[gom,style]", "reproduce.jobs=2", f"reproduce.dir={tmp_path}"],
        tmp_path / "c",
    )
    out = stages_mod.run_reproduce(cfg, tmp_path, None)
    assert out["jobs"] == 2 and list(out["stages"]) == ["gom", "style"]
    plan = make_plan(cfg, check=False)
    for stage in ("gom", "style"):
        assert [c[1] for c in calls if c[0] == stage] == [r.name for r in plan.runs[stage]]
    assert all(c[4] == {"OMP_NUM_THREADS": "1"} for c in calls)
    gom = [c for c in calls if c[0] == "gom"]
    style = [c for c in calls if c[0] == "style"]
    assert style[0][2] < gom[-1][3]  # the style lane did not wait for the GOM lane


# ------------------------------------------------------------------------------------- the report
SCORE = ("km", "km_median", "r2_lat", "r2_lon", "r2")


def _fake_runs(root: Path) -> None:
    """Run folders as the experiments write them, with known numbers."""
    for prefix, seed, (m1, m2, km) in [
        ("study_seed", 0, (25, 81, 4182.0)),
        ("study_seed", 1, (19, 87, 3900.0)),
        ("code_seed", 0, (7, 90, 4300.0)),
    ]:
        d = root / "gom" / f"{prefix}{seed}"
        d.mkdir(parents=True, exist_ok=True)
        depth = 1 if prefix == "code_seed" else 5
        mlp_best = {"depth": depth, "width": 5, "lr": 0.9, "best_val_energy": 0.037, "best_epoch": 90}
        mlp_best.update(epochs_run=100, final_train_energy=0.04, test_energy=0.05, test_km=4554.0, test_r2=0.01)
        m = {
            "mlp_n": 175,
            "mlp_seconds": 1.0,
            "mlp_best": mlp_best,
            "autoencoder_n": 405,
            "autoencoder_seconds": 2.0,
            "grids_seconds": 3.0,
            "seconds": 4.0,
            "hybrid": {
                "M1": {
                    "ae_hidden": m1,
                    "ae_lr": 0.1,
                    "test/km": km,
                    "test/km_median": 3400.0,
                    "test/r2_lat": 0.07,
                    "test/r2_lon": 0.06,
                },
                "M2": {
                    "ae_hidden": m2,
                    "ae_lr": 0.1,
                    "test/km": km - 300,
                    "test/km_median": 3100.0,
                    "test/r2_lat": 0.0,
                    "test/r2_lon": 0.2,
                },
            },
            "baselines": {
                **{f"baseline_mean_{k}": v for k, v in zip(SCORE, (4588.0, 4000.0, -0.01, 0.02, 0.0))},
                **{f"baseline_knn_{k}": v for k, v in zip(SCORE, (3520.0, 3000.0, 0.1, 0.2, 0.15))},
                "baseline_knn_k": 5,
            },
            "figures": {},
        }
        for h in m["hybrid"].values():
            h.update({"test/r2": 0.05, "epochs_trained": 3, "best_ckpt": ""})
        (d / ".hydra").mkdir()
        (d / ".hydra" / "config.yaml").write_text("trainer: {max_epochs: 500}\ngrid: {epochs: 100}\n")
        (d / "results.json").write_text(json.dumps({"status": "completed", "metrics": m, "duration_s": 40.0}))
    d = root / "gom" / "cv_default_seed0"
    d.mkdir()
    cv = {
        "cv_model_km": 3061.4,
        "cv_model_km_median": 1814.0,
        "cv_rf_latlon_km": 3654.0,
        "cv_rf_unit_km": 3422.0,
        "cv_knn_km": 3618.0,
        "cv_mean_km": 4604.0,
        "cv_rf_latlon_km_median": 2000.0,
        "cv_rf_unit_km_median": 1900.0,
        "cv_knn_km_median": 2100.0,
        "cv_mean_km_median": 4000.0,
        "cv_folds": 10,
        "cv_tracks": 1059,
        "cv_forest_trees": 500,
        "zhou2014_rf_km": 3113.0,
        "folds": [{"test_km": 3000.0}, {"test_km": 3100.0}],
    }
    (d / "results.json").write_text(json.dumps({"status": "completed", "metrics": cv}))
    d = root / "gom" / "cv_default_seed1"  # another fold assignment: the file's mean row averages both
    d.mkdir()
    cv1 = {**cv, "cv_model_km": 3001.4, "cv_rf_unit_km": 3382.0, "folds": [{"test_km": 2900.0}, {"test_km": 3100.0}]}
    (d / "results.json").write_text(json.dumps({"status": "completed", "metrics": cv1}))
    # a failed run whose error names machine folders: the report shows them relative to DATA_DIR
    d = root / "gom" / "cv_chromatic_seed0"
    d.mkdir()
    data = "/srv/machine/data"
    (d / MARKER).write_text(json.dumps({"args": ["experiment=gom_cv", f"paths.data_dir={data}"]}))
    err = (
        f"GOM data not found in {data}/gom: missing default_plus_chromatic_features_1059_tracks.txt "
        f"(https://archive.ics.uci.edu/static/public/315/x.zip: timed out); also see /home/someone/notes/x.log"
    )
    (d / "results.json").write_text(json.dumps({"status": "failed", "error": err}))
    d = root / "digits" / "study"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"status": "completed", "metrics": {}}))
    (d / "study.json").write_text(
        json.dumps(
            {
                "seeds": [0, 1],
                "paper_setup": {
                    "10": {"train_acc": [0.66, 0.68], "val_acc": [0.5, 0.6], "test_acc": [0.5, 0.55]},
                    "50": {"train_acc": [0.99, 1.0], "val_acc": [0.6, 0.62], "test_acc": [0.64, 0.66]},
                },
                "zero_shot_test_acc": [0.95, 0.94],
                "transfer": {"transfer (pretrained + augmentation)": [0.984, 0.992]},
                "transfer_scores": {
                    "transfer (pretrained + augmentation)": {
                        "correct": 241,
                        "n": 244,
                        "ci95": [0.9644, 0.9958],
                        "ece": [0.02, 0.01],
                    }
                },
                "transfer_errors_seed0": [{"sheet": "cossio.png", "row": 3, "col": 4, "true": 7, "pred": 1}],
                "lowo_seeds": [0, 1],
                "lowo": {"cossio": {"paper": [0.5, 0.6], "mnist_only": [0.945], "transfer": [0.97, 0.98]}},
                "lowo_scores": {
                    "cossio": {
                        "transfer": {
                            "acc": [0.97, 0.98],
                            "correct": [301, 304],
                            "n": 310,
                            "ece": [0.03, 0.01],
                            "ci95": [0.9624, 0.9847],
                            "ensemble_acc": 0.981,
                            "ensemble_ece": 0.015,
                        }
                    }
                },
                "pages": {
                    "small ruled JPEG scans (18-24 px per cell)": {
                        "n": 1200,
                        "found": 1.0,
                        "page_acc": 0.985,
                        "clean_acc": 0.99,
                    }
                },
            }
        )
    )
    d = root / "gan" / "mnist"
    (d / "samples").mkdir(parents=True)
    (d / ".hydra").mkdir()
    (d / ".hydra" / "config.yaml").write_text(
        "trainer: {max_epochs: 3}\ndata: {batch_size: 512}\ncallbacks: {gan_samples: {epochs: [1, 3]}}\n"
    )
    for e in (1, 3):
        Image.new("RGB", (20, 20), (e * 40, 0, 0)).save(d / "samples" / f"epoch_{e:04d}.png")
    (d / "resumed").mkdir()  # epochs 1-2 before a kill, epoch 3 after the resume
    (d / "resumed" / "metrics_000.csv").write_text("epoch,fid,gen/modes_covered,step\n0,900.5,1,10\n1,500.25,4,20\n")
    (d / "csv").mkdir()
    (d / "csv" / "metrics.csv").write_text("epoch,fid,gen/modes_covered,step\n2,300.0,7,30\n")
    (d / "results.json").write_text(
        json.dumps(
            {
                "status": "completed",
                "metrics": {
                    "fid": 300.0,
                    "fid_floor": 0.82,
                    "fid_history": [[3, 300.0]],
                    "test/fid": 310.0,
                    "gen/modes_covered": 7,
                },
            }
        )
    )
    for name, ratio in (("per_frame", 3.089), ("temporal_blend", 2.095)):
        d = root / "style" / name
        d.mkdir(parents=True)
        (d / "results.json").write_text(
            json.dumps(
                {"status": "completed", "metrics": {"frames": 554, "flicker_ratio": ratio, "flicker_input": 0.0121}}
            )
        )


def test_report_filled_from_the_runs_files(tmp_path):
    _fake_runs(tmp_path)
    md = write_report(tmp_path, quick=False, stages=["gom", "digits", "gan", "style"]).read_text()
    assert md.startswith("# Hybrid supervised learning") and "QUICK" not in md.splitlines()[0]
    m = {(r[0], r[1]): r for r in table(md, "### Best autoencoders")}
    assert m["M1* (hidden units)", "paper text"][2:4] == ["19", "25, 19"]
    assert m["M2* (hidden units)", "paper text"][2:4] == ["87", "81, 87"]
    # the authors' code setting beside the paper text, in every GOM table
    assert m["M1* (hidden units)", "authors' code"][2:4] == ["19", "7"]
    hy = {(r[0], r[1]): r for r in table(md, "### Hybrid")}
    assert first_number(hy["hybrid M1*", "paper text"][3]) == pytest.approx((4182 + 3900) / 2, abs=0.5)
    assert hy["hybrid M1*", "paper text"][4] == "4182, 3900" and hy["hybrid M1*", "authors' code"][4] == "4300"
    mlp = [r for r in table(md, "### Best MLP") if r[1] == "authors' code"]
    assert [r[2] for r in mlp] == ["1 x 5"]
    cv = table(md, "### What we add: 10-fold")
    assert cv[1][:3] == ["default", "0", "10"]
    assert [first_number(c) for c in cv[1][3:11]] == [3061, 71, 1814, 3654, 3422, 3618, 4604, 3113]
    assert cv[2][:2] == ["default", "1"] and first_number(cv[2][3]) == 3001
    # the file's mean ± std over its CV seeds, baselines included
    assert cv[3][:2] == ["**default, mean ± std**", "2 seeds"]
    assert cv[3][3] == f"**{(3061.4 + 3001.4) / 2:.0f} ± {statistics.stdev([3061.4, 3001.4]):.0f}**"
    assert cv[3][7] == f"{(3422 + 3382) / 2:.0f} ± {statistics.stdev([3422, 3382]):.0f}"
    # the failed chromatic row: the cause, with no machine folder in it (nor anywhere in the report)
    assert cv[0][:2] == ["chromatic", "0"] and cv[0][2].startswith("failed: GOM data not found in DATA_DIR/gom")
    assert "/srv/machine" not in md and "/home/someone" not in md
    runs = {r[1]: r for r in table(md, "| stage | run |")}
    assert "DATA_DIR/gom: missing default_plus_chromatic" in runs["cv_chromatic_seed0"][4]
    assert "https://archive.ics.uci.edu/static/public/315/x.zip" in runs["cv_chromatic_seed0"][4]
    assert "see x.log" in runs["cv_chromatic_seed0"][4]
    dg = {r[0]: r for r in table(md, "### Figs. 12-13")}
    assert dg["10"][1] == "0.645" and dg["10"][2] == "0.670 ± 0.014" and dg["50"][3] == "0.615"
    tr = {r[0]: r for r in table(md, "### What we add: transfer")}
    assert tr["transfer (pretrained + augmentation)"][2] == "0.984, 0.992"
    ci = {r[0]: r for r in table(md, "| model | digits right |")}
    assert ci["transfer (pretrained + augmentation)"][1:] == ["241/244 (0.988)", "[0.964, 0.996]", "0.015"]
    lowo = {r[0]: r for r in table(md, "| held-out writer | paper's LeNet |")}
    assert lowo["cossio"][1:] == ["0.550 ± 0.071", "0.945 (1 seed)", "0.975 ± 0.007"]
    lw = table(md, "| fine-tuned variant |")
    assert lw == [["transfer", "cossio", "0.975 ± 0.007", "[0.962, 0.985]", "0.020", "0.981 (0.015)"]]
    pg = table(md, "| pages | digits |")
    assert pg == [["small ruled JPEG scans (18-24 px per cell)", "1200", "1.000", "0.985", "0.990"]]
    gan = {r[0]: r[1] for r in table(md, "| metric | value |")}
    assert gan["LeNet-FID, best epoch"] == "300.00 (epoch 3)" and gan["epochs trained"] == "3"
    assert gan["real-vs-real floor"] == "0.82" and gan["test: best checkpoint vs test images"] == "310.00"
    assert gan["LeNet-FID, epoch 1"] == "900.50" and gan["digits covered (>= 2.5% of samples), last epoch"] == "7"
    assert (tmp_path / "figures" / "gan_epoch_001.png").is_file() and (
        tmp_path / "figures" / "gan_epoch_003.png"
    ).is_file()
    assert (tmp_path / "figures" / "gan_fid_curve.png").is_file()
    st = {r[0]: r for r in table(md, "| variant |")}
    assert first_number(st["per_frame"][2]) == 3.089 and first_number(st["temporal_blend"][2]) == 2.095
    assert "M1* = 25, 19 (seeds) vs the paper's 19" in md
    # the counts come from the runs: their metrics and their config
    assert "175 MLPs and 405 autoencoders per seed, 100 full-batch epochs each." in md
    assert write_report(tmp_path, quick=False, stages=["gom", "digits", "gan", "style"]).read_text() == md
    (tmp_path / "gom" / "study_seed0.stale-1").mkdir()  # moved aside: not a seed of the report
    quick = write_report(tmp_path, quick=True, stages=["gan"]).read_text()
    assert quick.splitlines()[0].startswith("# QUICK MODE") and "## 1. Geographical" in quick  # the folder's runs
    assert table(quick, "### Best autoencoders")[0][3] == "25, 19"
    empty = tmp_path / "empty"
    assert "Not run" in write_report(empty, quick=False, stages=["gom"]).read_text()


def test_report_fails_on_a_renamed_result_key(tmp_path):
    """A key the GOM section reads, renamed in a run's results.json, names itself instead of "n/a"."""
    _fake_runs(tmp_path)
    f = tmp_path / "gom" / "study_seed1" / "results.json"
    r = json.loads(f.read_text())
    r["metrics"]["hybrid"]["M2"]["test/km_mean"] = r["metrics"]["hybrid"]["M2"].pop("test/km")
    f.write_text(json.dumps(r))
    with pytest.raises(ResultsError, match=r"gom/study_seed1: hybrid.M2: .* no `test/km`"):
        write_report(tmp_path, quick=False, stages=["gom"])
    f = tmp_path / "gom" / "cv_default_seed0" / "results.json"
    r = json.loads(f.read_text())
    r["metrics"]["n_folds"] = r["metrics"].pop("cv_folds")
    f.write_text(json.dumps(r))
    shutil.rmtree(tmp_path / "gom" / "study_seed1")
    with pytest.raises(ResultsError, match="gom/cv_default_seed0: .* no `cv_folds`"):
        write_report(tmp_path, quick=False, stages=["gom"])


def test_report_fails_on_a_renamed_study_field(tmp_path):
    """A field the digits section reads, renamed in study.json, names the file and itself instead of "n/a"."""
    _fake_runs(tmp_path)
    f = tmp_path / "digits" / "study" / "study.json"
    f.write_text(f.read_text().replace('"ensemble_acc"', '"ensemble_accuracy"'))
    with pytest.raises(DataError, match=r"digits/study/study.json: not a readable .*ensemble_accuracy"):
        write_report(tmp_path, quick=False, stages=["digits"])


def test_report_puts_the_modern_gan_beside_the_papers_step_for_step(tmp_path):
    _fake_runs(tmp_path)
    d = tmp_path / "gan_modern" / "mnist"
    (d / "csv").mkdir(parents=True)
    (d / "samples").mkdir()
    (d / ".hydra").mkdir()
    (d / ".hydra" / "config.yaml").write_text("model: {label_smoothing: 0.1, spectral_norm: true}\n")
    (d / "csv" / "metrics.csv").write_text(
        "epoch,fid,gen/modes_covered,step\n0,800.0,2,10\n1,200.0,9,20\n2,150.5,10,30\n3,120.0,10,40\n"
    )
    Image.new("RGB", (20, 20)).save(d / "samples" / "epoch_0004.png")
    (d / "results.json").write_text(
        json.dumps({"status": "completed", "metrics": {"fid_floor": 0.82, "test/fid": 140.0}})
    )
    md = write_report(tmp_path, quick=False, stages=["gan", "gan_modern"]).read_text()
    rows = table(md, "### Beyond the paper")
    by_epoch = {r[0]: r for r in rows}
    # the paper's run has epochs 1-3 (two CSV attempts), the modern one 1-4: compared on the common 1-3
    assert by_epoch["1"][1:] == ["900.50", "800.00", "1", "2"]
    assert by_epoch["3"][1:] == ["300.00", "150.50", "7", "10"]
    assert "4" not in by_epoch
    assert by_epoch["best"][1:3] == ["300.00 (epoch 3)", "150.50 (epoch 3)"]  # not epoch 4's 120: same steps
    assert by_epoch["test: best checkpoint vs test images"][1:3] == ["310.00", "140.00"]
    assert "label smoothing 0.1 (D's real targets 0.9)" in md
    assert (tmp_path / "figures" / "gan_modern_fid_curve.png").is_file()
    # without its run the section says how to run it
    shutil.rmtree(tmp_path / "gan_modern")
    assert "reproduce.stages=[gan_modern]" in write_report(tmp_path, quick=False, stages=["gan_modern"]).read_text()


# --------------------------------------------------------------------------- quick mode, end to end
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir, python_exe):
    root = tmp_path_factory.mktemp("reproduce") / "quick"
    p, _ = reproduce_cli(root, "first", python_exe, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return root, p


def reproduce_cli(root: Path, name: str, python: Path, timeout: float) -> tuple:
    """One `make reproduce` invocation into `root`; its own record (train.log, results.json) goes to
    a run folder of its own beside it; its stages' runs start with `python` (the fork server).
    Returns (process, that invocation's train.log path)."""
    cmd = root.parent / f"command_{name}"
    args = [
        "experiment=reproduce",
        *TINY,
        f"reproduce.dir={root}",
        f"reproduce.python={python}",
        f"hydra.run.dir={cmd}",
    ]
    p = train_cli(args, timeout=timeout)
    return p, cmd / "train.log"


def results(root: Path, rel: str) -> dict:
    return json.loads((root / rel / "results.json").read_text())


def test_quick_tiny_end_to_end(tiny):
    root, p = tiny
    md = (root / "REPORT.md").read_text()
    assert md.splitlines()[0].startswith("# QUICK MODE")
    log = (root.parent / "command_first" / "train.log").read_text()
    assert len(re.findall(r"reproduce: stage \d/4 \w+ done in .*; elapsed .*; left ~", log)) == 4
    # the tables hold the runs' own numbers
    g = results(root, "gom/study_seed0")["metrics"]
    m = {(r[0], r[1]): r for r in table(md, "### Best autoencoders")}
    assert m["M1* (hidden units)", "paper text"][3] == str(g["hybrid"]["M1"]["ae_hidden"])
    c = results(root, "gom/code_seed0")["metrics"]
    assert m["M1* (hidden units)", "authors' code"][3] == str(c["hybrid"]["M1"]["ae_hidden"])
    hy = {(r[0], r[1]): r for r in table(md, "### Hybrid")}
    assert first_number(hy["hybrid M2*", "paper text"][3]) == pytest.approx(g["hybrid"]["M2"]["test/km"], abs=0.5)
    cv = results(root, "gom/cv_default_seed0")["metrics"]
    row = table(md, "### What we add: 10-fold")[0]
    assert row[:3] == ["default", "0", "2"]
    assert first_number(row[3]) == pytest.approx(cv["cv_model_km"], abs=0.5)
    assert first_number(row[7]) == pytest.approx(cv["cv_rf_unit_km"], abs=0.5)
    st = json.loads((root / "digits/study/study.json").read_text())
    dg = {r[0]: r for r in table(md, "### Figs. 12-13")}
    assert first_number(dg["2"][2]) == pytest.approx(st["paper_setup"]["2"]["train_acc"][0], abs=5e-4)
    gm = results(root, "gan/mnist")["metrics"]
    gan = {r[0]: r[1] for r in table(md, "| metric | value |")}
    assert first_number(gan["LeNet-FID, last epoch"]) == pytest.approx(gm["fid"], abs=5e-3)
    assert first_number(gan["real-vs-real floor"]) == pytest.approx(gm["fid_floor"], abs=5e-3)
    sty = {r[0]: r for r in table(md, "| variant |")}
    for v in ("per_frame", "temporal_blend"):
        assert first_number(sty[v][2]) == pytest.approx(
            results(root, f"style/{v}")["metrics"]["flicker_ratio"], abs=5e-4
        )
    figs = {f.name for f in (root / "figures").iterdir()}
    assert {
        "gan_epoch_001.png",
        "gan_epoch_002.png",
        "gan_training.gif",
        "gan_fid_curve.png",
        "digits_fig04_contact_sheet.png",
        "digits_fig12_13_curves.png",
        "style_video_frames.png",
    } <= figs
    assert all((root / "figures" / f).stat().st_size <= 2 * 2**20 for f in figs)
    assert not any(f.endswith(".mp4") for f in figs)


def test_second_run_skips_and_killed_runs_resume(tiny, python_exe):
    root, _ = tiny
    md = (root / "REPORT.md").read_text()
    # 1. nothing left to do: every run skipped, the same report
    p, log_file = reproduce_cli(root, "second", python_exe, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    log = log_file.read_text()
    assert "stage 3/4 gan done in" in log and "(1 skipped)" in log and "running gan/mnist" not in log
    assert (root / "REPORT.md").read_text() == md
    # 2. the GAN killed (interrupted record, last.ckpt kept) and a style run killed before its record
    gan = root / "gan" / "mnist"
    (gan / "results.json").write_text(json.dumps({"status": "interrupted"}))
    (root / "style" / "per_frame" / "results.json").unlink()
    shutil.copy2(gan / "csv" / "metrics.csv", gan / "metrics_before.csv")
    p, log_file = reproduce_cli(root, "third", python_exe, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    log = log_file.read_text()
    assert "resuming gan/mnist" in log and "running gom/" not in log.split("resuming gan/mnist")[-1]
    r = results(root, "gan/mnist")
    assert r["status"] == "completed" and f"ckpt_path={gan / 'checkpoints' / 'last.ckpt'}" in r["overrides"]
    assert (gan / "resumed" / "metrics_000.csv").read_text() == (gan / "metrics_before.csv").read_text()
    assert results(root, "style/per_frame")["status"] == "completed"
    new = (root / "REPORT.md").read_text()
    # the same numbers; only the wall-time table may move
    assert new.split("## Runs")[0] == md.split("## Runs")[0]
