"""The digits settings (hybridlearn.digits.conf): the data and study declarations refuse a bad value in
one line naming the key before any run starts; every run the study trains (its variants and the
ablations it lists) is checked against the model's and data's declarations up front; objects built from the declarations have their defaults."""

from __future__ import annotations

import pytest
from conftest import assert_config_refused, assert_refused_without_torch, build, compose_cfg
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.settings import check_settings
from hybridlearn.digits.conf import DigitSheetsDataConfig, DigitsStudyConfig, study_settings

EXPERIMENTS = ["lenet_digits", "lenet_digits_transfer", "digits", "digits_study", "digits_contact_sheet", "gan_digits"]

BAD = [
    # data=digits: ranges, choices, rules between keys
    ("lenet_digits", "data.size=30", "data.size=30 but model.net.in_size reads 32x32 images; give data.size=32"),
    ("gan_digits", "data.size=32", "data.size=32 but model.generator.img_shape reads 28x28 images"),
    ("lenet_digits", "data.size=4", "data.size must be >= 8 and <= 1024 (got 4)"),
    ("lenet_digits", "data.preprocess=fancy", "data.preprocess must be one of paper, clean (got 'fancy')"),
    ("lenet_digits", "data.value_range=x", "data.value_range must be one of unit, tanh, standard"),
    ("lenet_digits", "data.test_fraction=1.0", "data.test_fraction must be > 0 and < 1 (got 1.0)"),
    ("lenet_digits", "data.despeckle=0.7", "data.despeckle must be >= 0 and < 0.5 (got 0.7)"),
    ("lenet_digits", "data.batch_size=0", "data.batch_size must be >= 1"),
    ("lenet_digits_transfer", "data.mnist_mix=-1", "data.mnist_mix must be >= 0 and <= 60000 (got -1)"),
    (
        "lenet_digits",
        "data.mnist_mix=16",
        "data.mnist_mix=16 adds 28x28 MNIST images to the batches; it needs data.size=28",
    ),
    ("lenet_digits", "seed=null", "data.split_seed is null"),
    ("lenet_digits", "data.manifest=/no/such.yaml", "data.manifest: /no/such.yaml is not a file"),
    ("lenet_digits_transfer", "data.test_writer=nobody", "data.test_writer='nobody' is not a writer group"),
    ("lenet_digits_transfer", "model.ensemble=0", "model.ensemble must be >= 1 and <= 16 (got 0)"),
    (
        "lenet_digits_transfer",
        "model.pretrained=conftest.py",
        "model.ensemble=3 needs model.pretrained=mnist (each member from its own pretraining seed) or null",
    ),
    ("digits_contact_sheet", "data.border=0.5", "data.border must be >= 0 and < 0.5 (got 0.5)"),
    # study=digits: its own keys, and each run it trains
    ("digits_study", "study.seeds=[-1]", "study.seeds must list one or more seeds in [0, 4294967295] (got [-1])"),
    ("digits_study", "study.seeds=[]", "study.seeds must list one or more seeds"),
    ("digits_study", "study.paper_epochs=[0,50]", "study.paper_epochs must list one or more epochs in [1, 100000]"),
    ("digits_study", "study.transfer_epochs=0", "study.transfer_epochs must be >= 1"),
    ("digits_study", "study.ablations=[nope]", "study.ablations: unknown ['nope']; choose from from_scratch"),
    ("digits_study", "study.lowo_ablations=[nope]", "study.lowo_ablations: unknown ['nope']"),
    ("digits_study", "study.pages.n_pages=0", "study.pages.n_pages must be >= 1"),
    ("digits_study", "study.threads=0", "study.threads must be >= 1"),
    ("digits_study", "study.fast_dev_run.n_seeds=0", "study.fast_dev_run.n_seeds must be >= 1"),
    ("digits_study", "study.variants.transfer.model.lr=-1", "study.variants.transfer: model.lr must be > 0"),
    ("digits_study", "study.variants.paper.data.size=30", "study.variants.paper: data.size=30 but model.net.in_size"),
    (
        "digits_study",
        "study.ablations=[low_lr] study.ablation_runs.low_lr.model.lr=0",
        "study.ablation_runs.low_lr: model.lr must be > 0",
    ),
    (
        "digits_study",
        "+study.ablation_runs.no_tta.model.augmnt=null",
        "study.ablation_runs.no_tta: Key 'augmnt' not in 'LeNet5Config'",
    ),
    (
        "digits_study",
        "study.lowo_ablations=[elastic] study.ablation_runs.elastic.model.augment.elastic=99",
        "study.ablation_runs.elastic: model.augment.elastic must be >= 0 and <= 28",
    ),
]


@pytest.mark.parametrize("experiment, override, message", BAD, ids=[b[1] for b in BAD])
def test_a_bad_value_is_one_line_naming_the_key(experiment, override, message, tmp_path):
    assert_config_refused([f"experiment={experiment}", *override.split()], message, tmp_path)


def test_the_cli_answers_in_one_line_without_importing_torch(tmp_path):
    assert_refused_without_torch(
        ["experiment=digits_study", "study.seeds=[-1]"],
        "study.seeds must list one or more seeds in [0, 4294967295] (got [-1])",
        tmp_path,
    )


@pytest.mark.parametrize("override", ["data.size=2.5", "data.drop_last=maybe", "+data.sise=28", "study.lowo=maybe"])
def test_a_wrong_type_or_key_is_refused_while_composing(override, tmp_path):
    with pytest.raises((ConfigCompositionException, ConfigError)):
        check_settings(compose_cfg(["experiment=digits_study", override], tmp_path))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_digits_experiment_composes_and_checks(experiment, tmp_path):
    cfg = compose_cfg([f"experiment={experiment}"], tmp_path)
    check_settings(cfg)
    assert OmegaConf.get_type(cfg.data) is DigitSheetsDataConfig


def test_the_study_is_declared_and_fast_dev_run_is_checked_too(tmp_path):
    cfg = compose_cfg(["experiment=digits_study"], tmp_path)
    assert (
        OmegaConf.get_type(cfg.study) is DigitsStudyConfig and cfg.study.variants.transfer.model.pretrained == "mnist"
    )
    # under debug=fdr the merged study is what runs: its ablations are checked
    cfg = compose_cfg(["experiment=digits_study", "debug=fdr", "study.fast_dev_run.ablations=[nope]"], tmp_path)
    with pytest.raises(ConfigError, match=r"study.fast_dev_run.ablations: unknown \['nope'\]"):
        check_settings(cfg)
    cfg = compose_cfg(
        ["experiment=digits_study", "debug=fdr", "+study.fast_dev_run.variants.transfer.model.lr=0"], tmp_path
    )
    with pytest.raises(ConfigError, match="study.variants.transfer: model.lr must be > 0"):
        check_settings(cfg)
    st = study_settings(compose_cfg(["experiment=digits_study", "debug=fdr"], tmp_path))
    assert list(st.seeds) == [0] and st.pages is None and st.variants.transfer.model.pretrain.subset == 2000


def test_data_module_built_from_the_declaration(data_dir):
    dm = build(DigitSheetsDataConfig(size=28, preprocess="clean"), seed=5)
    assert dm.hparams.split_seed == dm.hparams.shuffle_seed == 5 and dm.hparams.test_fraction == 0.2
    assert dm.hparams.manifest == "builtin" and dm.batch_size == 32 and dm.data_signature()["input"] == (1, 28, 28)
