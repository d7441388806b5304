"""The one progress bar: every frame on a terminal, a line every half minute into a log file.

``fcnseg train``, ``predict`` and ``eval`` take their bars from :func:`progress_bar`. tqdm redraws
its bar many times a second; on a terminal each frame replaces the last, but in a file every frame
stays (a 5-minute run wrote 156 KB of them), so off a terminal the bar refreshes at most every
:data:`FILE_INTERVAL` seconds.
"""

from __future__ import annotations

import sys
from typing import IO, Any, Iterable

from tqdm import tqdm

FILE_INTERVAL = 30.0  # seconds between frames written to a stream that is not a terminal


def is_terminal(stream: IO | None) -> bool:
    """Whether ``stream`` (default: stderr, where tqdm writes) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Iterable | None = None, *, show: bool = True, stream: IO | None = None, **options: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one: ``total=``, ``.update()``) written to ``stream`` (stderr).

    ``show=False`` gives a silent bar with the same interface. On a terminal tqdm redraws as it likes;
    elsewhere (a file, a pipe, a CI log) at most one frame per :data:`FILE_INTERVAL` seconds, plus the
    first and the last. ``options`` go to tqdm (``desc``, ``unit``, ``total``, ``initial``...).
    """
    if not is_terminal(stream):
        options = {**options, "mininterval": FILE_INTERVAL, "maxinterval": FILE_INTERVAL}
        options.pop("dynamic_ncols", None)  # a file has no width to follow
    return tqdm(iterable, file=stream, disable=not show, **options)


def set_status(bar: tqdm, text: str) -> None:
    """Show ``text`` after ``bar``'s counts (``photo.jpg: tile 3/12``); redrawn now on a terminal, with the next frame elsewhere."""
    if bar.disable:
        return
    bar.set_postfix_str(text, refresh=False)
    if is_terminal(getattr(bar, "fp", None)):
        bar.refresh()
