"""matplotlib for the report pictures: the headless Agg backend, chosen on first use, and PNGs saved atomically."""

from __future__ import annotations

import io
from pathlib import Path

from fcnseg.files import atomic_write_bytes


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed); imported here, never at ``fcnseg`` import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 100) -> tuple[int, int]:
    """Render ``fig`` to ``path`` as a PNG (temp file then rename), close it, and return its ``(width, height)`` in pixels."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    pyplot().close(fig)
    atomic_write_bytes(buffer.getvalue(), path)
    from PIL import Image

    buffer.seek(0)
    with Image.open(buffer) as png:
        return png.size


def label_font_size(num_labels: int) -> float:
    """Tick-label points that stay legible and do not collide from 2 to 60+ labels (10 pt down to 6.5 pt)."""
    return max(6.5, min(10.0, 12.0 - num_labels / 10))
