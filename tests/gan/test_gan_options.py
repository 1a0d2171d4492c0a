"""The GAN beyond the paper: networks handed to the module, the EMA generator, the hinge loss, the
R1 penalty, the D:G ratio, the DCGAN, the validation FID against held-out training images, the FID's spread over
sample draws, and the Optuna search. Runs are tiny (256 MNIST images, batch 64)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import assert_same_training_state, build, compose_cfg, train_cli
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from test_gan import NO_FID, fid_cache, mlp_gan, run_gan  # noqa: F401 - the session's FID classifier fixture

from hybridlearn.gan.conf import (
    DCDiscriminatorConfig,
    DCGANConfig,
    DCGeneratorConfig,
    MLPDiscriminatorConfig,
    MLPGeneratorConfig,
)
from hybridlearn.gan.ema import EMA, ema_factor
from hybridlearn.gan.losses import d_loss, g_loss, r1_penalty
from hybridlearn.gan.metrics import GANEvaluator
from hybridlearn.gan.model import GAN
from hybridlearn.gan.nets import DCGenerator
from hybridlearn.gan.reproduce import gan_dcgan_section, modern_training
from hybridlearn.gan.sampling import load_generator
from hybridlearn.gan.search import label_smoothing_for_bce
from hybridlearn.reproduce.stages import make_plan


def small_gan(**settings) -> GAN:
    return mlp_gan(
        generator=MLPGeneratorConfig(latent_dim=16, hidden=[32]),
        discriminator=MLPDiscriminatorConfig(hidden=[32], dropout=0.0),
        **settings,
    )


def net(settings) -> torch.nn.Module:
    """A network built from its settings dataclass alone (as Hydra builds `model.generator`)."""
    return instantiate(OmegaConf.structured(settings), _convert_="all")


def state(ck_path: Path) -> dict:
    return torch.load(ck_path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------ EMA
def test_ema_update_math_matches_an_independent_computation():
    """w_ema <- d_t w_ema + (1 - d_t) w with d_t = min(decay, (1 + t) / (10 + t)), in float64 by
    hand; BatchNorm statistics copied, not averaged; the counter counts updates."""
    torch.manual_seed(0)
    g = net(DCGeneratorConfig(latent_dim=8, channels=[8, 4]))
    ema = EMA(g, decay=0.8)
    expect = [p.detach().double().clone() for p in g.parameters()]
    for t in range(40):
        with torch.no_grad():
            for p in g.parameters():
                p.add_(torch.randn_like(p))
        g(torch.randn(4, 8))  # train mode: moves the BatchNorm running statistics
        d = min(0.8, (1 + t) / (10 + t))
        assert ema_factor(0.8, t) == d
        expect = [d * e + (1 - d) * p.detach().double() for e, p in zip(expect, g.parameters())]
        ema.update(g)
    assert int(ema.num_updates) == 40
    assert ema_factor(0.8, 39) == 0.8 and ema_factor(0.8, 0) == 0.1  # warm-up, then the decay
    for e, a in zip(expect, ema.module.parameters()):
        assert torch.allclose(a.double(), e, atol=1e-5, rtol=1e-5)
    for a, b in zip(ema.module.buffers(), g.buffers()):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_gives_samples_predictions_and_generated_files(tmp_path):
    """With model.ema_decay the fixed grid, forward, task=predict and generate.py's generator are
    the EMA's, not the raw generator's; without it they are the generator's."""
    torch.manual_seed(0)
    m = small_gan(ema_decay=0.9)
    opt_g, opt_d = m.configure_optimizers()
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    for _ in range(5):
        m.d_step(real, opt_d)
        m.g_step(8, opt_g)
    ema, raw = m.generator_ema.module.eval(), m.generator.eval()
    z = m.fixed_noise[:4]
    assert not torch.allclose(ema(z), raw(z))
    assert m.sampler is ema and torch.equal(m.sample_fixed(), ema(m.fixed_noise))
    assert torch.equal(m(z), ema(z))
    assert torch.equal(m.predict_step(z, 0), ema(z))
    ck = {
        "state_dict": m.state_dict(),
        "hyper_parameters": dict(m.hparams),
        "hybridlearn_class": "hybridlearn.gan.model.MLPGAN",
    }
    torch.save(ck, tmp_path / "ema.ckpt")
    g, _, _ = load_generator(tmp_path / "ema.ckpt")
    assert torch.equal(g(z), ema(z))
    assert small_gan().sampler is not None and small_gan().generator_ema is None


def test_ema_is_what_the_fid_evaluates(tmp_path, fid_cache, monkeypatch):  # noqa: F811
    """Every LeNet-FID of a run with model.ema_decay (each epoch, the untrained one, the test of
    the best checkpoint) samples the frozen EMA copy, never the generator being trained."""
    seen = []
    orig = GANEvaluator.samples

    def spy(self, generator, *a, **k):
        seen.append(all(not p.requires_grad for p in generator.parameters()))
        return orig(self, generator, *a, **k)

    monkeypatch.setattr(GANEvaluator, "samples", spy)
    r = run_gan(tmp_path / "run", ["model.ema_decay=0.99", "callbacks.gan_samples.gif=false"], fid_cache)
    assert r["status"] == "completed", r.get("error")
    # fid_init + 2 epochs + 3 test draws
    assert len(seen) == 1 + 2 + 3 and all(seen)
    m = r["metrics"]
    assert len(m["test/fid_draws"]) == 3 and m["test/fid_std"] > 0
    assert m["test/fid"] == pytest.approx(sum(m["test/fid_draws"]) / 3, rel=1e-4)
    ck = state(Path(m["best_ckpt"]))
    assert int(ck["state_dict"]["generator_ema.num_updates"]) == ck["global_step"] // 2  # one per G step


def test_resume_is_exact_with_ema_on(tmp_path, fid_cache):  # noqa: F811
    """The DCGAN with EMA (BatchNorm buffers copied), spectral norm, d_steps=2 and lazy R1: 1 + 1
    epochs end bit-identical to 2 epochs, raw generator, EMA and both Adam states."""
    over = ["experiment=gan_mnist_dcgan", "test=false", "model.d_steps=2", "callbacks.gan_samples.gif=false"]
    over += ["model.r1_gamma=10", "model.r1_every=3"]
    full = run_gan(tmp_path / "full", over, fid_cache)
    first = run_gan(tmp_path / "first", [*over, "trainer.max_epochs=1"], fid_cache)
    resumed = run_gan(tmp_path / "resumed", [*over, f"ckpt_path={first['metrics']['last_ckpt']}"], fid_cache)
    a, b = state(full["metrics"]["last_ckpt"]), state(resumed["metrics"]["last_ckpt"])
    assert any(k.startswith("generator_ema.module.") and "running_mean" in k for k in a["state_dict"])
    assert_same_training_state(a, b)
    assert full["metrics"]["fid"] == resumed["metrics"]["fid"]


# ------------------------------------------------------------------------------------------ DCGAN
def test_dcgan_shapes_and_specs():
    gan = build(DCGANConfig(discriminator=DCDiscriminatorConfig(spectral_norm=True), fid=NO_FID))
    g, d = gan.generator, gan.discriminator
    x = g(torch.randn(3, 128) * 5)
    assert x.shape == (3, 1, 28, 28) and x.abs().max() <= 1
    assert d.logits(x).shape == (3,) and ((d(x) > 0) & (d(x) < 1)).all()
    convs = [m for m in g.net if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(64, 32), (32, 1)]
    assert [m.out_channels for m in d.net if isinstance(m, torch.nn.Conv2d)] == [32, 64]
    big = net(DCGeneratorConfig(latent_dim=16, channels=[8, 4, 2], img_shape=[3, 32, 32]))
    assert big(torch.randn(2, 16)).shape == (2, 3, 32, 32)
    assert gan.hparams.generator["_target_"] == "hybridlearn.gan.nets.DCGenerator"  # specs rebuild the nets
    rebuilt = GAN(**gan.hparams)
    assert type(rebuilt.generator) is DCGenerator and rebuilt.generator.spec == g.spec
    assert rebuilt.hparams.discriminator == d.spec and d.spec["spectral_norm"] is True


def test_dcgan_one_epoch_fit(tmp_path, fid_cache):  # noqa: F811
    r = run_gan(tmp_path / "dc", ["experiment=gan_mnist_dcgan", "trainer.max_epochs=1"], fid_cache)
    assert r["status"] == "completed", r.get("error")
    m = r["metrics"]
    assert m["fid"] < m["fid_init"] and m["test/fid"] > 0
    ck = state(m["last_ckpt"])
    assert ck["hybridlearn_class"] == "hybridlearn.gan.model.GAN"
    assert ck["hyper_parameters"]["generator"]["_target_"] == "hybridlearn.gan.nets.DCGenerator"
    g, fixed, _ = load_generator(m["last_ckpt"])
    assert isinstance(g, DCGenerator)
    assert Image.open(tmp_path / "dc" / "samples" / "epoch_0001.png").size == (242, 242)


# ------------------------------------------------------------------------------------------ losses
def test_hinge_and_bce_losses_match_hand_computation():
    lr, lf = [2.0, 0.5, -1.5], [-2.0, 0.3, 1.2]
    real, fake = torch.tensor(lr), torch.tensor(lf)
    hand_d = sum(max(0.0, 1 - x) for x in lr) / 3 + sum(max(0.0, 1 + x) for x in lf) / 3
    assert float(d_loss("hinge", real, fake)) == pytest.approx(hand_d)  # (0 + 0.5 + 2.5)/3 + (0 + 1.3 + 2.2)/3
    assert float(g_loss("hinge", fake)) == pytest.approx(-sum(lf) / 3)

    def softplus(x: float) -> float:
        return float(torch.log1p(torch.exp(torch.tensor(x, dtype=torch.float64))))

    s = 0.1  # BCE with one-sided smoothing: real targets 0.9, averaged over all 6 logits
    hand = [(1 - s) * softplus(-x) + s * softplus(x) for x in lr] + [softplus(x) for x in lf]
    assert float(d_loss("nonsaturating", real, fake, 1 - s)) == pytest.approx(sum(hand) / 6, rel=1e-6)
    assert float(g_loss("nonsaturating", fake)) == pytest.approx(sum(softplus(-x) for x in lf) / 3, rel=1e-6)
    # the model's D step uses them: its loss is the hinge of the logits of the same batch
    torch.manual_seed(0)
    m = small_gan(loss="hinge")
    opt_g, opt_d = m.configure_optimizers()
    x, z = torch.rand(6, 1, 28, 28) * 2 - 1, torch.randn(6, 16)
    with torch.no_grad():
        logits = m.discriminator.logits(torch.cat([x, m.generator(z)]))
    want = F.relu(1 - logits[:6]).mean() + F.relu(1 + logits[6:]).mean()
    assert float(m.d_step(x, opt_d, z)[0]) == pytest.approx(float(want), rel=1e-6)


def test_r1_penalty_is_the_mean_squared_gradient_norm_at_the_real_images():
    """R1 = mean over images of ||d D(x) / dx||^2: for a linear D that is ||w||^2 exactly, for an MLP
    each image's gradient taken alone (torch.func, no batch sum). The model's D step adds
    gamma/2 * r1_every * R1 on every r1_every-th batch only (lazy), and the penalty changes D's update."""
    torch.manual_seed(0)
    x = (torch.rand(5, 1, 28, 28) * 2 - 1).requires_grad_(True)
    w = torch.randn(784)
    assert float(r1_penalty(x.flatten(1) @ w + 0.3, x)) == pytest.approx(float(w @ w), rel=1e-5)
    m = small_gan(loss="hinge", r1_gamma=4.0, r1_every=2)
    d = m.discriminator

    def one_grad_sq(img: torch.Tensor) -> torch.Tensor:
        return torch.func.grad(lambda i: d.logits(i.unsqueeze(0)).squeeze())(img).pow(2).sum()

    want = torch.stack([one_grad_sq(img) for img in x.detach()]).mean()
    assert float(r1_penalty(d.logits(x), x)) == pytest.approx(float(want), rel=1e-5)

    z = torch.randn(5, 16)
    with torch.no_grad():
        logits = d.logits(torch.cat([x.detach(), m.generator(z)]))
    hinge = float(F.relu(1 - logits[:5]).mean() + F.relu(1 + logits[5:]).mean())
    opt_g, opt_d = m.configure_optimizers()
    state0 = {k: v.clone() for k, v in d.state_dict().items()}
    assert float(m.d_step(x.detach(), opt_d, z, batch_idx=1)[0]) == pytest.approx(hinge, rel=1e-6)  # not this batch
    d.load_state_dict(state0)
    opt_g, opt_d = m.configure_optimizers()
    loss = float(m.d_step(x.detach(), opt_d, z, batch_idx=2)[0])
    assert loss == pytest.approx(hinge + 0.5 * 4.0 * 2 * float(want), rel=1e-5)
    with_r1 = {k: v.clone() for k, v in d.state_dict().items()}
    plain = small_gan(loss="hinge")
    plain.discriminator.load_state_dict(state0)
    plain.generator.load_state_dict(m.generator.state_dict())
    plain.d_step(x.detach(), plain.configure_optimizers()[1], z, batch_idx=2)
    assert plain.hparams.r1_gamma == 0.0  # off by default: the paper's D loss
    assert any(not torch.equal(with_r1[k], v) for k, v in plain.discriminator.state_dict().items())


def test_the_reports_training_line_names_r1_only_when_on(tmp_path):
    def line(*over: str) -> str:
        return modern_training(compose_cfg(list(over), tmp_path))

    assert "R1" not in line("experiment=gan_mnist") and "R1" not in line(
        "experiment=gan_mnist_modern", "model.r1_gamma=0"
    )
    lazy = line("experiment=gan_mnist_modern", "model.r1_gamma=2.5", "model.r1_every=16")
    assert lazy.startswith("the hinge loss") and "R1 penalty gamma 2.5 on D (lazy, every 16th batch)" in lazy
    assert "R1 penalty gamma 3 on D, no EMA generator" in line("experiment=gan_mnist", "model.r1_gamma=3")


def test_d_steps_counts_generator_updates(tmp_path, fid_cache):  # noqa: F811
    """d_steps=3, 5 batches per epoch, 2 epochs: 10 D steps, G after batches 3 of each epoch (2)."""
    r = run_gan(
        tmp_path / "k",
        # monitor=null: a checkpoint every epoch (Lightning 2.6 saves last.ckpt only beside a new best)
        [
            "data.train_subset=320",
            "model.d_steps=3",
            "model.ema_decay=0.5",
            "test=false",
            "model.fid.num_samples=100",
            "callbacks.model_checkpoint.monitor=null",
        ],
        fid_cache,
    )
    assert r["status"] == "completed", r.get("error")
    ck = state(r["metrics"]["last_ckpt"])
    g_steps, d_steps = ({int(s["step"]) for s in o["state"].values()} for o in ck["optimizer_states"])
    assert (g_steps, d_steps) == ({2}, {10})
    assert int(ck["state_dict"]["generator_ema.num_updates"]) == 2


# ------------------------------------------------------------------------------------------ val FID
def test_val_fid_uses_held_out_training_images(tmp_path, fid_cache, monkeypatch):  # noqa: F811
    """data.val_size > 0: `val/fid` is measured against the data module's val split, images held
    out of training (disjoint from every training batch), next to its floor."""
    refs = []
    orig = GANEvaluator.set_reference
    monkeypatch.setattr(GANEvaluator, "set_reference", lambda self, real: (refs.append(real.clone()), orig(self, real)))
    over = ["data.val_size=5000", "test=false", "trainer.max_epochs=1", "callbacks.gan_samples.gif=false"]
    r = run_gan(tmp_path / "v", over, fid_cache)
    assert r["status"] == "completed", r.get("error")
    m = r["metrics"]
    assert m["val/fid_floor"] < m["val/fid"] and m["fid_val_n"] == 25  # train_subset 256 caps val at 25
    cfg = compose_cfg(["experiment=gan_mnist", "data.train_subset=256", "data.val_size=5000"], tmp_path / "c")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    train, val = dm.tensors["train"][0], dm.tensors["val"][0]
    assert len(refs) == 2 and torch.equal(refs[1], val)  # [0]: the training reference
    train_rows = {bytes(x.numpy().tobytes()) for x in train}
    assert not any(bytes(x.numpy().tobytes()) in train_rows for x in val)
    assert not any(bytes(x.numpy().tobytes()) in train_rows for x in refs[1])
    # without a val split (the paper's data.val_size=0) there is no val/fid
    r = run_gan(tmp_path / "nv", ["test=false", "trainer.max_epochs=1", "model.fid.num_samples=100"], fid_cache)
    assert "val/fid" not in r["metrics"]


def test_class_balance_counts_classes_within_3_points():
    """classes_balanced: digits holding 10 % +- 3 % of the samples (exact counts)."""
    ev = GANEvaluator.__new__(GANEvaluator)
    ev.batch_size = 1000
    counts = [100, 70, 130, 69, 131, 100, 100, 100, 100, 100]  # 1000 samples; 69 and 131 fall outside

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return self.logits[: len(x)]

    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    ev.classifier = Fixed()
    ev.classifier.logits = F.one_hot(labels, 10).float() * 10
    s = ev.class_stats(torch.zeros(1000, 1, 28, 28))
    assert s["classes_balanced"] == 8 and s["balanced"] is False
    assert s["class_hist"][3] == 0.069


# ------------------------------------------------------------------------------------------ search
def test_search_draws_label_smoothing_only_for_bce():
    for loss, drawn in (("hinge", False), ("nonsaturating", True)):
        trial = optuna.trial.FixedTrial({"model.loss": loss, "model.label_smoothing": 0.1})
        trial.suggest_categorical("model.loss", ["nonsaturating", "hinge"])
        label_smoothing_for_bce(None, trial)
        assert ("model.label_smoothing" in trial.params) is drawn
        if drawn:
            assert trial.params["model.label_smoothing"] == 0.1


def test_optuna_search_two_trials(tmp_path, fid_cache):  # noqa: F811
    """hparams_search=gan_optuna end to end at a tiny budget: each trial scored on val/fid (held-out
    training images), no test FID, the best value the lowest val/fid."""
    sweep = tmp_path / "search"
    p = train_cli(
        [
            "-m",
            "hparams_search=gan_optuna",
            "experiment=gan_mnist_modern",
            "hydra.sweeper.n_trials=2",
            "trainer.max_epochs=1",
            "data.train_subset=512",
            "model.fid.num_samples=200",
            "model.fid.num_real=200",
            f"model.fid.cache_dir={fid_cache}",
            "model.fid.classifier_train_size=5000",
            "trainer.enable_progress_bar=false",
            "logger=csv",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert p.returncode == 0, p.stderr[-3000:]
    trials = [json.loads(f.read_text()) for f in sorted(sweep.glob("*/results.json"))]
    assert len(trials) == 2 and all(t["status"] == "completed" for t in trials)
    assert all("val/fid" in t["metrics"] and "test/fid" not in t["metrics"] for t in trials)
    for t in trials:
        o = dict(s.split("=", 1) for s in t["overrides"])
        assert 5e-5 <= float(o["model.g_lr"]) <= 2e-3 and o["model.loss"] in ("nonsaturating", "hinge")
        assert ("model.label_smoothing" in o) == (o["model.loss"] == "nonsaturating")
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(t["metrics"]["val/fid"] for t in trials))


# ------------------------------------------------------------------------------------------ reproduce
def test_reproduce_plans_and_reports_the_dcgan(tmp_path, data_dir):
    """reproduce.stages=[gan_dcgan]: one resumable run of experiment=gan_mnist_dcgan per training seed;
    its section puts the models that finished side by side over their seeds (epochs, wall time from
    the epochs' times, images/s, epochs to FID <= 10, best FID, test FID mean ± std over seeds and
    each seed's spread over draws, class coverage), computed here by hand from fake runs."""
    plan = make_plan(compose_cfg(["experiment=reproduce", "reproduce.stages=[gan,gan_dcgan]"], tmp_path / "cfg"))
    run = plan.runs["gan_dcgan"][0]
    assert run.rel == "gan_dcgan/mnist" and run.resumable and run.args[0] == "experiment=gan_mnist_dcgan"
    assert [r.args[-1] for r in plan.runs["gan_dcgan"]] == ["seed=0", "seed=1", "seed=2"]
    figs = tmp_path / "figures"
    figs.mkdir()
    assert "reproduce.stages=[gan_dcgan]" in "\n".join(gan_dcgan_section(tmp_path, figs))
    for stage, name, seed, rows, metrics, minutes in (
        ("gan", "mnist", 0, "epoch,fid\n0,900.0\n1,300.0\n", {"test/fid": 310.0}, 40),
        (
            "gan_dcgan",
            "mnist",
            0,
            "epoch,fid,time/epoch_s,time/samples_per_s\n0,200.0,600,1000\n1,8.0,600,3000\n",
            {"test/fid": 52.5, "test/fid_std": 0.5, "test/classes_balanced": 9, "test/class_hist": [0.1] * 10},
            99,  # the epochs' times count (20 min), not the last attempt's duration
        ),
        (
            "gan_dcgan",
            "mnist_seed1",
            1,
            "epoch,fid,time/epoch_s,time/samples_per_s\n0,9.5,900,1000\n1,12.0,900,1000\n",
            {"test/fid": 47.5, "test/fid_std": 0.25, "test/classes_balanced": 10},
            99,
        ),
    ):
        d = tmp_path / stage / name
        (d / "csv").mkdir(parents=True)
        (d / "csv" / "metrics.csv").write_text(rows)
        (d / "samples").mkdir()
        Image.new("RGB", (20, 20)).save(d / "samples" / "epoch_0002.png")
        res = {
            "status": "completed",
            "seed": seed,
            "duration_s": minutes * 60,
            "metrics": {"fid_floor": 0.8, **metrics},
        }
        (d / "results.json").write_text(json.dumps(res))
    md = "\n".join(gan_dcgan_section(tmp_path, figs))
    assert "| paper's model | 0 | 2 | 40 | n/a | never | 300.00 | 2 | **310.00** | 310.00 | n/a |" in md
    # minutes 20 and 30, images/s 2000 and 1000, FID <= 10 at epochs 2 and 1, best 8.0 (epoch 2, after 20 min)
    # and 9.5 (epoch 1, after 15 min)
    assert (
        "| dcgan | 0, 1 | 2, 2 | 25 ± 7 | 1500 ± 707 | 2, 1 | 8.75 ± 1.06 | 2 (20), 1 (15) | **50.00 ± 3.54** | "
        "52.50 ± 0.50, 47.50 ± 0.25 | 9, 10 |" in md
    )
    # against the paper's model's 40 min (its duration: no epoch times)
    assert (
        "- dcgan: a run takes 0.62x the paper's model's 40 min; its tested checkpoints were saved 15-20 min into "
        "the run, 2 of 2 within" in md
    )
    assert "| modern |" not in md  # not run: no row
    assert (figs / "gan_dcgan_fid_curve.png").is_file() and (figs / "gan_dcgan_epoch_002.png").is_file()
    assert "(figures/gan_class_hist.png)" in md and (figs / "gan_class_hist.png").is_file()  # the runs that have one
    # the DCGAN has two seeds: every seed's curve, a panel per model
    assert "(figures/gan_seed_curves.png)" in md and (figs / "gan_seed_curves.png").is_file()
    # the finished models' last grids side by side (the same latent vectors; the first seed's)
    assert "| paper's model, after epoch 2 | dcgan, after epoch 2 |" in md
    assert "(figures/gan_epoch_002.png)" in md and "(figures/gan_dcgan_epoch_002.png)" in md
