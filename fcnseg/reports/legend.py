"""The legend beside an overlay: a swatch, the class name and its share of the image for each class present.

Drawn with PIL's own default font (no font file to find), in a band to the right of the overlay so
that the overlay's pixels stay exactly as :func:`fcnseg.data.palette.overlay` drew them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BAND_COLOUR = (255, 255, 255)
TEXT_COLOUR = (20, 20, 20)
OUTLINE_COLOUR = (90, 90, 90)
MAX_ROWS = 24  # rows drawn; the rest are summed up in one last line (areas.csv has them all)


@dataclass(frozen=True)
class LegendRow:
    """One class present in a label map: its index, name, colour, pixels and share of the image."""

    index: int
    name: str
    colour: tuple[int, int, int]
    pixels: int
    fraction: float

    @property
    def text(self) -> str:
        """What the legend writes after the swatch: ``person 42.3%`` (``<0.1%`` for a sliver)."""
        share = "<0.1%" if 0 < self.fraction < 0.0005 else f"{100 * self.fraction:.1f}%"
        return f"{self.name} {share}"


def legend_rows(labels: np.ndarray, class_names: list[str], palette: np.ndarray) -> list[LegendRow]:
    """The classes present in ``labels`` (integer ``[H, W]``), largest share first (ties: lower index first).

    Label values without a name (the ignore label 255) are left out; fractions are of all pixels.
    """
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64), minlength=len(class_names))
    total = max(int(np.asarray(labels).size), 1)
    rows = [
        LegendRow(k, class_names[k], tuple(int(c) for c in palette[k]), int(counts[k]), int(counts[k]) / total)
        for k in range(len(class_names))
        if counts[k] > 0
    ]
    return sorted(rows, key=lambda r: (-r.pixels, r.index))


def font_size_for(height: int, width: int) -> int:
    """A text height readable at the image's own scale: 12 px up to ~600 px, growing to 96 px for a 48-megapixel photo."""
    return max(12, min(96, round(max(height, width) / 50)))


def legend_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in font at ``size`` px (its bitmap font where PIL was built without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):
        return ImageFont.load_default()


@dataclass(frozen=True)
class LegendLayout:
    """Where each row goes in a band ``width x height``: the swatch square and the text origin, in pixels."""

    font_size: int
    width: int
    height: int
    swatches: list[tuple[int, int, int, int]]  # (x0, y0, x1, y1) per row, inclusive as ImageDraw takes them
    text_origins: list[tuple[int, int]]
    lines: list[str]


def layout_legend(rows: list[LegendRow], font_size: int) -> LegendLayout:
    """Lay out at most :data:`MAX_ROWS` rows (a last line counts the others) at ``font_size``."""
    font = legend_font(font_size)
    pad, line = font_size, round(font_size * 1.6)
    shown = rows[:MAX_ROWS]
    lines = [row.text for row in shown]
    if len(rows) > len(shown):
        rest = len(rows) - len(shown)
        lines.append(f"... {rest} more {'class' if rest == 1 else 'classes'}")
    swatches, origins, text_width = [], [], 0
    for i, text in enumerate(lines):
        y = pad + i * line
        if i < len(shown):
            swatches.append((pad, y, pad + font_size, y + font_size))
        origins.append((pad + 2 * font_size if i < len(shown) else pad, y))
        text_width = max(text_width, origins[-1][0] + round(font.getlength(text)))
    width = text_width + pad
    height = 2 * pad + max(len(lines), 1) * line
    return LegendLayout(font_size, width, height, swatches, origins, lines)


def draw_legend(rows: list[LegendRow], font_size: int) -> np.ndarray:
    """The legend band, RGB uint8 ``[h, w, 3]``: swatch and text per row on white.

    Background (class 0, which an overlay leaves unblended) gets an empty outlined swatch, as it shows
    the image's own colours.
    """
    layout = layout_legend(rows, font_size)
    band = Image.new("RGB", (layout.width, layout.height), BAND_COLOUR)
    draw = ImageDraw.Draw(band)
    font = legend_font(font_size)
    outline = max(1, font_size // 12)
    for row, box in zip(rows, layout.swatches):
        fill = None if row.index == 0 else row.colour
        draw.rectangle(box, fill=fill, outline=OUTLINE_COLOUR, width=outline)
    for origin, text in zip(layout.text_origins, layout.lines):
        draw.text(origin, text, fill=TEXT_COLOUR, font=font)
    return np.asarray(band)


def with_legend(picture: np.ndarray, rows: list[LegendRow], font_size: int | None = None) -> np.ndarray:
    """``picture`` (RGB uint8 ``[H, W, 3]``) with the legend band to its right: ``[max(H, h), W + w, 3]``.

    ``picture`` occupies ``[:H, :W]`` unchanged; the rest is the band's white.
    """
    height, width = picture.shape[:2]
    band = draw_legend(rows, font_size or font_size_for(height, width))
    out = np.empty((max(height, band.shape[0]), width + band.shape[1], 3), dtype=np.uint8)
    out[...] = BAND_COLOUR
    out[:height, :width] = picture
    out[: band.shape[0], width:] = band
    return out
