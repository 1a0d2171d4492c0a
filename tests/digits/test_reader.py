"""The sheet reader: synthetic pages from MNIST test digits, the four real sheets, bad pages,
`layout: auto` manifests and the add-sheet command."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy import ndimage

from hybridlearn.core.errors import DataError
from hybridlearn.digits import sheets as sheets_cli
from hybridlearn.digits.digitset import build_digits
from hybridlearn.digits.images import cell_bounds, load_grey
from hybridlearn.digits.manifest import builtin_sheets, read_manifest
from hybridlearn.digits.reader import NoDigitError, binarize, box_iou, ink_map, read_page
from hybridlearn.digits.synth import (
    LOWRES_STYLES,
    STYLES,
    UNRULED_SMALL_STYLES,
    each_row_reads,
    found_in_order,
    mnist_pages,
    render_page,
)
from hybridlearn.mnist.data import load_mnist


@pytest.fixture(scope="module")
def mnist(data_dir):
    raw = load_mnist(data_dir)
    return raw["test_x"].numpy(), raw["test_y"].numpy()


def grey_of(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), np.float32) / 255


def test_reader_finds_the_digits_of_realistic_pages_in_reading_order(mnist):
    # margins, plain/dotted/squared/lined paper, jitter, +-3 degrees, lighting gradient, JPEG
    pages = mnist_pages(*mnist, n_pages=len(STYLES))
    found = [found_in_order(p, [c.box for c in read_page(grey_of(p.image)).cells]) for p in pages]
    assert np.mean(found) >= 0.99, found
    assert min(found) >= 0.97, found


def test_reader_finds_the_digits_of_small_ruled_jpeg_scans(mnist):
    # 18-24 px per cell (digits ~14 px tall, 1-2 px strokes), ruled cells as thick as the strokes
    pages = mnist_pages(*mnist, n_pages=len(LOWRES_STYLES), styles=LOWRES_STYLES, margin=20, offset=1000)
    for p in pages:
        read = read_page(grey_of(p.image))
        assert found_in_order(p, [c.box for c in read.cells]) >= 0.99, (p.image.size, [len(r) for r in read.rows])
        assert read.grid_mismatch(10, 10) is None and 12 <= read.digit_height <= 20
        for c in read.cells:  # boxes on the page as given, not the upsampled one
            assert 0 <= c.box[0] < c.box[2] <= p.image.width and 0 <= c.box[1] < c.box[3] <= p.image.height


@pytest.mark.parametrize("offset, seed", [(2000, 0), (5000, 40)])
def test_small_unruled_scans_count_every_digit_and_nothing_else(mnist, offset, seed):
    # 16-24 px per cell on dotted or plain paper, specks, pen dots and bits of ruling beside the
    # digits, strokes broken when binarized, +-2 degrees, JPEG: exactly the page's 100 digits
    pages = mnist_pages(*mnist, n_pages=6, styles=UNRULED_SMALL_STYLES, margin=20, offset=offset, seed=seed)
    for p in pages:
        read = read_page(grey_of(p.image))
        assert len(read.cells) == 100 and read.grid_mismatch(10, 10) is None, (
            p.image.size,
            [len(r) for r in read.rows],
        )
        assert found_in_order(p, [c.box for c in read.cells]) >= 0.98, p.image.size


def test_specks_dots_and_dashes_beside_digits_are_never_digits(mnist):
    x, y = mnist
    page = render_page(x[:30], y[:30], np.arange(30), rows=3, cols=10, margin=20, scale=20 / 60, jpeg=75, seed=7)
    grey = grey_of(page.image)
    for cx, cy in page.centres:  # level with each digit's middle, in the gap to its right neighbour
        x0, y0 = int(cx + 7), int(cy)
        grey[y0 : y0 + 2, x0 : x0 + 2] = 0.2  # a pen dot
        grey[y0 - 6, x0 : x0 + 5] = 0.3  # a dash, a bit of ruling (a third of a digit wide)
    grey[int(page.centres[0][1]) + 9, 40:44] = 0.25  # an underline between two rows
    read = read_page(grey)
    assert [len(r) for r in read.rows] == [10, 10, 10]
    assert found_in_order(page, [c.box for c in read.cells]) == 1.0


def test_broken_strokes_break_when_binarized_and_are_read_as_one_digit(mnist):
    x, y = mnist
    style = dict(paper="plain", scale=20 / 60, jpeg=75, margin=20, rows=4, cols=10, seed=3)
    pieces = {}
    for breaks in (0.0, 0.8):
        page = render_page(x[:40], y[:40], np.arange(40), breaks=breaks, **style)
        pieces[breaks] = ndimage.label(binarize(ink_map(grey_of(page.image)))[0], structure=np.ones((3, 3)))[1]
        read = read_page(grey_of(page.image))
        assert [len(r) for r in read.rows] == [10] * 4 and found_in_order(page, [c.box for c in read.cells]) == 1.0
    assert pieces[0.8] >= pieces[0.0] + 8, pieces  # the generator does break strokes


def test_a_digit_too_faint_to_binarize_is_found_and_an_empty_cell_stays_empty(mnist):
    x, y = mnist
    d = x[:30].copy()
    d[[4, 15, 27]] = (d[[4, 15, 27]] * 0.3).astype(np.uint8)  # three digits in a light pencil
    style = dict(rows=3, cols=10, margin=20, scale=20 / 60, jpeg=75, seed=5, paper="dotted", specks=10)
    page = render_page(d, y[:30], np.arange(30), **style)
    read = read_page(grey_of(page.image))
    assert [len(r) for r in read.rows] == [10, 10, 10]
    assert found_in_order(page, [c.box for c in read.cells]) == 1.0
    d[[4, 15, 27]] = 0  # empty cells, specks and dots around them: nothing is made up there
    read = read_page(grey_of(render_page(d, y[:30], np.arange(30), **style).image))
    assert [len(r) for r in read.rows] == [9, 9, 9]


def test_a_stray_fragment_never_becomes_a_row(mnist):
    x, y = mnist
    page = render_page(x[:30], y[:30], np.arange(30), rows=3, cols=10, paper="cells", margin=20, scale=20 / 60, jpeg=75)
    grey = grey_of(page.image)
    # pen strokes a third of a digit long (bigger than dust) above the first row, between rows
    # and below the last row
    for cx, cy, h, w in ((60, 0, 2, 6), (120, 1, 2, 7), (95, 25, 6, 2), (150, 70, 2, 7)):
        grey[cy : cy + h, cx : cx + w] = 0.15
    read = read_page(grey)
    assert [len(r) for r in read.rows] == [10, 10, 10]
    assert found_in_order(page, [c.box for c in read.cells]) == 1.0


def test_reader_deskews_and_reports_cells(mnist):
    x, y = mnist
    page = render_page(x[:20], y[:20], np.arange(20), rows=2, cols=10, paper="squared", rotate=3.0, seed=3)
    read = read_page(grey_of(page.image))
    assert abs(abs(read.angle) - 3.0) <= 0.3
    assert [len(r) for r in read.rows] == [10, 10] and read.grid_mismatch(2, 10) is None
    assert "expected 4x5" in read.grid_mismatch(4, 5)
    for c in read.cells:  # the digit's cell holds its ink box; the image is ink on black
        assert c.cell[0] <= (c.box[0] + c.box[2]) / 2 <= c.cell[2]
        assert c.image.max() > 0.5 and np.median(c.image) < 0.05


def _hand_match(page, rows: int, cols: int, shape) -> np.ndarray:
    """Per hand cell: exactly one reader digit centred in it, whose cell has IoU >= 0.7 with it."""
    h, w = shape
    hand = [(c0, r0, c1, r1) for r0, r1 in cell_bounds(rows, h) for c0, c1 in cell_bounds(cols, w)]
    ok = []
    for hb in hand:
        inside = [
            c
            for c in page.cells
            if hb[0] <= (c.box[0] + c.box[2]) / 2 < hb[2] and hb[1] <= (c.box[1] + c.box[3]) / 2 < hb[3]
        ]
        ok.append(len(inside) == 1 and box_iou(inside[0].cell, hb) >= 0.7)
    return np.array(ok)


def test_real_sheets_cut_by_the_reader_match_their_hand_geometry(data_dir):
    for s in builtin_sheets(data_dir):
        grey = load_grey(s.file)
        page = read_page(grey)
        ok = _hand_match(page, s.rows, s.cols, grey.shape)
        assert ok.mean() >= 0.98, (s.name, np.nonzero(~ok)[0])
        assert page.grid_mismatch(s.rows, s.cols) is None, s.name


def _auto_manifest(tmp_path, data_dir) -> str:
    d = data_dir / "digits"
    entries = [
        {"file": str(d / "jpossaz.png"), "layout": "auto", "labels": "columns", "invert": False},
        {"file": str(d / "jpossaz2.png"), "layout": "auto", "labels": "columns", "invert": False},
        {"file": str(d / "JuanRengifo.png"), "layout": "auto", "rows": 10, "cols": 10, "labels": "rows"},
        {
            "file": str(d / "cossio.png"),
            "layout": "auto",
            "labels": "csv",
            "labels_file": str(d / "cossio.csv"),
            "invert": True,
        },
    ]
    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump({"sheets": entries}))
    return str(path)


def test_layout_auto_sheets_give_the_hand_cells(tmp_path, data_dir):
    auto = build_digits(read_manifest(_auto_manifest(tmp_path, data_dir)), 28, "clean", despeckle=0.03)
    hand = build_digits(builtin_sheets(data_dir), 28, "clean", despeckle=0.03)
    assert auto.x.shape == hand.x.shape and (auto.y == hand.y).all()
    assert [(s.rows, s.cols) for s in auto.sheets] == [(10, 10), (10, 10), (10, 10), (31, 10)]
    diff = (auto.x - hand.x).abs().mean((1, 2, 3))
    assert diff.mean() < 0.03 and (diff > 0.1).float().mean() < 0.02


def test_layout_auto_checks_the_count(tmp_path, data_dir):
    path = tmp_path / "m.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "sheets": [
                    {
                        "file": str(data_dir / "digits" / "jpossaz.png"),
                        "layout": "auto",
                        "rows": 9,
                        "cols": 10,
                        "labels": "columns",
                    }
                ]
            }
        )
    )
    with pytest.raises(DataError, match=r"jpossaz.png \(layout auto\).*expected 9x10"):
        build_digits(read_manifest(path))
    path.write_text(yaml.safe_dump({"sheets": [{"file": "a.png", "layout": "diagonal", "labels": "columns"}]}))
    with pytest.raises(DataError, match="layout must be grid"):
        read_manifest(path)


def test_bad_pages_say_no_digit(tmp_path):
    with pytest.raises(NoDigitError, match="blank page"):
        read_page(np.full((300, 400), 0.9, np.float32))
    with pytest.raises(NoDigitError, match="too small"):
        read_page(np.zeros((1, 1), np.float32))
    dotted = np.full((600, 600), 0.93, np.float32)
    dotted[::30, ::30] = 0.3  # dotted paper, nothing written on it
    dotted[::30, 1::30] = 0.3
    with pytest.raises(NoDigitError, match="no digit"):
        read_page(dotted)


def test_huge_page_is_shrunk_while_loading(tmp_path, mnist):
    x, y = mnist
    page = render_page(x[:10], y[:10], np.arange(10), rows=1, cols=10, seed=1)
    big = page.image.resize((page.image.width * 10, page.image.height * 10), Image.NEAREST)
    big.save(tmp_path / "big.png")
    grey = load_grey(tmp_path / "big.png", max_side=2000)
    assert max(grey.shape) <= 2000 and max(grey.shape) >= 1000
    assert len(read_page(grey).cells) == 10


def test_add_sheet_appends_a_checked_entry(tmp_path, mnist, data_dir):
    imgs, labels, idx = each_row_reads(*mnist, rows=3)
    page = render_page(imgs, labels, idx, rows=3, cols=10, paper="dotted", seed=2)
    page.image.save(tmp_path / "anna.png")
    manifest = tmp_path / "sheets.yaml"
    manifest.write_text("# mine\nsheets:\n  - file: old.png\n    rows: 1\n    cols: 1\n    labels: [5]\n")
    (tmp_path / "old.png").write_bytes((tmp_path / "anna.png").read_bytes())

    # a wrong row length: nothing written
    assert (
        sheets_cli.main(["add-sheet", str(tmp_path / "anna.png"), "--writer", "anna", "--rows-read", "012345678"]) == 2
    )
    assert manifest.read_text().count("file:") == 1 and not (tmp_path / "anna_contact.png").exists()

    assert (
        sheets_cli.main(
            ["add-sheet", str(tmp_path / "anna.png"), "--writer", "anna", "--rows-read", "0123456789", "--rows", "3"]
        )
        == 0
    )
    text = manifest.read_text()
    assert text.startswith("# mine\n") and "layout: auto" in text  # appended, comments kept
    added = read_manifest(manifest)[-1]
    assert (added.rows, added.cols, added.writer, added.layout) == (3, 10, "anna", "auto")
    assert added.labels == list(range(10)) * 3
    assert (tmp_path / "anna_contact.png").is_file()
    d = build_digits([added], 28, "clean")
    assert len(d.y) == 30
    # twice: refused (the contact sheet exists; with --overwrite, the page is already listed)
    assert (
        sheets_cli.main(["add-sheet", str(tmp_path / "anna.png"), "--writer", "anna", "--rows-read", "0123456789"]) == 2
    )
    with pytest.raises(DataError, match="already listed"):
        sheets_cli.add_sheet(tmp_path / "anna.png", "anna", "0123456789", manifest, overwrite_contact=True)
