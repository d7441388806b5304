"""The legend beside `fcnseg predict --overlay` pictures: the classes present, their colours and shares, drawn readably."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fcnseg.cli import main
from fcnseg.data.palette import overlay, voc_palette
from fcnseg.reports.legend import (
    BAND_COLOUR,
    MAX_ROWS,
    TEXT_COLOUR,
    font_size_for,
    layout_legend,
    legend_font,
    legend_rows,
    with_legend,
)

NAMES = ["background", "road", "tree", "sky", "car"]


def labels_with_shares() -> np.ndarray:
    """A 40x50 label map: sky 50%, background 30%, tree 20%, no road, no car."""
    labels = np.zeros((40, 50), dtype=np.uint8)
    labels[:20] = 3
    labels[20:28] = 2
    return labels


def test_rows_are_the_classes_present_largest_share_first_with_the_model_names_and_colours():
    palette = voc_palette(256)
    palette[3] = (10, 200, 250)  # a model's own colour for "sky"
    rows = legend_rows(labels_with_shares(), NAMES, palette)
    assert [(r.name, r.pixels) for r in rows] == [("sky", 1000), ("background", 600), ("tree", 400)]
    assert [r.fraction for r in rows] == [0.5, 0.3, 0.2]
    assert rows[0].colour == (10, 200, 250) and rows[2].colour == tuple(voc_palette(256)[2].tolist())
    assert [r.text for r in rows] == ["sky 50.0%", "background 30.0%", "tree 20.0%"]


def test_the_legend_is_beside_the_overlay_whose_pixels_stay_as_they_were():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    labels = labels_with_shares()
    plain = overlay(image, labels)
    rows = legend_rows(labels, NAMES, voc_palette(256))
    shown = with_legend(plain, rows)
    layout = layout_legend(rows, font_size_for(40, 50))
    assert shown.shape == (max(40, layout.height), 50 + layout.width, 3)
    np.testing.assert_array_equal(shown[:40, :50], plain)  # the overlay region is today's overlay, pixel for pixel
    band = shown[:, 50:]
    assert (band != np.array(BAND_COLOUR)).any(axis=-1).mean() > 0.02  # something is drawn in the band
    # each non-background swatch is filled with its class colour; background's is left empty (it is not tinted)
    for row, (x0, y0, x1, y1) in zip(rows, layout.swatches):
        centre = band[(y0 + y1) // 2, (x0 + x1) // 2]
        expected = BAND_COLOUR if row.index == 0 else row.colour
        assert tuple(centre.tolist()) == tuple(expected), row.name


def test_the_text_drawn_is_each_row_in_the_default_font():
    labels = labels_with_shares()
    rows = legend_rows(labels, NAMES, voc_palette(256))
    size = font_size_for(40, 50)
    band = with_legend(np.zeros((40, 50, 3), dtype=np.uint8), rows)[:, 50:]
    layout = layout_legend(rows, size)
    font = legend_font(size)
    for origin, text in zip(layout.text_origins, layout.lines):
        # the same string in the same font, drawn alone on the band's white, found where the legend put it
        alone = Image.new("RGB", (band.shape[1], band.shape[0]), BAND_COLOUR)
        ImageDraw.Draw(alone).text(origin, text, fill=TEXT_COLOUR, font=font)
        alone = np.asarray(alone)
        inked = (alone != np.array(BAND_COLOUR)).any(axis=-1)
        assert inked.sum() > 20, text
        np.testing.assert_array_equal(band[inked], alone[inked])
    # and not any other string: "car" (absent from the image) is not among the rows
    assert "car" not in " ".join(layout.lines) and "road" not in " ".join(layout.lines)


def test_text_grows_with_the_image_and_many_classes_end_in_a_count():
    assert font_size_for(48, 64) == 12 and font_size_for(6000, 8000) == 96 and font_size_for(1000, 1500) == 30
    names = [f"class_{i}" for i in range(MAX_ROWS + 6)]
    labels = np.arange(len(names), dtype=np.uint8).repeat(3)[None]
    layout = layout_legend(legend_rows(labels, names, voc_palette(256)), 12)
    assert len(layout.lines) == MAX_ROWS + 1 and layout.lines[-1] == "... 6 more classes"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from test_predict import CLASSES, scoring_model
    from fcnseg.data.normalization import PAPER_BGR
    from fcnseg.weights.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("legend") / "model.pt"
    model = scoring_model()
    save_checkpoint(path, model, model.config, CLASSES, PAPER_BGR)
    return path


def test_predict_overlays_carry_the_legend_unless_asked_not_to(tmp_path, checkpoint):
    from fcnseg.data.synthetic import generate_sample

    Image.fromarray(generate_sample(0, "val", 2, size=(100, 130)).image).save(tmp_path / "a.png")
    common = ["--overlay", "--workers", "0", "--no-progress", "--precision", "fp32"]
    assert main(["predict", str(checkpoint), str(tmp_path / "a.png"), "-o", str(tmp_path / "with"), *common]) == 0
    assert main(["predict", str(checkpoint), str(tmp_path / "a.png"), "-o", str(tmp_path / "without"), *common,
                 "--no-legend"]) == 0
    with Image.open(tmp_path / "without" / "a_overlay.jpg") as plain, Image.open(tmp_path / "with" / "a_overlay.jpg") as legend:
        assert plain.size == (130, 100)
        assert legend.size[0] > 130 + 60 and legend.size[1] >= 100
        band = np.asarray(legend.convert("RGB"))[:, 140:]
    assert (np.abs(band.astype(int) - 255).max(axis=-1) > 60).mean() > 0.01  # dark text on the white band
