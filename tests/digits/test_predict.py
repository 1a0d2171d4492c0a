"""predict.py on whole pages: the reader's accuracy against clean cells, --grid/--expect/--labels,
the annotated picture, and bad input (blank, 1x1, unreadable files in a folder, count mismatch)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from hybridlearn.core.trainer import build_trainer
from hybridlearn.digits import cli, predict
from hybridlearn.digits.synth import (
    LOWRES_STYLES,
    STYLES,
    UNRULED_SMALL_STYLES,
    each_row_reads,
    mnist_pages,
    render_page,
)
from hybridlearn.mnist.conf import LeNet5Config, MNISTPretrainConfig
from hybridlearn.mnist.data import load_mnist, to_float
from hybridlearn.mnist.lenet import LeNet5


@pytest.fixture(scope="module")
def mnist(data_dir):
    raw = load_mnist(data_dir)
    return raw["test_x"].numpy(), raw["test_y"].numpy()


def _save(model: LeNet5, folder: Path) -> str:
    """A Lightning checkpoint of `model`, as training would write it."""
    trainer = build_trainer(None, folder)
    x = torch.zeros(2, 1, 28, 28)
    trainer.validate(
        model, DataLoader(TensorDataset(x, torch.zeros(2, dtype=torch.long)), batch_size=2), verbose=False
    )  # attaches the model, so the trainer can save it
    trainer.save_checkpoint(folder / "lenet.ckpt")
    return str(folder / "lenet.ckpt")


@pytest.fixture(scope="module")
def ckpt(data_dir, tmp_path_factory):
    """A LeNet-5 trained for seconds on 6k MNIST *training* digits (about 0.85 accurate): enough
    for the command's behaviour (no datamodule settings: cells are prepared MNIST-like)."""
    raw = load_mnist(data_dir)
    x, y = to_float(raw["train_x"][:6000], "standard"), raw["train_y"][:6000]
    torch.manual_seed(0)
    model = build(LeNet5Config())
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for i in torch.randperm(len(y)).split(128):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
    return _save(model, tmp_path_factory.mktemp("lenet"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pages", "small_scans", "small_unruled"])
def test_pages_read_as_well_as_clean_cells(data_dir, mnist, tmp_path, kind):
    """On realistic pages (no hand cropping), and on small ruled JPEG scans (18-24 px per cell),
    a good model's accuracy is within 1 point of its accuracy on the same MNIST test digits given
    as clean cells; on small unruled scans (16-24 px, specks, dots, strokes broken when
    binarized: some digits lose a stroke) within 3 points (measured 0.964 vs 0.988), every digit
    found. The model: the MNIST LeNet-5 of lenet_digits_transfer (6 augmented epochs; cached
    after its first run)."""
    cache = os.environ.get("HYBRIDLEARN_CACHE", str(Path.home() / ".cache" / "hybridlearn"))
    pretrain = MNISTPretrainConfig(data_dir=str(data_dir), cache_dir=cache, epochs=6, augment=True, subset=None)
    model = build(LeNet5Config(pretrained="mnist", pretrain=pretrain))
    model, prep = predict.load_model(_save(model, tmp_path))
    x, _ = mnist
    right_page = right_clean = n = 0
    styles, margin = {"pages": (STYLES, 70), "small_scans": (LOWRES_STYLES, 20)}.get(kind, (UNRULED_SMALL_STYLES, 20))
    for page in mnist_pages(*mnist, n_pages=2 * len(styles), styles=styles, margin=margin):
        grey = np.asarray(page.image, np.float32) / 255
        reading = predict.read_digits(model, prep, grey, (10, 10))  # every digit found, nothing else
        clean, _ = predict.classify(model, prep, [x[k] / 255.0 for k in page.index], invert=False)
        right_page += sum(int(d == t) for d, t in zip(reading.digits, page.labels))
        right_clean += sum(int(d == t) for d, t in zip(clean, page.labels))
        n += len(page.labels)
    assert right_clean / n >= 0.97, right_clean / n  # the model itself reads MNIST
    assert right_page / n >= right_clean / n - (0.03 if kind == "small_unruled" else 0.01), (
        right_page / n,
        right_clean / n,
    )


def test_cli_reads_a_page_scores_it_and_annotates(ckpt, mnist, tmp_path, capsys):
    imgs, labels, idx = each_row_reads(*mnist, rows=4)
    page = render_page(imgs, labels, idx, rows=4, cols=10, paper="squared", rotate=3.0, gradient=0.4, jpeg=80, seed=5)
    page.image.save(tmp_path / "page.jpg")
    assert cli.main([ckpt, str(tmp_path / "page.jpg"), "--expect", "0123456789"]) == 0
    out = capsys.readouterr().out.splitlines()
    cells = [line for line in out if "[" in line and "confidence" in line]
    assert len(cells) == 40 and cells[0].startswith(f"{tmp_path / 'page.jpg'} [0,0]: ")
    assert cells[-1].startswith(f"{tmp_path / 'page.jpg'} [3,9]: ")
    acc = [line for line in out if "accuracy" in line]
    assert len(acc) == 1 and float(acc[0].split("accuracy: ")[1].split()[0]) >= 0.5
    ann = tmp_path / "page_read.png"
    w, h = Image.open(ann).size  # the page, enlarged a whole number of times, under a header line
    assert ann.is_file() and w % page.image.width == 0 and h > w // page.image.width * page.image.height
    pixels = np.asarray(Image.open(ann).convert("RGB")).reshape(-1, 3)
    assert ((pixels[:, 1] > 120) & (pixels[:, 0] < 60)).sum() > 100  # green boxes of right digits
    # the annotated page is never replaced without --overwrite; nothing printed then
    before = ann.read_bytes()
    assert cli.main([ckpt, str(tmp_path / "page.jpg")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "already exists" in captured.err and ann.read_bytes() == before
    # a labels file and --grid: a wrong count is one line and no output
    (tmp_path / "labels.txt").write_text("\n".join(["0123456789"] * 4))
    assert (
        cli.main(
            [
                ckpt,
                str(tmp_path / "page.jpg"),
                "--labels",
                str(tmp_path / "labels.txt"),
                "--grid",
                "4x10",
                "--out-dir",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    assert "accuracy" in capsys.readouterr().out and (tmp_path / "o" / "page_read.png").is_file()
    assert cli.main([ckpt, str(tmp_path / "page.jpg"), "--grid", "5x10", "--no-annotate"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "found 40 digits, expected 5x10 = 50" in captured.err


def test_small_unruled_scan_count_line_and_a_readable_annotated_page(ckpt, mnist, tmp_path, capsys):
    """A 10x10 sheet at 20 px per digit on dotted paper (specks, broken strokes, JPEG): the
    count line, and an annotated page enlarged until every digit is >= 40 px tall, each label
    just outside its own box, clear of the other labels, the unsure cells marked."""
    imgs, labels, idx = each_row_reads(*mnist, rows=10)
    page = render_page(imgs, labels, idx, margin=20, seed=1, **UNRULED_SMALL_STYLES[2])
    page.image.save(tmp_path / "small.jpg")
    assert cli.main([ckpt, str(tmp_path / "small.jpg"), "--grid", "10x10", "--expect", "0123456789"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{tmp_path / 'small.jpg'}: found 100 digits, expected 10x10 = 100" in out
    pic = Image.open(tmp_path / "small_read.png")
    grey = np.asarray(page.image, np.float32) / 255
    reading = predict.read_digits(*predict.load_model(ckpt), grey, (10, 10))
    lay = predict.annotation_layout(reading, None)
    assert pic.size == lay.size and lay.size[0] == page.image.width * lay.scale and lay.scale >= 3
    assert np.median([b[3] - b[1] for b in lay.boxes]) >= 40  # the digits as drawn, not the scan's 14 px
    assert lay.font_size >= 13
    for k, (box, spot) in enumerate(zip(lay.boxes, lay.spots)):
        assert predict._overlap(box, spot) == 0, k  # outside its digit's box ...
        assert spot[3] <= box[1] or spot[1] >= box[3], k  # ... right above or below it
        assert all(predict._overlap(spot, o) == 0 for o in lay.spots[:k]), k  # no label over another
        assert spot[1] >= lay.band and spot[3] <= lay.size[1] and spot[0] >= 0 and spot[2] <= lay.size[0]
    assert lay.unsure == [p < predict.LOW_CONFIDENCE for p in reading.conf]
    # every cell unsure: each gets the amber frame
    predict.annotate(grey, reading, None, tmp_path / "unsure.png", overwrite=False, low=1.01)
    px = np.asarray(Image.open(tmp_path / "unsure.png").convert("RGB")).reshape(-1, 3).astype(int)
    amber = (px[:, 0] > 230) & (np.abs(px[:, 1] - 150) < 25) & (px[:, 2] < 40)
    assert amber.sum() > 100 * 40, amber.sum()  # 100 frames, each well over 40 amber pixels


def test_folder_blank_tiny_and_unreadable_images(ckpt, mnist, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("L", (200, 200), 240).save(folder / "blank.png")
    Image.new("L", (1, 1), 0).save(folder / "dot.png")
    (folder / "broken.png").write_bytes(b"not a png")
    digit = Image.fromarray(255 - mnist[0][0]).resize((112, 112))  # dark ink on white, one digit
    digit.save(folder / "one.png")
    assert cli.main([ckpt, str(folder), "--no-annotate"]) == 1  # the broken one is reported at the end
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert f"{folder / 'blank.png'}: no digit found" in out[0]
    assert f"{folder / 'dot.png'}: no digit found" in out[1]
    assert out[2] == f"{folder / 'one.png'}: {int(mnist[1][0])} (confidence {out[2].split('confidence ')[1]}"
    assert "broken.png" in captured.err and "unreadable" in captured.err


def test_huge_page_is_downscaled(ckpt, mnist, tmp_path, capsys):
    x, y = mnist
    page = render_page(x[:5], y[:5], np.arange(5), rows=1, cols=5, seed=4)
    big = page.image.resize((8000, int(8000 * page.image.height / page.image.width)), Image.NEAREST)
    big.save(tmp_path / "big.png")
    assert cli.main([ckpt, str(tmp_path / "big.png"), "--grid", "1x5"]) == 0
    assert Image.open(tmp_path / "big_read.png").size[0] <= 2000
    assert len([line for line in capsys.readouterr().out.splitlines() if "confidence" in line]) == 5


def test_page_over_pillows_pixel_limit_is_one_correct_line(ckpt, tmp_path, capsys, monkeypatch):
    Image.new("L", (200, 200), 255).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 200x200 is then over twice the limit, as 15000x15000 is
    assert cli.main([ckpt, str(tmp_path / "huge.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too large to read" in err[0] and "scale the page down" in err[0], err
    assert "PNG/JPG" not in err[0]


def test_ensemble_reads_with_the_mean_of_the_models_probabilities(ckpt, mnist, tmp_path, capsys):
    """--ensemble: the mean of the members' probabilities (checked against each model alone), the
    same digits when a model is ensembled with itself, and a missing member is one line."""
    m1, prep = predict.load_model(ckpt)
    m2 = build(LeNet5Config())
    torch.manual_seed(1)
    with torch.no_grad():
        for a, b in zip(m2.parameters(), m1.parameters()):
            a.copy_(b + 0.3 * b.std() * torch.randn_like(b))
    (tmp_path / "m2").mkdir()
    ckpt2 = _save(m2, tmp_path / "m2")
    ens, prep_e = predict.load_models([ckpt, ckpt2])
    assert prep_e == prep
    x = to_float(torch.from_numpy(mnist[0][:64]), "standard")
    m2 = predict.load_model(ckpt2)[0]
    mean = (torch.softmax(m1.eval_logits(x), -1) + torch.softmax(m2.eval_logits(x), -1)) / 2
    got = torch.softmax(ens.eval_logits(x), -1)
    torch.testing.assert_close(got, mean, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(got, torch.softmax(m1.eval_logits(x), -1), atol=1e-3)  # the second model counts
    x_, y_, idx = each_row_reads(*mnist, rows=2)
    render_page(x_, y_, idx, rows=2, cols=10, seed=3).image.save(tmp_path / "page.png")
    page = [str(tmp_path / "page.png"), "--no-annotate", "--expect", "0123456789"]

    def digits(out: str) -> list[str]:
        return [line.split("]: ")[1].split()[0] for line in out.splitlines() if "confidence" in line]

    assert cli.main([ckpt, *page]) == 0
    alone = capsys.readouterr().out
    assert cli.main([ckpt, *page, "--ensemble", ckpt]) == 0
    assert digits(capsys.readouterr().out) == digits(alone) and len(digits(alone)) == 20
    assert cli.main([ckpt, *page, "--ensemble", str(tmp_path / "nope.ckpt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.ckpt" in err[0] and "not a file" in err[0]
