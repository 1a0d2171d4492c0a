"""GOM study: data scaling/split, gradient steps vs numpy, vectorized-vs-single parity, km metric,
bad input files, config checks, a tiny multirun. Real data from DATA_DIR/gom."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, train_cli
from gom_build import build
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hybridlearn.core.checkpoint import load_module
from hybridlearn.core.config import validate
from hybridlearn.core.cv import fold_indices
from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.gom.conf import GomDataConfig, SigmoidMLPConfig, SigmoidMLPNetConfig
from hybridlearn.gom.data import GOM_FILE, load_gom, prepare_gom
from hybridlearn.gom.grid import NetSpec, train_sigmoid_grid
from hybridlearn.gom.hybrid import HybridRegressor, OriginClassifier
from hybridlearn.gom.metrics import haversine_km, knn_predict
from hybridlearn.gom.multirun import report_multirun
from hybridlearn.gom.nets import energy_and_delta, init_sigmoid_params, mlp_sizes


@pytest.fixture(scope="module")
def gom_file() -> Path:
    p = Path(os.environ["DATA_DIR"]) / "gom" / GOM_FILE
    if not p.exists():
        pytest.fail(f"{p} missing: set DATA_DIR to the shared data folder")
    return p


@pytest.fixture(scope="module")
def raw(gom_file) -> np.ndarray:
    return np.loadtxt(gom_file, delimiter=",")


# -------------------------------------------------------------------------------- data
def test_load_matches_numpy(gom_file, raw):
    x, y = load_gom(gom_file)
    assert raw.shape == (1059, 70)
    np.testing.assert_array_equal(x, raw[:, :68])
    np.testing.assert_array_equal(y, raw[:, 68:])


@pytest.mark.parametrize("joint", [False, True])
def test_split_and_scaling_vs_numpy(data_dir, raw, joint):
    d = prepare_gom(data_dir, seed=3, target_scaling="joint" if joint else "per_column", dtype=torch.float64)
    tr, va, te = d.idx_train, d.idx_val, d.idx_test
    assert (len(tr), len(va), len(te)) == (635, 212, 212)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(1059))  # a partition
    # deterministic per seed, different across seeds
    d2 = prepare_gom(data_dir, seed=3)
    np.testing.assert_array_equal(d2.idx_train, tr)
    assert not np.array_equal(prepare_gom(data_dir, seed=4).idx_train, tr)
    # independent numpy min-max (paper eq. 1), fitted on the training rows only
    X, Y = raw[:, :68], raw[:, 68:]
    lo, hi = X[tr].min(0), X[tr].max(0)
    for part, idx in (("train", tr), ("val", va), ("test", te)):
        np.testing.assert_allclose(getattr(d, f"x_{part}").numpy(), (X[idx] - lo) / (hi - lo), atol=1e-12)
    assert d.x_train.min() == 0 and d.x_train.max() == 1
    if joint:
        ylo, yhi = Y[tr].min(), Y[tr].max()
    else:
        ylo, yhi = Y[tr].min(0), Y[tr].max(0)
    np.testing.assert_allclose(d.y_test.numpy(), (Y[te] - ylo) / (yhi - ylo), atol=1e-12)
    # the stored scaler maps predictions back to degrees
    np.testing.assert_allclose(d.y_scaler.inverse(d.y_test.numpy()), Y[te], atol=1e-9)
    np.testing.assert_array_equal(d.yd_test.numpy(), Y[te])


def test_cv_fold_and_its_inner_validation_split(data_dir):
    """core.cv's pool is every track; a fold tests its own rows and splits the rest 8:1 (data.split's
    train:val ratio) into train and inner validation, the scaling fitted on that train part only."""
    dm = instantiate(
        OmegaConf.structured(GomDataConfig(data_dir=str(data_dir), seed=0, n_features=68, split=[0.8, 0.1, 0.1]))
    )
    groups = dm.cv_groups(None)
    assert groups == list(range(1059)) and dm.data_signature() == {"input": (68,)}
    with pytest.raises(ConfigError, match="cv.group_by=writer: GOM's tracks have no groups"):
        dm.cv_groups("writer")
    test = fold_indices(groups, 10, seed=0, grouped=False)[3]
    rest = np.setdiff1d(np.arange(1059), test)
    dm.use_fold(rest.tolist(), test.tolist())
    dm.setup()
    d = dm.data
    np.testing.assert_array_equal(d.idx_test, test)
    assert sorted([*d.idx_train, *d.idx_val]) == rest.tolist() and len(d.idx_train) == round(8 / 9 * len(rest))
    x = load_gom(Path(data_dir) / "gom" / GOM_FILE)[0]
    assert d.x_train.min() == 0 and d.x_train.max() == 1
    np.testing.assert_allclose(
        d.x_train.numpy(), (x[d.idx_train] - x[d.idx_train].min(0)) / np.ptp(x[d.idx_train], 0), atol=1e-6
    )


def test_authors_n_features_quirk(data_dir):
    d = prepare_gom(data_dir, seed=0, n_features=67)
    assert d.x_train.shape[1] == 67


# ------------------------------------------------------------------------ gradient steps
def _numpy_step(params, x, t, lr, reduction):
    """Hand-written backprop for a sigmoid MLP with energy E = 1/2 sum (t - y)^2."""
    acts = [x]
    for w, b in params:
        acts.append(1 / (1 + np.exp(-(acts[-1] @ w.T + b))))
    y = acts[-1]
    c = 1.0 if reduction == "sum" else 1.0 / len(x)
    g = -(t - y) * y * (1 - y) * c  # dL/dz of the output layer
    new = [None] * len(params)
    for li in range(len(params) - 1, -1, -1):
        w, b = params[li]
        gw, gb = g.T @ acts[li], g.sum(0)
        if li > 0:
            a = acts[li]
            g = (g @ w) * a * (1 - a)
        new[li] = (w - lr * gw, b - lr * gb)
    return new


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_one_gradient_step_vs_numpy(data_dir, reduction):
    d = prepare_gom(data_dir, seed=0, dtype=torch.float64)
    x, t = d.x_train, d.y_train
    lr = 0.5 if reduction == "mean" else 0.001
    m = build(SigmoidMLPConfig(lr=lr, grad_reduction=reduction, net=SigmoidMLPNetConfig(depth=2, width=4)), seed=7)
    m = m.double()
    params = [(lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy()) for lin in m.net.layers]
    expected = _numpy_step(params, x.numpy(), t.numpy(), lr, reduction)
    # the Lightning module's loss + its optimizer
    opt = m.configure_optimizers()
    e_n, _, _ = energy_and_delta(m(x), t)
    (e_n.sum() if reduction == "sum" else e_n.mean()).backward()
    opt.step()
    for lin, (w, b) in zip(m.net.layers, expected):
        np.testing.assert_allclose(lin.weight.detach().numpy(), w, rtol=0, atol=1e-12)
        np.testing.assert_allclose(lin.bias.detach().numpy(), b, rtol=0, atol=1e-12)
    # the vectorized engine (hand-derived gradients), one epoch, from the same (float64) init
    spec = NetSpec(tuple(mlp_sizes(68, 2, 4)), lr, 7)
    p64 = [(w.numpy(), b.numpy()) for w, b in init_sigmoid_params(spec.sizes, 7, True, 1.0, torch.float64)]
    expected = _numpy_step(p64, x.numpy(), t.numpy(), lr, reduction)
    r = train_sigmoid_grid([spec], x, t, d.x_val, d.y_val, epochs=1, grad_reduction=reduction, stop_energy=None)
    for (w1, b1), (w, b) in zip(r.final_params[0], expected):
        np.testing.assert_allclose(w1.numpy(), w, rtol=0, atol=1e-12)
        np.testing.assert_allclose(b1.numpy(), b, rtol=0, atol=1e-12)


def test_padding_does_not_change_numbers(data_dir):
    """A network trained alone equals the same network inside a padded chunk of wider ones."""
    d = prepare_gom(data_dir, seed=0)
    specs = [NetSpec(tuple(mlp_sizes(68, 2, w)), lr, 0) for w in (1, 3, 5) for lr in (0.1, 0.9)]
    together = train_sigmoid_grid(specs, d.x_train, d.y_train, d.x_val, d.y_val, epochs=30)
    for i in (0, 3):
        alone = train_sigmoid_grid([specs[i]], d.x_train, d.y_train, d.x_val, d.y_val, epochs=30)
        np.testing.assert_allclose(alone.val_energy[0], together.val_energy[i], atol=1e-6)
        for (w1, _), (w2, _) in zip(alone.final_params[0], together.final_params[i]):
            np.testing.assert_allclose(w1.numpy(), w2.numpy(), atol=1e-5)


def test_workers_and_chunking_do_not_change_numbers(data_dir):
    """Chunks trained on parallel threads give the numbers of one thread (each chunk is independent),
    and splitting a grid into more, smaller chunks only changes float rounding."""
    d = prepare_gom(data_dir, seed=0)
    specs = [NetSpec((68, h, 68), lr, 0) for h in (2, 7, 19, 30) for lr in (0.01, 0.1)]
    args = (d.x_train, d.x_train, d.x_val, d.x_val)
    threads = torch.get_num_threads()
    one = train_sigmoid_grid(specs, *args, epochs=12, workers=1)
    two = train_sigmoid_grid(specs, *args, epochs=12, workers=2, chunk_units=1)  # one network per chunk
    assert torch.get_num_threads() == threads  # the workers' 1-thread setting is undone
    np.testing.assert_allclose(two.val_energy, one.val_energy, rtol=0, atol=1e-6)
    np.testing.assert_allclose(two.train_delta_abs, one.train_delta_abs, rtol=0, atol=1e-7)
    assert (two.best_epoch == one.best_epoch).all()
    again = train_sigmoid_grid(specs, *args, epochs=12, workers=3, chunk_units=1)
    np.testing.assert_array_equal(again.val_energy, two.val_energy)  # same chunks: bit-identical
    for p1, p2 in zip(again.best_params, two.best_params):
        for (w1, b1), (w2, b2) in zip(p1, p2):
            assert torch.equal(w1, w2) and torch.equal(b1, b2)


# ------------------------------------------------------------------ vectorized vs single runs
POINTS_MLP = [(1, 3, 0.01), (2, 5, 0.9), (3, 2, 0.2)]


def test_vectorized_grid_matches_single_runs(run_train):
    common = ["seed=0", "trainer.max_epochs=25", "logger=none"]
    grid = run_train(
        [
            "experiment=gom_mlp_grid",
            *common,
            "grid.depths=[1,2,3]",
            "grid.widths=[2,3,5]",
            "grid.mlp_lrs=[0.01,0.2,0.9]",
            "model.stop_energy=0.045",
        ],
        name="grid",
    )
    assert grid["status"] == "completed", grid.get("error")
    rows = {
        (int(r["depth"]), int(r["width"]), float(r["lr"])): r for r in _read_csv(Path(grid["_dir"]) / "grid_mlp.csv")
    }
    assert len(rows) == 27
    for dp, w, lr in POINTS_MLP:
        single = run_train(
            [
                "experiment=gom_mlp",
                *common,
                f"model.net.depth={dp}",
                f"model.net.width={w}",
                f"model.lr={lr}",
                "model.stop_energy=0.045",
            ],
            name=f"single_{dp}_{w}_{lr}",
        )
        assert single["status"] == "completed", single.get("error")
        m, r = single["metrics"], rows[(dp, w, lr)]
        assert m["epochs_run"] == int(r["epochs_run"])
        assert m["best_epoch"] == int(r["best_epoch"])
        assert abs(m["best_val_energy"] - float(r["best_val_energy"])) <= 1e-5
        assert abs(m["final_train_energy"] - float(r["final_train_energy"])) <= 1e-5
        assert abs(m["test/energy"] - float(r["test_energy"])) <= 1e-5  # best checkpoint == best params
    # stop_energy=0.045 stops some networks early: per-network early stop is exercised
    assert {int(r["epochs_run"]) for r in rows.values()} != {25}


def test_vectorized_matches_single_authors_switches(run_train):
    """All five authors'-code switches at once (sum gradient, no bias, extra input layer, joint target
    scaling, 67 features): parity still holds at learning rates where summed gradients are stable."""
    common = [
        "seed=2",
        "trainer.max_epochs=20",
        "logger=none",
        "model.grad_reduction=sum",
        "model.net.bias=false",
        "model.net.input_layer=true",
        "data.target_scaling=joint",
        "data.n_features=67",
    ]
    grid = run_train(
        ["experiment=gom_mlp_grid", *common, "grid.depths=[1,2]", "grid.widths=[3]", "grid.mlp_lrs=[0.0001,0.001]"],
        name="grid",
    )
    assert grid["status"] == "completed", grid.get("error")
    rows = {(int(r["depth"]), float(r["lr"])): r for r in _read_csv(Path(grid["_dir"]) / "grid_mlp.csv")}
    single = run_train(
        ["experiment=gom_mlp", *common, "model.net.depth=2", "model.net.width=3", "model.lr=0.001"], name="single"
    )
    assert single["status"] == "completed", single.get("error")
    m, r = single["metrics"], rows[(2, 0.001)]
    assert abs(m["best_val_energy"] - float(r["best_val_energy"])) <= 1e-5
    assert abs(m["final_train_energy"] - float(r["final_train_energy"])) <= 1e-5
    assert abs(m["test/km"] - float(r["test_km"])) <= 1e-2


def test_vectorized_autoencoder_matches_single_run(run_train):
    common = ["seed=1", "trainer.max_epochs=15", "logger=none"]
    grid = run_train(
        ["experiment=gom_autoencoder_grid", *common, "grid.ae_hidden=[5,19,70]", "grid.ae_lrs=[0.1]"], name="grid"
    )
    assert grid["status"] == "completed", grid.get("error")
    rows = {int(r["hidden"]): r for r in _read_csv(Path(grid["_dir"]) / "grid_autoencoder.csv")}
    single = run_train(["experiment=gom_autoencoder", *common, "model.net.hidden=19", "model.lr=0.1"], name="single")
    m = single["metrics"]
    assert abs(m["best_val_energy"] - float(rows[19]["best_val_energy"])) <= 1e-5
    np.testing.assert_allclose(
        m["history"]["train_energy"],
        np.load(Path(grid["_dir"]) / "grid_autoencoder_history.npz")["train_energy"][1],
        atol=1e-5,
    )


def _read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_multirun(tmp_path):
    sweep = tmp_path / "sweep"
    p = train_cli(
        [
            "-m",
            "experiment=gom_mlp",
            "model.net.depth=1,2",
            "model.lr=0.1",
            "trainer.max_epochs=3",
            "logger=none",
            f"hydra.sweep.dir={sweep}",
        ],
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    results = [json.loads((sweep / str(i) / "results.json").read_text()) for i in range(2)]
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert all(r["metrics"]["epochs_run"] == 3 and "test/km" in r["metrics"] for r in results)
    assert (sweep / "summary.md").exists()
    assert len(report_multirun(sweep).read_text().splitlines()) == 2 + 2 + 2  # title, blank, header, rule, 2 jobs
    assert (sweep / "mlp_best_curves.png").exists()


# --------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize(
    "a,b,km",
    [
        ((51.5074, -0.1278), (48.8566, 2.3522), 344),  # London - Paris
        ((40.7128, -74.0060), (34.0522, -118.2437), 3936),  # New York - Los Angeles
        ((-33.8688, 151.2093), (51.5074, -0.1278), 16994),  # Sydney - London
        ((0.0, 0.0), (0.0, 180.0), math.pi * 6371.0088),  # half the equator
    ],
)
def test_haversine_known_pairs(a, b, km):
    d = haversine_km(np.array([a[0]]), np.array([a[1]]), np.array([b[0]]), np.array([b[1]]))[0]
    assert abs(d - km) / km < 0.005
    dt = haversine_km(*(torch.tensor([v], dtype=torch.float64) for v in (*a, *b)))
    assert abs(float(dt) - d) < 1e-6


def test_knn_wraps_longitude():
    x = np.array([[0.0], [0.1]])
    y = np.array([[0.0, 179.0], [0.0, -179.0]])
    p = knn_predict(x, y, np.array([[0.05]]), k=2)
    assert abs(abs(p[0, 1]) - 180) < 1e-6


# ---------------------------------------------------------------------------- bad input
def _write(tmp_path: Path, rows: list[str]) -> Path:
    p = tmp_path / "bad.txt"
    p.write_text("\n".join(rows) + "\n")
    return p


@pytest.fixture
def good_rows(gom_file) -> list[str]:
    return gom_file.read_text().splitlines()[:30]


@pytest.mark.parametrize(
    "kind,pattern",
    [
        ("columns", r"row 5: expected 70 comma-separated columns .* found 69"),
        ("text", r"row 7, column 12 \(1-based\): not a number \('abc'\)"),
        ("nan", r"row 3, column 2 \(1-based\): 'nan' is not a finite number"),
        ("latitude", r"row 2, column 69 \(1-based\): latitude/longitude out of range"),
    ],
)
def test_bad_files_one_line_errors(tmp_path, good_rows, kind, pattern):
    rows = list(good_rows)
    if kind == "columns":
        rows[4] = ",".join(rows[4].split(",")[:-1])
    elif kind == "text":
        c = rows[6].split(",")
        c[11] = "abc"
        rows[6] = ",".join(c)
    elif kind == "nan":
        c = rows[2].split(",")
        c[1] = "nan"
        rows[2] = ",".join(c)
    else:
        c = rows[1].split(",")
        c[68] = "123.0"
        rows[1] = ",".join(c)
    p = _write(tmp_path, rows)
    with pytest.raises(DataError, match=pattern) as e:
        load_gom(p)
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg


def test_bad_file_through_cli(run_train, tmp_path, good_rows):
    rows = list(good_rows)
    c = rows[9].split(",")
    c[3] = "x"
    rows[9] = ",".join(c)
    p = _write(tmp_path, rows)
    with pytest.raises(SystemExit) as e:  # the CLI prints `error: <message>` and exits 2
        run_train(["experiment=gom_mlp", f"data.file={p}", "trainer.max_epochs=1", "logger=none"])
    assert e.value.code == 2
    err = json.loads((tmp_path / "run" / "results.json").read_text())["error"]
    assert "\n" not in err and str(p) in err and "row 10, column 4 (1-based): not a number ('x')" in err


def test_corrupt_canonical_file_md5(tmp_path, good_rows):
    (tmp_path / "gom").mkdir()
    (tmp_path / "gom" / GOM_FILE).write_text("\n".join(good_rows))
    with pytest.raises(DataError, match="md5"):
        prepare_gom(tmp_path)


# ---------------------------------------------------------------------------- config checks
# Each declaration's range and each rule between keys (hybridlearn/gom/conf.py), refused while the
# config is checked (before torch, before any data is read), with one line naming the key.
REFUSED = [
    # declarations: ranges, choices, and checks a type cannot say
    ("gom_mlp", "model.net.depth=0", "model.net.depth must be >= 1 and <= 16 (got 0)"),
    ("gom_mlp", "model.net.width=5000", "model.net.width must be >= 1 and <= 4096"),
    ("gom_mlp", "model.lr=0", "model.lr must be > 0 and <= 10.0 (got 0"),
    ("gom_mlp", "model.lr=11", "model.lr must be > 0 and <= 10.0 (got 11"),
    ("gom_mlp", "model.grad_reduction=avg", "model.grad_reduction must be one of mean, sum (got 'avg')"),
    ("gom_autoencoder", "model.net.hidden=0", "model.net.hidden must be >= 1"),
    ("gom_mlp", "data.features=chroma", "data.features must be one of default, chromatic (got 'chroma')"),
    ("gom_mlp", "data.split=[0.5,0.2,0.2]", "data.split must sum to 1 (sums to 0.9)"),
    ("gom_mlp", "data.split=[0.8,0.2]", "data.split must be three positive fractions train, val, test"),
    ("gom_mlp", "data.batch_size=0", "data.batch_size must be >= 1 (got 0)"),
    ("gom_hybrid", "model.net.hidden=[3,0]", "model.net.hidden must hold integers in [1, 4096] (got [3, 0])"),
    ("gom_cv", "model.net.knn_blend=1.5", "model.net.knn_blend must be >= 0 and <= 1 (got 1.5)"),
    ("gom_cv", "model.label_smoothing=1.0", "model.label_smoothing must be >= 0 and < 1 (got 1.0)"),
    ("gom_cv", "model.net.activation=tanh", "model.net.activation must be one of sigmoid, relu (got 'tanh')"),
    ("gom_mlp_grid", "grid.depths=[1,0]", "grid.depths must hold integers in [1, 16] (got [1, 0])"),
    ("gom_mlp_grid", "grid.mlp_lrs=[0.1,-1]", "grid.mlp_lrs must hold learning rates in (0, 10]"),
    ("gom_mlp_grid", "grid.kinds=[mlp,cnn]", "grid.kinds must hold values of mlp, autoencoder"),
    ("gom_study", "grid.ae_hidden=[[5,3]]", "grid.ae_hidden must hold hidden sizes in [1, 4096] or inclusive ranges"),
    ("gom_study", "grid.workers=0", "grid.workers must be auto or a number of workers in [1, 4096] (got 0)"),
    ("gom_study", "study.m1=0", "study.m1 must be auto or a hidden size in [1, 4096] (got 0)"),
    ("gom_cv", "study.forest_targets=[xyz]", "study.forest_targets must hold values of latlon, unit (got ['xyz'])"),
    # rules between keys
    ("gom_mlp", "seed=null", "data.seed is null; GOM splits and initial weights need a seed"),
    ("gom_mlp", "data.n_features=69", "data.n_features must be <= 68, the feature columns of data.features=default"),
    ("gom_mlp", "data.dtype=float64", "data.dtype=float64 with trainer.precision=32-true; use data.dtype=float64"),
    ("gom_mlp", "trainer.precision=64-true", "data.dtype=float32 with trainer.precision=64-true"),
    ("gom_mlp", "trainer.precision=bf16-true", "trainer.precision=bf16-true: GOM trains in float32 or float64"),
    ("gom_mlp", "model.net.seed=null", "model.net.seed is null"),
    ("gom_hybrid", "model.autoencoder.seed=null", "model.autoencoder.seed is null"),
    ("gom_mlp", "model.net.n_inputs=67", "model.net.n_inputs=67 but data.n_features=68"),
    ("gom_hybrid", "model.net.code=5", "model.net.code=5 but model.autoencoder.hidden=19; leave model.net.code"),
    ("gom_hybrid", "model.net.hidden=[3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3]", "model.net.hidden must have at most 16"),
    (
        "gom_cv",
        "model.net.include_features=false",
        "model.net.use_code=false needs model.net.include_features=true",
    ),
    ("gom_cv", "cv.folds=0", "cv.folds must be at least 2: experiment=gom_cv* is a k-fold CV (got 0)"),
]


@pytest.mark.parametrize("experiment,overrides,message", REFUSED)
def test_settings_refused_with_one_line(experiment, overrides, message, tmp_path):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg([f"experiment={experiment}", *overrides.split()], tmp_path))
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_settings_follow_the_data_and_the_autoencoder(tmp_path):
    """The models' inputs follow data.n_features (default: all of the chosen feature set), the hybrid's
    code follows its autoencoder, and every gom experiment passes the checks."""
    cfg = compose_cfg(["experiment=gom_study", "data.features=chromatic", "model.autoencoder.hidden=87"], tmp_path)
    assert cfg.data.n_features == cfg.model.net.n_inputs == 116 and cfg.model.net.code == 87
    cfg = compose_cfg(["experiment=gom_mlp", "data.n_features=67"], tmp_path)
    assert cfg.model.net.n_inputs == 67 and cfg.grid is None
    for e in ("gom", "gom_mlp_grid", "gom_autoencoder_grid", "gom_hybrid_modern", "gom_cv_hybrid", "gom_cv_paper"):
        validate(compose_cfg([f"experiment={e}"], tmp_path))


def test_grid_config_checks_through_cli(run_train, tmp_path):
    """A bad grid key fails the run before anything trains, with the key in results.json."""
    with pytest.raises(SystemExit) as e:
        run_train(["experiment=gom_mlp_grid", "grid.widths=[5000]", "logger=none"], name="bad")
    assert e.value.code == 2
    res = json.loads((tmp_path / "bad" / "results.json").read_text())
    assert res["status"] == "failed" and res["error"].startswith("grid.widths must hold integers"), res["error"]


# ---------------------------------------------------------------------------- hybrid, study
def _rebuilt_predictions(cls: type, ckpt: str, x: torch.Tensor) -> np.ndarray:
    """Test predictions (degrees) of the model a checkpoint rebuilds from the config it keeps."""
    model = load_module(cls, ckpt).eval()
    with torch.no_grad():
        return model.to_degrees(model.predict_scaled(x)).numpy()


def test_hybrid_paper_and_modern_heads(run_train):
    """Both hybrids train end to end; each best checkpoint rebuilds its model (network, frozen encoder,
    origins and k-NN buffers) with the test predictions it reported."""
    d = prepare_gom(os.environ["DATA_DIR"], seed=0)
    r = run_train(
        [
            "experiment=gom_hybrid",
            "model.autoencoder.hidden=5",
            "model.autoencoder.epochs=3",
            "trainer.max_epochs=2",
            "logger=none",
        ],
        name="paper",
    )
    assert r["status"] == "completed", r.get("error")
    m = r["metrics"]
    assert m["ae_epochs_run"] == 3 and 0 < m["test/km"] < 20016 and "test/baseline_knn_km" in m
    assert len(m["test_predictions_deg"]) == 212
    again = _rebuilt_predictions(HybridRegressor, m["best_ckpt"], d.x_test)
    np.testing.assert_allclose(again, m["test_predictions_deg"], atol=1e-4)
    r = run_train(
        ["experiment=gom_hybrid_modern", "model.autoencoder.epochs=2", "trainer.max_epochs=2", "logger=none"],
        name="modern",
    )
    assert r["status"] == "completed", r.get("error")
    pred = np.asarray(r["metrics"]["test_predictions_deg"])
    # the origin classifier predicts one of the training split's origin locations
    locs = {tuple(np.round(v, 2)) for v in d.yd_train.numpy()}
    assert all(tuple(np.round(p, 2)) in locs for p in pred)
    np.testing.assert_allclose(
        _rebuilt_predictions(OriginClassifier, r["metrics"]["best_ckpt"], d.x_test), pred, atol=1e-4
    )


def test_study_entry_small(run_train):
    r = run_train(
        [
            "experiment=gom_study",
            "grid.depths=[1]",
            "grid.widths=[2,3]",
            "grid.mlp_lrs=[0.1]",
            "grid.ae_hidden=[4,70]",
            "grid.ae_lrs=[0.1]",
            "grid.epochs=3",
            "study.hybrid_epochs=1",
            "model.autoencoder.epochs=3",
            "logger=none",
        ]
    )
    assert r["status"] == "completed", r.get("error")
    out = Path(r["_dir"])
    m = r["metrics"]
    assert m["mlp_n"] == 2 and m["autoencoder_n"] == 2
    assert m["hybrid"]["M1"]["ae_hidden"] == 4 and m["hybrid"]["M2"]["ae_hidden"] == 70
    for f in (
        "report.md",
        "grid_mlp.csv",
        "grid_autoencoder.md",
        "fig07_mlp_best_curves.png",
        "fig10_hybrid_M1_latitude.png",
        "fig18_hybrid_M2_longitude.png",
    ):
        assert (out / f).stat().st_size > 0, f


def test_multirun_report(tmp_path):
    hist = {
        k: [0.05, 0.04, 0.03]
        for k in ("train_energy", "val_energy", "train_delta", "val_delta", "train_delta_abs", "val_delta_abs")
    }
    for i, lr in enumerate((0.1, 0.5, 0.9)):
        (tmp_path / str(i)).mkdir()
        h = {k: [v * (1 + i) for v in vals] for k, vals in hist.items()}
        (tmp_path / str(i) / "results.json").write_text(
            json.dumps(
                {
                    "status": "completed",
                    "task_name": "gom_mlp",
                    "overrides": ["experiment=gom_mlp", f"model.lr={lr}"],
                    "metrics": {
                        "history": h,
                        "best_val_energy": h["val_energy"][-1],
                        "best_epoch": 3,
                        "epochs_run": 3,
                        "final_train_energy": h["train_energy"][-1],
                        "test/energy": 0.1,
                        "test/km": 4000.0,
                        "test/r2": 0.0,
                    },
                }
            )
        )
    md = report_multirun(tmp_path)
    rows = md.read_text().splitlines()
    assert rows[4].startswith("| 0.1 |") and len(rows) == 7
    assert (tmp_path / "mlp_worst_curves.png").exists()


def test_a_study_sets_its_threads_for_its_run_only(run_train):
    # grid.threads is the study's; an in-process caller (a notebook, the next test) keeps its own count
    torch.set_num_threads(3)
    r = run_train(
        [
            "experiment=gom_mlp_grid",
            "grid.depths=[1]",
            "grid.widths=[2]",
            "grid.mlp_lrs=[0.1]",
            "grid.epochs=2",
            "grid.threads=1",
            "logger=none",
        ]
    )
    assert r["status"] == "completed", r.get("error")
    assert r["metrics"]["threads"] == 1 and torch.get_num_threads() == 3
