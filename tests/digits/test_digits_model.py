"""LeNet-5 on the digit sheets: the paper setup, transfer learning, predict.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build, compose_cfg, train_cli
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from hybridlearn.core.config import validate
from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.core.runner import run
from hybridlearn.digits import cli, predict
from hybridlearn.digits.conf import study_settings, variant_config
from hybridlearn.digits.images import cell_bounds
from hybridlearn.digits.study import ONE_NETWORK
from hybridlearn.mnist.conf import LeNet5Config, LeNet5NetConfig, TestTimeAugmentConfig

QUIET = ["logger=none", "trainer.enable_progress_bar=false", "~callbacks.model_summary"]


def _run(overrides: list[str], out: Path) -> dict:
    run(compose_cfg(overrides, out))
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def digit_runs(data_dir, tmp_path_factory):
    """A from-scratch paper-setup run and a short transfer run on the same split (seed 0)."""
    tmp = tmp_path_factory.mktemp("digits")
    common = [f"paths.cache_dir={tmp / 'cache'}", "seed=0", *QUIET]
    scratch = _run(["experiment=lenet_digits", "trainer.max_epochs=5", *common], tmp / "scratch")
    transfer = _run(
        [
            "experiment=lenet_digits_transfer",
            "trainer.max_epochs=5",
            "model.pretrain.epochs=1",
            "model.pretrain.subset=6000",
            "model.ensemble=1",  # one network (the ensemble: test_ensemble_is_its_networks_trained_alone)
            *common,
        ],
        tmp / "transfer",
    )
    return {"scratch": scratch, "transfer": transfer, "tmp": tmp}


def test_paper_setup_runs_and_plots_curves(digit_runs):
    r = digit_runs["scratch"]
    assert r["status"] == "completed"
    out = Path(r["output_dir"])
    assert (out / "curves.png").stat().st_size > 10_000
    assert 0.1 < r["metrics"]["test/acc"] < 0.95  # the paper's model after 5 epochs: far from solved
    ckpt = torch.load(r["metrics"]["last_ckpt"], weights_only=True)
    net = ckpt["hybridlearn_config"]["net"]
    assert net["activation"] == "tanh" and net["pool"] == "avg" and ckpt["hyper_parameters"]["init"] == "keras"
    assert ckpt["datamodule_hyper_parameters"]["size"] == 32


def test_short_fine_tune_beats_from_scratch(digit_runs):
    s, t = digit_runs["scratch"]["metrics"], digit_runs["transfer"]["metrics"]
    assert t["test/acc"] > s["test/acc"] + 0.1
    assert t["test/acc"] > 0.75
    assert list((digit_runs["tmp"] / "cache").glob("lenet5_mnist_*.pt")), "pretrained weights are cached"


def test_transfer_pretrains_with_strong_augmentation(digit_runs, tmp_path):
    """The transfer model's MNIST LeNet-5 is pretrained with elastic distortion and full one-pixel
    stroke-width changes, for 20 epochs (issue 22: it carries to new writers); the fixture's run
    cached exactly that pretraining (tests/mnist checks the settings reach the training)."""
    strong = {"elastic": 1.5, "elastic_sigma": 4.0, "thickness": 1.0}
    cached = [torch.load(p, weights_only=True)["settings"] for p in (digit_runs["tmp"] / "cache").glob("lenet5_*.pt")]
    assert [c["augment"] for c in cached] == [strong]
    pre = compose_cfg(["experiment=lenet_digits_transfer"], tmp_path).model.pretrain
    assert pre.epochs == 20 and OmegaConf.to_container(pre.augment) == strong


def _save_cells(sheet: Path, rows: int, cols: int, cells, out: Path, mode: str) -> list[Path]:
    from PIL import Image

    im = Image.open(sheet)
    w, h = im.size
    paths = []
    for r, c in cells:
        (y0, y1), (x0, x1) = cell_bounds(rows, h)[r], cell_bounds(cols, w)[c]
        p = out / f"{sheet.stem}_{r}_{c}.png"
        im.crop((x0, y0, x1, y1)).convert(mode).save(p)
        paths.append(p)
    return paths


def test_predict_on_sliced_cells(digit_runs, data_dir, tmp_path, capsys):

    ckpt = digit_runs["transfer"]["metrics"]["last_ckpt"]
    digits = data_dir / "digits"
    folder = tmp_path / "cells"
    folder.mkdir()
    # dark ink on white (RGBA), light ink on black (grey), 3 cells each
    _save_cells(digits / "JuanRengifo.png", 10, 10, [(0, 0), (3, 4), (7, 2)], folder, "RGBA")
    _save_cells(digits / "jpossaz2.png", 10, 10, [(1, 1), (4, 4), (2, 6)], folder, "L")
    assert cli.main([ckpt, str(folder)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    got = {Path(ln.split(":")[0]).stem: int(ln.split(": ")[1].split()[0]) for ln in lines}
    want = {
        "JuanRengifo_0_0": 0,
        "JuanRengifo_3_4": 3,
        "JuanRengifo_7_2": 7,
        "jpossaz2_1_1": 1,
        "jpossaz2_4_4": 4,
        "jpossaz2_2_6": 6,
    }
    assert sum(got[k] == v for k, v in want.items()) >= 5, got
    assert all("confidence 0." in ln or "confidence 1." in ln for ln in lines)

    # a whole sheet with a grid: the same preprocessing as training, so it reads the sheet
    assert cli.main([ckpt, str(digits / "JuanRengifo.png"), "--grid", "10x10", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    top = out.index(f"{digits / 'JuanRengifo.png'} grid:") + 1  # then the count line and the annotated page
    grid = [list(map(int, ln.split())) for ln in out[top : top + 10]]
    assert np.mean([d == r for r, row in enumerate(grid) for d in row]) >= 0.7


def test_ensemble_is_its_networks_trained_alone(digit_runs, tmp_path, capsys):
    """experiment=lenet_digits_transfer's default is an ensemble (model.ensemble) in one checkpoint: each
    network ends bit-identical to a single run from its own MNIST pretraining seed (the same batches and
    augmentation draws), the checkpoint's prediction is the mean of theirs, and it loads wherever one
    LeNet-5 checkpoint does: predict.py, task=test, task=predict."""
    common = [
        "experiment=lenet_digits_transfer",
        "trainer.max_epochs=2",
        "model.pretrain.epochs=1",
        "model.pretrain.subset=2000",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "seed=0",
        *QUIET,
    ]
    ens = _run([*common, "model.ensemble=2"], tmp_path / "ens")
    alone = [_run([*common, "model.ensemble=1", f"model.pretrain.seed={k}"], tmp_path / f"m{k}") for k in (0, 1)]
    ckpt = ens["metrics"]["last_ckpt"]
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    for k, r in enumerate(alone):
        single = torch.load(r["metrics"]["last_ckpt"], weights_only=True)["state_dict"]
        names = [n for n in single if n.startswith("net.")]
        assert names and all(torch.equal(single[n], sd[f"net.members.{k}.{n[4:]}"]) for n in names), k
    # its prediction is the two networks' mean probability (with the same TTA), as predict.py --ensemble
    model, prep = predict.load_model(ckpt)
    members = [predict.load_model(r["metrics"]["last_ckpt"])[0] for r in alone]
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        want = torch.stack([torch.softmax(m.eval_logits(x), -1) for m in members]).mean(0)
        assert torch.allclose(torch.softmax(model.eval_logits(x), -1), want, atol=1e-6)
        assert torch.allclose(torch.softmax(predict.Ensemble(members).eval_logits(x), -1), want, atol=1e-6)
    assert prep["size"] == 28
    # task=test / task=predict from the checkpoint's stored config
    tested = _run([*common, "task=test", f"ckpt_path={ckpt}"], tmp_path / "test")
    assert tested["metrics"]["test/acc"] == pytest.approx(ens["metrics"]["test/acc"])
    _run([*common, "task=predict", f"ckpt_path={ckpt}"], tmp_path / "pred")
    assert (tmp_path / "pred" / "predictions.csv").read_text().startswith("index,digit,confidence")
    # one ensemble is no single network to start from
    with pytest.raises(ConfigError, match="is an ensemble of 2 LeNet-5s; give the checkpoint of one network"):
        build(LeNet5Config(pretrained=ckpt)).prepare_helpers()


def test_checkpoint_from_before_a_setting_loads_with_its_default(digit_runs, tmp_path):
    """A checkpoint written before `model.ensemble` existed (its stored config lacks the key) loads with
    the declared default (core.checkpoint.with_declared_defaults), in predict.py and task=test."""
    ck = torch.load(digit_runs["transfer"]["metrics"]["last_ckpt"], weights_only=True)
    del ck["hybridlearn_config"]["ensemble"]
    old = tmp_path / "old.ckpt"
    torch.save(ck, old)
    model, _ = predict.load_model(str(old))
    assert len(model.members) == 1 and model.net is model.members[0]
    cache = digit_runs["tmp"] / "cache"
    r = _run(
        [
            "experiment=lenet_digits_transfer",
            "task=test",
            f"ckpt_path={old}",
            f"paths.cache_dir={cache}",
            "seed=0",
            *QUIET,
        ],
        tmp_path / "t",
    )
    assert r["metrics"]["test/acc"] == pytest.approx(digit_runs["transfer"]["metrics"]["test/acc"])


def test_predict_bad_input(digit_runs, tmp_path, capsys):

    ckpt = digit_runs["transfer"]["metrics"]["last_ckpt"]
    (tmp_path / "x.png").write_text("nope")
    assert cli.main([ckpt, str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert cli.main([str(tmp_path / "none.ckpt"), str(tmp_path)]) == 2
    assert "checkpoint" in capsys.readouterr().err
    assert cli.main([ckpt, str(tmp_path), "--grid", "ten"]) == 2  # argparse's refusal, as one line too
    assert "--grid must be auto or ROWSxCOLS" in capsys.readouterr().err


def test_lenet_extensions_are_backward_compatible(tmp_path, digit_runs):
    m = build(LeNet5Config())
    assert m.hparams.init == "torch" and m.augment is None
    paper_net = LeNet5NetConfig(in_size=32, activation="tanh", pool="avg")
    k = build(LeNet5Config(net=paper_net, init="keras", freeze="features"))
    assert all(float(b.abs().sum()) == 0 for n, b in k.net.named_parameters() if n.endswith("bias"))
    assert not any(p.requires_grad for p in k.net.features.parameters())

    def pretrained(path: str, **changes):  # loaded before training (prepare_helpers), not by the constructor
        model = build(LeNet5Config(pretrained=path, **changes))
        model.prepare_helpers()
        return model

    # pretrained from a Lightning checkpoint and from the MNIST pretraining's cache file
    ckpt = digit_runs["transfer"]["metrics"]["last_ckpt"]
    p = pretrained(ckpt)
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    assert torch.equal(p.net.head.weight, sd["net.head.weight"])
    cached = next((digit_runs["tmp"] / "cache").glob("lenet5_mnist_*.pt"))
    want = torch.load(cached, weights_only=True)["state_dict"]["head.weight"]
    assert torch.equal(pretrained(str(cached)).net.head.weight, want)
    assert "pretrained" not in p.hparams
    with pytest.raises(ConfigError, match="do not fit"):
        pretrained(ckpt, net=paper_net)
    # the one checkpoint loader: one line for a missing file, a non-checkpoint, another model's checkpoint
    with pytest.raises(ConfigError, match="not a file"):
        pretrained(str(tmp_path / "none.ckpt"))
    (tmp_path / "bad.ckpt").write_text("x")
    with pytest.raises(DataError, match="not a PyTorch checkpoint"):
        pretrained(str(tmp_path / "bad.ckpt"))
    torch.save(
        {
            "state_dict": {"generator.net.0.weight": torch.zeros(2, 2)},
            "hybridlearn_class": "hybridlearn.gan.model.MLPGAN",
        },
        tmp_path / "gan.ckpt",
    )
    with pytest.raises(ConfigError, match="holds MLPGAN, not LeNet5") as e:
        pretrained(str(tmp_path / "gan.ckpt"))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="model.init"):
        validate(compose_cfg(["experiment=lenet_digits", "model.init=he"], tmp_path))


def test_tta_identity_equals_plain_prediction_and_is_saved(digit_runs, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(16, 1, 28, 28)
    plain = build(LeNet5Config()).eval()
    for rotate in ([], [0.0]):  # the cell only, or the cell "rotated" by 0 degrees: no change
        m = build(LeNet5Config(tta=TestTimeAugmentConfig(rotate=rotate, value_range="standard"))).eval()
        m.net.load_state_dict(plain.net.state_dict())
        with torch.no_grad():
            assert torch.allclose(m.eval_logits(x).softmax(-1), plain(x).softmax(-1), atol=1e-5)
    # real rotations change the probabilities but average them: still a distribution
    m = build(LeNet5Config(tta=TestTimeAugmentConfig(rotate=[-8, 8], value_range="standard"))).eval()
    m.net.load_state_dict(plain.net.state_dict())
    with torch.no_grad():
        p = m.eval_logits(x).exp()
    assert torch.allclose(p.sum(-1), torch.ones(16), atol=1e-5) and not torch.allclose(
        p, plain(x).softmax(-1), atol=1e-3
    )
    assert m.state_dict().keys() == plain.state_dict().keys()  # TTA holds no weights
    # the transfer experiment's checkpoint carries its TTA and despeckling, so predict.py matches the test

    model, prep = predict.load_model(digit_runs["transfer"]["metrics"]["last_ckpt"])
    assert model.tta is not None and model.tta.rotate == [-8.0, 8.0] and prep["despeckle"] > 0
    with pytest.raises(ConfigCompositionException, match="angles"):  # not a setting: refused while composing
        compose_cfg(["experiment=lenet_digits_transfer", "model.tta.angles=[5]"], tmp_path)
    with pytest.raises(ConfigError, match="model.tta"):
        validate(compose_cfg(["experiment=lenet_digits_transfer", "model.tta.rotate=[90]"], tmp_path))


def test_cli_bad_manifest_is_one_line(tmp_path):
    (tmp_path / "m.yaml").write_text("sheets:\n  - {file: gone.png, rows: 2, cols: 10, labels: columns}\n")
    p = train_cli(
        [
            "experiment=lenet_digits",
            f"data.manifest={tmp_path / 'm.yaml'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "logger=none",
        ],
        timeout=300,
    )
    assert p.returncode == 2
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "sheet gone.png" in err[0], p.stderr[-2000:]


@pytest.mark.slow
def test_transfer_reaches_98_percent(tmp_path, data_dir):
    r = _run(["experiment=lenet_digits_transfer", "seed=0", *QUIET], tmp_path / "t")
    assert r["metrics"]["test/acc"] >= 0.98


def test_study_entry_writes_tables(digit_runs, tmp_path):
    cache = digit_runs["tmp"] / "cache"
    r = _run(
        [
            "experiment=digits_study",
            f"paths.cache_dir={cache}",
            "study.seeds=[0]",
            "study.paper_epochs=[1,2]",
            "study.transfer_epochs=1",
            "study.ablations=[no_tta]",
            "study.lowo_seeds=[0]",
            "study.lowo_ablations=[no_tta]",
            "study.variants.transfer.model.ensemble=2",
            "study.pages.n_pages=1",
            "study.variants.transfer.model.pretrain.epochs=1",
            "study.variants.transfer.model.pretrain.subset=6000",
            "logger=csv",
            "trainer.enable_progress_bar=false",
            "~callbacks.model_summary",
        ],
        tmp_path / "s",
    )
    assert r["status"] == "completed", r.get("error")
    md = (tmp_path / "s" / "study.md").read_text()
    assert "| 2 | n/a |" in md and "| cossio | 310 |" in md and "no fine-tuning" in md
    assert "| transfer, no test-time augmentation |" in md
    st = json.loads((tmp_path / "s" / "study.json").read_text())
    sc = st["transfer_scores"]["transfer (pretrained + augmentation)"]
    assert sc["n"] == 122 and sc["ci95"][0] <= sc["correct"] / 122 <= sc["ci95"][1] and 0 <= sc["ece"][0] <= 1
    one = st["transfer_scores"][ONE_NETWORK]  # the ensemble's first network, scored from the same fit
    assert one["n"] == 122 and f"| {ONE_NETWORK} |" in md
    lw = st["lowo_scores"]["cossio"]
    assert set(lw) == {"transfer", "transfer, no test-time augmentation", ONE_NETWORK} and lw["transfer"]["n"] == 310
    assert lw[ONE_NETWORK]["n"] == 310 and f"| {ONE_NETWORK} | cossio |" in md
    assert lw["transfer"]["acc"] == st["lowo"]["cossio"]["transfer"]
    assert "| transfer, no test-time augmentation | cossio |" in md
    pages = st["pages"]["small ruled JPEG scans (18-24 px per cell)"]
    assert pages["n"] == 100 and pages["found"] >= 0.99 and 0 <= pages["page_acc"] <= 1
    assert (tmp_path / "s" / "curves_paper.png").exists()
    assert 0 <= r["metrics"]["lowo/cossio/transfer"] <= 1
    # every study run was trained by a Trainer from the run's own config: its logger wrote there
    runs = tmp_path / "s" / "runs"
    assert (runs / "paper_seed0" / "csv" / "metrics.csv").is_file() and (
        runs / "no_tta_seed0" / "csv" / "metrics.csv"
    ).is_file()
    assert len((runs / "paper_seed0" / "csv" / "metrics.csv").read_text().splitlines()) > 2
    # leave-one-writer-out is core.cv's: one fold per writer group, each a fit with its checkpoints, the
    # ensemble's and each network's test probabilities
    folds = runs / "lowo_transfer_seed0"
    assert sorted(p.name for p in folds.glob("fold_*")) == ["fold_0", "fold_1", "fold_2"]
    assert (folds / "fold_0" / "checkpoints" / "last.ckpt").is_file() and (folds / "fold_0" / "csv").is_dir()
    assert sorted(p.name for p in (folds / "fold_0").glob("test_probabilities*.csv")) == [
        "test_probabilities.csv",
        "test_probabilities_member0.csv",
        "test_probabilities_member1.csv",
    ]
    assert len(list(cache.glob("lenet5_mnist_*.pt"))) == 2  # the fixture's pretraining, reused, and seed 1's


def test_study_variants_match_experiments(tmp_path):
    """The study's paper and transfer variants are experiment=lenet_digits / lenet_digits_transfer."""
    study = compose_cfg(["experiment=digits_study"], tmp_path)
    for name, exp in (("paper", "lenet_digits"), ("transfer", "lenet_digits_transfer")):
        want = compose_cfg([f"experiment={exp}", "seed=3"], tmp_path)
        got = variant_config(study, study.study.variants[name], seed=3)
        for group in ("data", "model"):
            assert OmegaConf.to_container(got[group], resolve=True) == OmegaConf.to_container(
                want[group], resolve=True
            ), (name, group)
        assert got.trainer.log_every_n_steps == want.trainer.log_every_n_steps


def test_study_fast_dev_run_sizes_come_from_the_config(tmp_path):
    """debug=fdr merges study.fast_dev_run onto the study: its first n_seeds seeds, its sizes."""
    cfg = compose_cfg(["experiment=digits_study", "debug=fdr", "study.fast_dev_run.transfer_epochs=2"], tmp_path)
    st = study_settings(cfg)
    assert list(st.seeds) == [0] and list(st.lowo_seeds) == [0] and list(st.paper_epochs) == [1]
    assert st.transfer_epochs == 2 and list(st.ablations) == [] and not st.lowo and st.pages is None
    assert st.variants.transfer.model.pretrain.epochs == 1 and st.variants.transfer.model.pretrain.subset == 2000
    assert st.variants.transfer.model.pretrained == "mnist"  # the rest of the variant stays
    full = study_settings(compose_cfg(["experiment=digits_study"], tmp_path))
    assert list(full.seeds) == [0, 1, 2, 3, 4] and full.transfer_epochs == 60
