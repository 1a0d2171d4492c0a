"""MLP GAN (experiment=gan_mnist): model, manual optimization, metrics, grids/GIF, NaN guard, resume,
the modern options, task=predict, generate.py. Runs are tiny (256 MNIST images, batch 64); the FID
classifier (the MNIST LeNet-5 pretraining) is trained once on 5k images into a session cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same_training_state, build, compose_cfg, read_wandb_records, run_cli
from PIL import Image

from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.gan.conf import FIDConfig, MLPDiscriminatorConfig, MLPGANConfig, MLPGeneratorConfig
from hybridlearn.gan.metrics import fid_settings
from hybridlearn.gan.model import MLPGAN, NonFiniteLossError
from hybridlearn.gan.nets import MLPDiscriminator
from hybridlearn.gan.sampling import load_generator
from hybridlearn.mnist.lenet import build_net

SMALL = [
    "experiment=gan_mnist",
    "data.train_subset=256",
    "data.batch_size=64",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "model.fid.num_samples=500",
    "model.fid.num_real=500",
    "model.fid.batch_size=250",
    "model.fid.classifier_train_size=5000",
    "logger=csv",
]


NO_FID = FIDConfig(enabled=False)


def mlp_gan(**settings) -> MLPGAN:
    """The paper's GAN built from its settings (MLPGANConfig, FID off unless given), as the runner builds it."""
    return build(MLPGANConfig(**{"fid": NO_FID, **settings}))


@pytest.fixture(scope="session")
def fid_cache(tmp_path_factory, data_dir) -> Path:
    from hybridlearn.gan.metrics import mnist_classifier

    # one folder per session (and xdist worker): test_gan_options imports this fixture, whose second
    # definition then reads the first one's cached classifier instead of training another
    cache = tmp_path_factory.getbasetemp() / "fid_cache"
    cache.mkdir(exist_ok=True)
    mnist_classifier(data_dir, cache, 5000, 1)
    assert len(list(cache.glob("lenet5_mnist_*.pt"))) == 1  # the one MNIST LeNet-5 pretraining's cache
    return cache


def run_gan(out: Path, overrides: list[str], fid_cache: Path) -> dict:
    """One in-process `train.py` run into `out`; returns results.json (SystemExit propagates)."""
    from hybridlearn.core.runner import run

    cfg = compose_cfg([*SMALL, f"model.fid.cache_dir={fid_cache}", *overrides], out)
    run(cfg)
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, fid_cache) -> Path:
    out = tmp_path_factory.mktemp("gan") / "run"
    run_gan(out, [], fid_cache)
    return out


def params(m: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_shapes_and_ranges():
    model = mlp_gan()
    g, d = model.generator, model.discriminator
    x = g(torch.randn(5, 128) * 10)
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    p = d(x)
    assert p.shape == (5,) and ((p >= 0) & (p <= 1)).all()
    assert [m.out_features for m in g.net if isinstance(m, torch.nn.Linear)] == [256, 512, 1024, 784]
    assert [m.out_features for m in d.net if isinstance(m, torch.nn.Linear)] == [1024, 512, 256, 1]
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in d.net) == 3
    assert model.fixed_noise.shape == (64, 128) and "fixed_noise" in model.state_dict()
    assert torch.equal(model.fixed_noise, mlp_gan().fixed_noise)  # seeded, not global RNG


def test_manual_steps_update_one_network_each():
    torch.manual_seed(0)
    model = mlp_gan()
    opt_g, opt_d = model.configure_optimizers()
    real = torch.rand(16, 1, 28, 28) * 2 - 1
    g0, d0 = params(model.generator), params(model.discriminator)
    d_loss, fake, d_real, d_fake = model.d_step(real, opt_d)
    g1, d1 = params(model.generator), params(model.discriminator)
    assert same(g0, g1), "the D phase changed the generator"
    assert not any(torch.equal(a, b) for a, b in zip(d0, d1)), "the D phase left a D weight unchanged"
    assert all(p.grad is None for p in model.generator.parameters())
    g_loss = model.g_step(16, opt_g)
    g2, d2 = params(model.generator), params(model.discriminator)
    assert same(d1, d2), "the G phase changed the discriminator"
    assert not any(torch.equal(a, b) for a, b in zip(g1, g2)), "the G phase left a G weight unchanged"
    assert all(p.requires_grad for p in model.discriminator.parameters())  # unfrozen again
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss) and 0 < d_real < 1 and 0 < d_fake < 1


def test_nan_loss_stops_before_update():
    model = mlp_gan()
    opt_g, opt_d = model.configure_optimizers()
    d0 = params(model.discriminator)
    real = torch.full((4, 1, 28, 28), float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite GAN loss d_loss"):
        model.d_step(real, opt_d)
    assert same(d0, params(model.discriminator))


def test_run_writes_grids_gif_and_metrics(gan_run: Path):
    r = json.loads((gan_run / "results.json").read_text())
    assert r["status"] == "completed", r.get("error")
    m = r["metrics"]
    for k in ("fid", "fid_floor", "fid_init", "gen/confidence", "gen/modes_covered", "test/fid", "test/fid_floor"):
        assert isinstance(m[k], (int, float)), k
    assert m["fid_floor"] < m["fid"] < m["fid_init"]
    assert len(m["gen/class_hist"]) == 10 and abs(sum(m["gen/class_hist"]) - 1) < 1e-3
    assert [e for e, _ in m["fid_history"]] == [1, 2]
    assert m["fid_classifier"]["test_acc"] > 0.7  # 5k images, 1 epoch (the default 60k: ~0.98)
    assert Path(m["best_ckpt"]).is_file() and Path(m["last_ckpt"]).is_file()
    samples = gan_run / "samples"
    assert sorted(p.name for p in samples.glob("*.png")) == ["epoch_0000.png", "epoch_0001.png", "epoch_0002.png"]
    grid = Image.open(samples / "epoch_0002.png")
    assert grid.size == (8 * 28 + 9 * 2,) * 2
    gif = Image.open(samples / "training.gif")
    assert gif.format == "GIF" and gif.n_frames == 3
    ck = torch.load(m["last_ckpt"], map_location="cpu", weights_only=True)
    assert len(ck["optimizer_states"]) == 2 and "fixed_noise" in ck["state_dict"]


def test_training_lowers_fid(tmp_path, fid_cache):
    """120 steps (batch 64) on real MNIST: LeNet-FID below the untrained generator's at every epoch.
    (Early on the samples are noisy mean-digit blobs, so the drop is modest; see the slow test.)"""
    r = run_gan(
        tmp_path / "run", ["data.train_subset=3840", "test=false", "callbacks.gan_samples.gif=false"], fid_cache
    )
    m = r["metrics"]
    assert all(f < 0.97 * m["fid_init"] for _, f in m["fid_history"]), (m["fid_init"], m["fid_history"])


@pytest.mark.slow
def test_paper_settings_lower_fid(tmp_path, fid_cache):
    """400 steps with the paper's lr (2e-4), batch 64: FID well below the untrained generator's.
    (~5 min of CPU; it took 28 min wall on the shared 2-core machine.)"""
    r = run_gan(
        tmp_path / "run",
        [
            "data.train_subset=12800",
            "test=false",
            "callbacks.gan_samples.gif=false",
            "model.fid.num_samples=1000",
            "model.fid.num_real=1000",
        ],
        fid_cache,
    )
    m = r["metrics"]
    assert m["fid"] < 0.75 * m["fid_init"], (m["fid_init"], m["fid_history"])  # measured: 202 vs 332


def test_nan_guard_keeps_last_good_checkpoint(tmp_path, fid_cache, monkeypatch):
    calls = {"n": 0}
    orig = MLPDiscriminator.logits

    def poisoned(self, x):  # 4 batches/epoch, 2 D calls per batch: NaN from epoch 2 on
        calls["n"] += 1
        out = orig(self, x)
        return out * float("nan") if calls["n"] > 8 else out

    monkeypatch.setattr(MLPDiscriminator, "logits", poisoned)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        run_gan(out, ["trainer.max_epochs=3"], fid_cache)
    assert exc.value.code == 2
    r = json.loads((out / "results.json").read_text())
    assert r["status"] == "failed" and "non-finite GAN loss d_loss=nan at epoch 1" in r["error"]
    last = out / "checkpoints" / "last.ckpt"
    assert str(last) in r["error"]
    ck = torch.load(last, map_location="cpu", weights_only=True)
    assert ck["epoch"] == 0 and all(torch.isfinite(v).all() for v in ck["state_dict"].values())


def test_resume_matches_uninterrupted_run(tmp_path, fid_cache):
    full = run_gan(tmp_path / "full", ["test=false"], fid_cache)
    first = run_gan(tmp_path / "first", ["test=false", "trainer.max_epochs=1"], fid_cache)
    ckpt = Path(first["metrics"]["last_ckpt"])
    resumed = run_gan(tmp_path / "resumed", ["test=false", f"ckpt_path={ckpt}"], fid_cache)
    a = torch.load(full["metrics"]["last_ckpt"], map_location="cpu", weights_only=True)
    b = torch.load(resumed["metrics"]["last_ckpt"], map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    assert_same_training_state(a, b)
    assert full["metrics"]["fid"] == resumed["metrics"]["fid"]


def test_generate_cli(gan_run: Path, tmp_path):
    ckpt = gan_run / "checkpoints" / "last.ckpt"

    def gen(*args):
        return run_cli("generate.py", [str(ckpt), *args])

    p = gen("--out", str(tmp_path / "grid.png"), "--fixed")
    assert p.returncode == 0, p.stderr
    fixed = Image.open(tmp_path / "grid.png")
    assert fixed.size == (242, 242)
    # the --fixed grid is the run's own last grid
    assert list(fixed.convert("RGB").getdata()) == list(
        Image.open(gan_run / "samples" / "epoch_0002.png").convert("RGB").getdata()
    )
    p = gen("--out", str(tmp_path / "many"), "-n", "5")
    assert p.returncode == 0, p.stderr
    assert len(list((tmp_path / "many").glob("sample_*.png"))) == 5
    p = gen("--out", str(tmp_path / "s.pt"), "-n", "7")
    t = torch.load(tmp_path / "s.pt", weights_only=True)
    assert t.shape == (7, 1, 28, 28) and t.abs().max() <= 1
    p = gen("--out", str(tmp_path / "grid.png"))
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "already exists" in p.stderr
    p = run_cli("generate.py", [str(tmp_path / "nope.ckpt"), "--out", "x.png"])
    assert p.returncode == 2 and "is not a file" in p.stderr
    # -n is capped for one grid / one .pt (a clear one-line error before any work), not for a folder
    for out in ("big.png", "big.pt"):
        p = gen("--out", str(tmp_path / out), "-n", "10001")
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "more than 10,000" in p.stderr and not (tmp_path / out).exists()
    assert "folder" in gen("--out", str(tmp_path / "big.png"), "-n", "10001").stderr
    p = gen("--out", str(tmp_path / "lots"), "-n", "100001")
    assert p.returncode == 2 and "more than 100,000" in p.stderr


def test_load_generator_refuses_other_files(tmp_path):
    """The one checkpoint loader: a non-checkpoint and another model's checkpoint give one line."""
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="is not a PyTorch checkpoint"):
        load_generator(tmp_path / "junk.ckpt")
    lenet = {"state_dict": {f"net.{k}": v for k, v in build_net().state_dict().items()}}
    torch.save({**lenet, "hybridlearn_class": "hybridlearn.mnist.lenet.LeNet5"}, tmp_path / "lenet.ckpt")
    with pytest.raises(ConfigError, match="holds LeNet5, not GAN") as e:
        load_generator(tmp_path / "lenet.ckpt")
    assert "\n" not in str(e.value)
    torch.save(lenet, tmp_path / "untagged.ckpt")  # no class tag (an older checkpoint): by its weights
    with pytest.raises(ConfigError, match="not a GAN"):
        load_generator(tmp_path / "untagged.ckpt")
    gan = mlp_gan()
    bare = {"state_dict": gan.state_dict(), "hybridlearn_class": "hybridlearn.gan.model.MLPGAN"}
    torch.save(bare, tmp_path / "no_hparams.ckpt")  # the generator is built from the checkpoint's own hparams
    with pytest.raises(ConfigError, match="lacks the generator's hyper-parameters"):
        load_generator(tmp_path / "no_hparams.ckpt")
    small = mlp_gan(generator=MLPGeneratorConfig(latent_dim=16, hidden=[32]))
    ck = {**bare, "state_dict": small.state_dict(), "hyper_parameters": dict(small.hparams)}
    torch.save(ck, tmp_path / "small.ckpt")
    g, fixed, _ = load_generator(tmp_path / "small.ckpt")
    assert g.latent_dim == 16 and torch.equal(g(fixed[:2]), small.generator.eval()(fixed[:2]))
    # a checkpoint of the MLPGAN before the networks were handed to it: flat hyper-parameters
    legacy = {"latent_dim": 16, "g_hidden": [32], "img_shape": [1, 28, 28], "negative_slope": 0.2, "dropout": 0.3}
    torch.save({**ck, "hyper_parameters": legacy}, tmp_path / "legacy.ckpt")
    g, fixed, hp = load_generator(tmp_path / "legacy.ckpt")
    assert hp == legacy and torch.equal(g(fixed[:2]), small.generator.eval()(fixed[:2]))


def test_constructing_the_gan_trains_no_classifier(tmp_path, data_dir, fid_cache):
    """The FID classifier is made by prepare_helpers (the runner's Trainers) or by `setup`, never
    by the constructor; model.fid is one FIDConfig: a mapping with other keys is refused."""
    fid = FIDConfig(cache_dir=str(tmp_path / "empty"), mnist_dir=str(data_dir), classifier_train_size=5000)
    model = mlp_gan(fid=fid)
    assert model.evaluator is None and not (tmp_path / "empty").exists()
    fid.cache_dir = str(fid_cache)
    model = mlp_gan(fid=fid)
    model.prepare_helpers()
    assert model.evaluator is not None and model.evaluator.classifier_info["source"].startswith(str(fid_cache))
    assert (model.evaluator.batch_size, model.evaluator.seed) == (1000, 1234)
    with pytest.raises(ConfigError, match=r"model.fid has unknown key\(s\) \['num_sample'\] and no \['batch_size'"):
        fid_settings({"num_sample": 10})


def test_label_smoothing_and_spectral_norm(tmp_path):
    """The modern options: one-sided smoothing lowers only the real targets of D's loss (same
    logits: the loss is BCE against 1 - s), spectral norm keeps D's layers at spectral norm ~1;
    both train a few steps with finite losses, and the default stays the paper's model."""
    assert mlp_gan().hparams.label_smoothing == 0.0
    real = torch.rand(32, 1, 28, 28) * 2 - 1
    losses = {}
    for s in (0.0, 0.1):
        torch.manual_seed(0)
        m = mlp_gan(discriminator=MLPDiscriminatorConfig(dropout=0.0), label_smoothing=s)
        opt_g, opt_d = m.configure_optimizers()
        z = torch.randn(32, 128)
        with torch.no_grad():
            logits = m.discriminator.logits(torch.cat([real, m.generator(z)]))
        losses[s] = float(m.d_step(real, opt_d, z)[0])
        want = torch.cat([torch.full((32,), 1.0 - s), torch.zeros(32)])
        assert losses[s] == pytest.approx(
            float(torch.nn.functional.binary_cross_entropy_with_logits(logits, want)), rel=1e-5
        )
    assert losses[0.0] != losses[0.1]
    torch.manual_seed(0)
    m = mlp_gan(discriminator=MLPDiscriminatorConfig(spectral_norm=True), label_smoothing=0.1)
    opt_g, opt_d = m.configure_optimizers()
    for _ in range(5):
        d_loss, fake, _, _ = m.d_step(real, opt_d)
        g_loss = m.g_step(32, opt_g)
        assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    m.discriminator.eval()  # no power iteration: weight = original / its estimated spectral norm
    lin = [layer for layer in m.discriminator.net if isinstance(layer, torch.nn.Linear)]
    with torch.no_grad():
        assert float(torch.linalg.matrix_norm(lin[-1].weight, ord=2)) == pytest.approx(1.0, abs=1e-4)  # a vector: exact
        assert all(0.7 < float(torch.linalg.matrix_norm(layer.weight, ord=2)) < 1.3 for layer in lin)
        w = lin[0].weight.clone()
        lin[0].parametrizations.weight.original.mul_(10)  # scale-free: D cannot grow its weights
        assert torch.allclose(lin[0].weight, w, atol=1e-6)
    assert not any(hasattr(layer, "parametrizations") for layer in mlp_gan().discriminator.net)


def test_spectral_norm_trains_in_a_run(tmp_path, fid_cache):
    r = run_gan(
        tmp_path / "sn",
        [
            "trainer.max_epochs=1",
            "test=false",
            "model.discriminator.spectral_norm=true",
            "model.label_smoothing=0.1",
            "callbacks.gan_samples.gif=false",
        ],
        fid_cache,
    )
    assert r["status"] == "completed", r.get("error")
    assert r["metrics"]["fid"] < r["metrics"]["fid_init"]


@pytest.mark.parametrize("n, grid", [(64, (8, 8)), (50, (7, 8))])
def test_task_predict_writes_samples(gan_run: Path, tmp_path, fid_cache, n, grid):
    """task=predict ckpt_path=<ckpt>: model.n_predict images of its seeded latent vectors, as
    samples.pt and a samples.png grid, listed in results.json (a model.* override on the command line
    applies on top of the checkpoint's own config)."""
    ckpt = gan_run / "checkpoints" / "last.ckpt"
    r = run_gan(tmp_path / "p", ["task=predict", f"ckpt_path={ckpt}", f"model.n_predict={n}"], fid_cache)
    assert r["status"] == "completed", r.get("error")
    m = r["metrics"]
    t = torch.load(m["samples"], weights_only=True)
    assert t.shape == (n, 1, 28, 28) and t.abs().max() <= 1 and m["n"] == n
    assert Path(m["samples_grid"]).name == "samples.png"
    assert Image.open(m["samples_grid"]).size == (grid[0] * 30 + 2, grid[1] * 30 + 2)
    # the same images as the generator of the checkpoint on the same latent vectors
    g, _, _ = load_generator(ckpt)
    z = torch.randn(n, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(t, g(z), atol=1e-6)


def test_sample_grids_reach_wandb(tmp_path, fid_cache, monkeypatch):
    """With logger=wandb (offline) every sample grid is logged as an image (a failing logger only
    warns, so look for the files): media PNGs of the grid's size, one per grid, and the history key."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    r = run_gan(out, ["logger=wandb", "trainer.max_epochs=1", "test=false"], fid_cache)
    assert r["status"] == "completed", r.get("error")
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = sorted((runs[0] / "files" / "media" / "images").rglob("*.png"))
    assert len(media) == 2, media  # epoch 0 (untrained) and epoch 1
    assert Image.open(media[0]).size == Image.open(out / "samples" / "epoch_0001.png").size
    log = next(runs[0].glob("run-*.wandb"))
    deadline = time.time() + 60  # wandb-core writes the log asynchronously after finish()
    while not any(rec.WhichOneof("record_type") == "exit" for rec in read_wandb_records(log)):
        assert time.time() < deadline, "the offline run never got its exit record"
        time.sleep(0.5)
    keys = {
        it.key or "/".join(it.nested_key)
        for rec in read_wandb_records(log)
        if rec.WhichOneof("record_type") == "history"
        for it in rec.history.item
    }
    assert any(k.startswith("samples/fixed_noise") for k in keys), sorted(keys)
