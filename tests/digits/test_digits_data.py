"""The digit sheets: manifest, slicing, labels, inversion, splits, bad input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import build, run_cli

from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.digits.conf import DigitSheetsDataConfig
from hybridlearn.digits.contact import main
from hybridlearn.digits.digitset import build_digits
from hybridlearn.digits.images import cell_bounds, dark_ink, load_grey, mnist_like
from hybridlearn.digits.manifest import BUILTIN_SHEETS, read_manifest, resolve_sheets


def digits_dm(seed: int = 0, **settings):
    """DigitSheetsDataModule from its declaration (data=digits), split and shuffle seeds `seed`."""
    return build(DigitSheetsDataConfig(**settings), seed=seed)


@pytest.fixture(scope="module")
def sheets(data_dir):
    return resolve_sheets(data_dir)


@pytest.fixture(scope="module")
def paper32(sheets):
    return build_digits(sheets, 32, "paper")


def test_builtin_layout_matches_the_shared_manifest(data_dir, sheets):
    shared = read_manifest(data_dir / "digits" / "sheets.yaml")
    assert [(s.name, s.rows, s.cols, s.labels, s.invert) for s in shared] == [
        (s.name, s.rows, s.cols, s.labels, s.invert) for s in sheets
    ]
    assert {s["file"] for s in BUILTIN_SHEETS} == {s.name for s in shared}


def test_label_counts_and_first_rows(sheets, paper32):
    assert {s.name: len(s.labels) for s in sheets} == {
        "jpossaz.png": 100,
        "jpossaz2.png": 100,
        "JuanRengifo.png": 100,
        "cossio.png": 310,
    }
    assert len(paper32.y) == 610 and paper32.x.shape == (610, 1, 32, 32)
    by = {s.name: s for s in sheets}
    for name in ("jpossaz.png", "jpossaz2.png"):  # labels: columns
        assert by[name].labels[:10] == list(range(10)) and by[name].labels[90:] == list(range(10))
    juan = by["JuanRengifo.png"].labels  # labels: rows
    assert juan[:10] == [0] * 10 and juan[90:] == [9] * 10
    cossio = by["cossio.png"].labels  # labels: csv, checked by eye against the sheet
    assert cossio[:10] == list(range(10))
    assert cossio[20:30] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert cossio[60:70] == [9, 0, 1, 2, 4, 5, 6, 7, 8, 9]  # the row without a 3
    counts = Counter(paper32.y.tolist())
    assert sorted(counts) == list(range(10)) and min(counts.values()) >= 58


def test_cells_are_equal_and_cover_the_sheet():
    b = cell_bounds(10, 889)  # JuanRengifo.png: 889 px is not a multiple of 10
    assert b[0][0] == 0 and b[-1][1] == 889 and all(b[i][1] == b[i + 1][0] for i in range(9))
    assert {e - s for s, e in b} <= {88, 89}
    assert cell_bounds(31, 868) == [(28 * i, 28 * i + 28) for i in range(31)]


def test_every_cell_holds_light_ink_on_dark(paper32):
    x = paper32.x.flatten(1)
    med, top = x.median(1).values, x.quantile(0.99, dim=1)
    # after inversion the background is dark; the paper's plain slicing keeps the grey of some
    # cossio.png strips (dark paper), which preprocess=clean removes
    assert (med < 0.5).float().mean() > 0.97 and med.max() < 0.75
    assert (top - med > 0.08).all(), "every cell must hold a digit"  # faint pencil strips on cossio.png


def test_invert_logic(sheets, data_dir):
    # the manifest's invert flags agree with auto-detection on every sheet
    for s in sheets:
        assert dark_ink(load_grey(s.file)) == s.invert, s.name
    juan = [s for s in sheets if s.name == "JuanRengifo.png"][0]
    juan.invert = False
    raw = build_digits([juan], 32, "paper")
    juan.invert = True
    assert raw.x.flatten(1).median(1).values.min() > 0.5  # not inverted: white paper


def test_clean_preprocessing_centres_like_mnist(sheets):
    d = build_digits(sheets, 28, "clean")
    assert d.x.shape == (610, 1, 28, 28)
    x = d.x[:, 0]
    mass = x.sum((1, 2))
    ys, xs = torch.arange(28.0), torch.arange(28.0)
    cy = (x.sum(2) * ys).sum(1) / mass
    cx = (x.sum(1) * xs).sum(1) / mass
    assert (cy - 13.5).abs().max() < 1.5 and (cx - 13.5).abs().max() < 1.5
    assert (x[:, :2].amax((1, 2)) < 0.3).float().mean() > 0.95  # top rows empty (20x20 box)


def test_despeckle_erases_small_blobs_only():
    cell = torch.zeros(40, 40)
    cell[6:22, 18:21] = 1.0  # a "1": a vertical stroke
    cell[34, 10] = 0.8  # a speck of dust below it (~2 % of the ink)
    plain, clean = mnist_like(cell, 28), mnist_like(cell, 28, despeckle=0.03)
    # the speck stretches the bounding box (the stroke comes out short); despeckled, the stroke
    # alone fills the 20-pixel box like MNIST and nothing else is left
    rows = lambda x: int((x.amax(1) > 0.2).sum())  # noqa: E731
    assert rows(clean) >= 19 and rows(plain) < 15
    assert torch.equal(mnist_like(cell, 28, despeckle=0.0), plain)
    big = cell.clone()
    big[34, 10] = 0.0
    big[26:30, 4:12] = 1.0  # a second stroke with ~30 % of the ink is part of the digit: kept
    assert torch.equal(mnist_like(big, 28, despeckle=0.03), mnist_like(big, 28))


def test_split_sizes_and_seeds(data_dir):
    dm = digits_dm(0)
    dm.setup()
    sizes = {k: len(v[1]) for k, v in dm.tensors.items()}
    assert sizes == {"train": 439, "val": 49, "test": 122}
    allidx = torch.cat(list(dm.indices.values()))
    assert sorted(allidx.tolist()) == list(range(610))
    dm2 = digits_dm(0)
    dm2.digits = dm.digits
    dm2.setup()
    assert torch.equal(dm2.indices["test"], dm.indices["test"])
    dm3 = digits_dm(1)
    dm3.digits = dm.digits
    dm3.setup()
    assert not torch.equal(dm3.indices["test"], dm.indices["test"])


def test_writer_groups_and_leave_one_writer_out(data_dir):
    dm = digits_dm(test_writer="JuanRengifo", size=28, value_range="tanh")
    dm.setup()
    d = dm.digits
    assert Counter(d.writer) == {"jpossaz": 200, "JuanRengifo": 100, "cossio": 310}
    assert len(dm.tensors["test"][1]) == 100 and len(dm.tensors["val"][1]) == 51
    assert {d.writer[i] for i in dm.indices["train"].tolist()} == {"jpossaz", "cossio"}
    x = dm.tensors["train"][0]
    assert x.shape[1:] == (1, 28, 28) and x.min() >= -1 and x.max() <= 1 and x.min() < -0.99
    dm = digits_dm(test_writer="jpossaz2", writer_groups={"jpossaz2.png": "jpossaz2"})
    dm.setup()
    assert len(dm.tensors["test"][1]) == 100
    with pytest.raises(ConfigError, match="test_writer"):
        bad = digits_dm(test_writer="nobody")
        bad.digits = d
        bad.setup()


def test_mnist_mix_adds_mnist_to_training_batches_only(data_dir):
    dm = digits_dm(size=28, preprocess="clean", value_range="standard", mnist_mix=16)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert len(batches) == 14 and all(len(y) == len(x) for x, y in batches)  # 439 digits in batches of 32
    x, y = batches[0]
    assert x.shape == (48, 1, 28, 28) and len(batches[-1][1]) == 439 % 32 + 16
    train_x = dm.tensors["train"][0]
    # the first 32 are the sheets' digits, the last 16 MNIST images (not among the digits)
    assert all(any(torch.equal(a, b) for b in train_x) for a in x[:32])
    assert not any(any(torch.equal(a, b) for b in train_x) for a in x[32:])
    assert x[32:].min() == dm.tensors["train"][0].min()  # same value range (MNIST's background)
    assert len(next(iter(dm.val_dataloader()))[1]) == 49 and len(next(iter(dm.test_dataloader()))[1]) == 122
    again = digits_dm(size=28, preprocess="clean", value_range="standard", mnist_mix=16)
    again.digits = dm.digits
    again.setup()
    assert torch.equal(next(iter(again.train_dataloader()))[0], x)  # seeded


def _manifest(tmp_path: Path, data_dir: Path, **entry) -> Path:
    base = {
        "file": str(data_dir / "digits" / "jpossaz.png"),
        "rows": 10,
        "cols": 10,
        "labels": "columns",
        "invert": False,
    }
    base.update(entry)
    base = {k: v for k, v in base.items() if v is not None}
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump({"sheets": [base]}))
    return p


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"labels": "csv", "labels_file": "l.csv", "_csv": "1,2,3"}, r"sheet .*jpossaz.png: 3 labels for a 10x10 grid"),
        (
            {"labels": "csv", "labels_file": "l.csv", "_csv": ",".join(["1"] * 99 + ["x"])},
            r"sheet .*jpossaz.png: labels must be digits 0-9; found 'x'",
        ),
        ({"labels": [1] * 99 + [12]}, r"labels must be digits 0-9; found '12'"),
        ({"labels": "csv", "labels_file": "missing.csv"}, r"sheet .*jpossaz.png: cannot read labels_file"),
        ({"labels": "diagonal"}, r"sheet .*jpossaz.png: labels must be columns, rows, csv"),
        ({"cols": 11}, r"labels=columns needs at most 10 columns"),
        ({"rows": 0}, r"sheet .*: rows must be a positive integer"),
        ({"invert": "maybe"}, r"invert must be true, false or auto"),
        ({"file": "nope.png"}, r"sheet nope.png: image file .*nope.png not found"),
    ],
)
def test_bad_manifests_name_the_sheet(tmp_path, data_dir, entry, match):
    entry = dict(entry)
    csv = entry.pop("_csv", None)
    if csv is not None:
        (tmp_path / "l.csv").write_text(csv)
    m = _manifest(tmp_path, data_dir, **entry)
    with pytest.raises(DataError, match=match) as e:
        build_digits(resolve_sheets(data_dir, str(m)), 28)
    assert "\n" not in str(e.value)


def test_unreadable_image_and_manifest(tmp_path, data_dir):
    (tmp_path / "broken.png").write_text("not an image")
    m = _manifest(tmp_path, data_dir, file="broken.png")
    with pytest.raises(DataError, match=r"sheet broken.png: cannot read image"):
        build_digits(resolve_sheets(data_dir, str(m)), 28)
    (tmp_path / "bad.yaml").write_text("sheets: [\n")
    with pytest.raises(DataError, match="cannot parse"):
        read_manifest(tmp_path / "bad.yaml")
    with pytest.raises(DataError, match="not found"):
        read_manifest(tmp_path / "none.yaml")
    (tmp_path / "empty.yaml").write_text("sheets: []\n")
    with pytest.raises(DataError, match="empty"):
        read_manifest(tmp_path / "empty.yaml")


def test_user_sheet_via_extra_manifest_with_auto_invert_and_alpha(tmp_path, data_dir):
    """A user's own sheet: dark ink drawn on a transparent canvas, labels as a string."""
    from PIL import Image

    juan = np.asarray(Image.open(data_dir / "digits" / "JuanRengifo.png").convert("L"))[:178, :]  # rows 0-1
    rgba = np.zeros((*juan.shape, 4), np.uint8)
    rgba[..., 3] = 255 - juan  # ink opaque, paper transparent, colour black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "mine.png")
    (tmp_path / "mine.yaml").write_text(
        yaml.safe_dump(
            {
                "sheets": [
                    {"file": "mine.png", "rows": 2, "cols": 10, "labels": "0000000000 1111111111", "invert": "auto"}
                ]
            }
        )
    )
    dm = digits_dm(extra_manifests=[str(tmp_path / "mine.yaml")], size=28, preprocess="clean")
    dm.setup()
    d = dm.digits
    assert len(d.y) == 630 and d.writers[-1] == "mine"
    mine = d.x[-20:].flatten(1)
    assert (mine.median(1).values < 0.2).all() and (mine.amax(1) > 0.8).all()


def test_contact_sheet_cli(tmp_path, data_dir, capsys):
    out = tmp_path / "contact.png"
    assert (
        main(["--contact-sheet", str(out), "--data-dir", str(data_dir), "--size", "28", "--preprocess", "clean"]) == 0
    )
    from PIL import Image

    assert Image.open(out).size[0] > 1000
    assert "610 digits" in capsys.readouterr().out
    assert main(["--contact-sheet", str(out), "--manifest", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: digit manifest")


def test_contact_sheet_command_runs_as_a_module(tmp_path):
    """`python -m hybridlearn.digits.contact`, as docs/digits.md and the reproduce plan run it."""
    args = ["-m", "hybridlearn.digits.contact", "--contact-sheet", str(tmp_path / "c.png")]
    p = run_cli("-m hybridlearn.digits.contact", [*args[2:], "--manifest", str(tmp_path / "none.yaml")])
    assert p.returncode == 2 and p.stderr.startswith("error: digit manifest"), p.stderr
    # the command's old home says where it went, instead of exiting 0 having done nothing
    old = run_cli("-m hybridlearn.digits.data", args[2:])
    assert old.returncode == 2 and "python -m hybridlearn.digits.contact" in old.stderr, old.stderr
    assert not (tmp_path / "c.png").exists()
