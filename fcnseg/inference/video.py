"""Segment a video: frames decoded, predicted and encoded one at a time into an overlay video and per-frame label maps.

Decoding and encoding go through PyAV (``pip install 'fcnseg[video]'``), imported only when a video is given.
Only one frame, its label map and its overlay are held at a time, whatever the clip's length.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from fcnseg.data.class_match import PREDICTION_CLASS_FILE
from fcnseg.data.classes import ClassInfo, write_class_file
from fcnseg.data.palette import overlay, voc_palette, write_mask_png
from fcnseg.errors import ConfigError, DataError
from fcnseg.files import atomic_open, check_output_path
from fcnseg.images import DEFAULT_MAX_PIXELS
from fcnseg.inference.predictor import Predictor

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
INSTALL_HINT = "pip install 'fcnseg[video]'"
# Per video NAME, in the output folder: the overlay, and the label maps as a folder of PNGs or one lossless video.
OVERLAY_VIDEO_SUFFIX = "_overlay.mp4"
LABEL_FOLDER_SUFFIX = "_labels"
LABEL_VIDEO_SUFFIX = "_labels.mkv"
FRAME_NAME = "{:06d}.png"  # a label folder's files: 000000.png, 000001.png, ... in decoding order
OVERLAY_CODEC, OVERLAY_PIXELS = "libx264", "yuv420p"  # H.264 4:2:0: what every player and browser plays
OVERLAY_OPTIONS = {"crf": "18"}  # x264's "visually lossless" end of its quality scale (its default is 23)
LABEL_CODEC, LABEL_PIXELS = "ffv1", "gray"  # FFV1 is lossless: class ids read back exactly
DEFAULT_RATE = Fraction(25)  # frames per second when the file does not say


def is_video_file(name: str | Path) -> bool:
    """True for a visible file name with a video suffix (``VIDEO_SUFFIXES``, any case)."""
    name = Path(name).name
    return not name.startswith(".") and Path(name).suffix.lower() in VIDEO_SUFFIXES


def import_av(path: str | Path):
    """The ``av`` module (PyAV), or a ConfigError naming the video and how to install it."""
    try:
        import av
    except ImportError as e:
        raise ConfigError(f"{path}: reading and writing video needs PyAV (the 'av' package), which is not installed; "
                          f"install it with: {INSTALL_HINT}") from e
    return av


# --- what a video holds, and where its outputs go --------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """A video's first video stream, as its header describes it.

    Attributes:
        frames: the frame count from the header, else estimated from the duration (Matroska and WebM
            store none), else None; the number decoded may differ by a frame or two.
        rate: average frames per second (``DEFAULT_RATE`` when the file does not say).
    """

    path: Path
    width: int
    height: int
    frames: int | None
    rate: Fraction
    codec: str


def _frame_count(stream, container) -> int | None:
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate
    if not rate:
        return None
    if stream.duration and stream.time_base:
        return round(stream.duration * stream.time_base * rate)
    if container.duration:  # microseconds
        return round(Fraction(container.duration, 1_000_000) * rate)
    return None


def _open_error(path: Path, error: Exception) -> DataError:
    if isinstance(error, FileNotFoundError):
        return DataError("no such file", path=path)
    return DataError(f"cannot read the video, expected a readable video file (corrupt, truncated or not a video: "
                     f"{type(error).__name__}: {error})", path=path)


@contextlib.contextmanager
def open_video(path: str | Path):
    """``with open_video(path) as (container, stream):`` the input container and its first video stream.

    Raises:
        DataError: the file is missing, unreadable or holds no video stream.
    """
    av = import_av(path)
    path = Path(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise _open_error(path, e) from e
    with container:
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
            raise DataError(f"holds no video stream (streams found: {kinds})", path=path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # decode with the codec's own threads
        yield container, stream


def probe_video(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> VideoInfo:
    """Read a video's header (no frames): size, frame count, frame rate, codec.

    Raises:
        DataError: unreadable, no video stream, no frame size, or more than ``max_pixels`` pixels a frame.
    """
    path = Path(path)
    with open_video(path) as (container, stream):
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise DataError("cannot read the video: its stream gives no frame size (corrupt or truncated)", path=path)
        if max_pixels and width * height > max_pixels:
            raise DataError(f"frames of {width}x{height} = {width * height:,} pixels exceed the limit of "
                            f"{max_pixels:,}; raise --max-pixels (0 = no limit)", path=path)
        return VideoInfo(path, width, height, _frame_count(stream, container), stream.average_rate or DEFAULT_RATE,
                         stream.codec_context.name)


@dataclass(frozen=True)
class VideoOutputs:
    """Where one video's outputs go: ``overlay`` (``NAME_overlay.mp4``) and ``labels`` (``NAME_labels/`` of
    PNGs, or ``NAME_labels.mkv`` when ``label_video``)."""

    overlay: Path
    labels: Path
    label_video: bool

    def paths(self) -> list[Path]:
        return [self.overlay, self.labels]

    def done(self) -> bool:
        """The overlay is renamed into place last, after every label map: its presence means the video is done."""
        return self.overlay.is_file() and (self.labels.is_file() if self.label_video else self.labels.is_dir())


def video_outputs(video: str | Path, output_dir: str | Path, label_video: bool = False) -> VideoOutputs:
    """The outputs of ``video`` in ``output_dir``, named after its stem."""
    stem = Path(output_dir) / Path(video).stem
    labels = Path(f"{stem}{LABEL_VIDEO_SUFFIX}") if label_video else Path(f"{stem}{LABEL_FOLDER_SUFFIX}")
    return VideoOutputs(Path(f"{stem}{OVERLAY_VIDEO_SUFFIX}"), labels, label_video)


def check_video_outputs(videos: list[str | Path], inputs: list[str | Path], output_dir: str | Path,
                        label_video: bool = False) -> None:
    """Refuse, before any work, outputs that would replace an input or another video's outputs (a ConfigError).

    ``inputs`` are every input of the run (files and folders): no video output may be one of them or hold one.
    """
    inputs_resolved = {Path(p).resolve(): Path(p) for p in inputs}
    taken: dict[Path, Path] = {}
    for video in map(Path, videos):
        outputs = video_outputs(video, output_dir, label_video)
        for output in outputs.paths():
            resolved = output.resolve()
            clash = inputs_resolved.get(resolved) or next(
                (p for r, p in inputs_resolved.items() if resolved in r.parents), None)
            if clash is not None:
                raise ConfigError(f"{video}: its output {output} would replace the input {clash}; "
                                  f"rename that file or choose another folder with -o")
            if resolved in taken:
                raise ConfigError(f"{video}: its output {output} would overwrite that of {taken[resolved]} "
                                  "(same name, other suffix); rename one of them")
            taken[resolved] = video
        check_output_path(outputs.overlay, "file", "-o")
        check_output_path(outputs.labels, "file" if label_video else "folder", "-o")


# --- the run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoProgress:
    """Reported after each frame: ``done`` frames of ``total`` (None when the file does not say), and the
    frames per second processed so far (decode, predict, encode)."""

    done: int
    total: int | None
    fps: float


@dataclass
class VideoResult:
    """What :func:`predict_video` did with one video."""

    path: Path
    outputs: VideoOutputs
    frames: int = 0  # frames segmented (0 when skipped)
    width: int = 0
    height: int = 0
    seconds: float = 0.0
    skipped: bool = False  # its outputs existed: nothing redone

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        if self.skipped:
            return f"{self.path}: already segmented ({self.outputs.overlay} exists; --overwrite redoes it)"
        return (f"{self.path}: {self.frames} frames of {self.width}x{self.height} in {self.seconds:.1f} s "
                f"({self.fps:.1f} frames/s) -> {self.outputs.overlay}, {self.outputs.labels}")


class _VideoWriter:
    """One output video, streamed into a temp file that is renamed into place when the block ends without error."""

    def __init__(self, av, file, container_format: str, codec: str, pixels: str, width: int, height: int,
                 rate: Fraction, options: dict | None = None):
        self.container = av.open(file, "w", format=container_format)
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, pixels
        self.stream.options = dict(options or {})
        self.av, self.count = av, 0

    @classmethod
    @contextlib.contextmanager
    def create(cls, av, path: Path, container_format: str, codec: str, pixels: str, width: int, height: int,
               rate: Fraction, options: dict | None = None) -> Iterator["_VideoWriter"]:
        with atomic_open(path, "wb") as file:
            writer = cls(av, file, container_format, codec, pixels, width, height, rate, options)
            with writer.container:  # closed (trailer written) before atomic_open renames the file
                yield writer
                writer.flush()

    def add(self, array: np.ndarray, array_format: str) -> None:
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=array_format)
        frame.pts = self.count  # in frames: the stream's time base is 1 / rate
        self.count += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def flush(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)


def _even(n: int) -> int:
    return n + (n % 2)


def decoded_frames(path: str | Path) -> Iterator[np.ndarray]:
    """RGB uint8 ``[H, W, 3]`` frames of a video's first video stream, one at a time, in decoding order.

    Raises:
        DataError: the file cannot be opened, or a frame cannot be decoded (naming its index).
    """
    av = import_av(path)
    with open_video(path) as (container, stream):
        index = 0
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except av.error.FFmpegError as e:
                raise DataError(f"cannot decode frame {index} ({type(e).__name__}: {e}); the file is damaged "
                                "from there on", path=path) from e
            yield frame.to_ndarray(format="rgb24")
            index += 1


def predict_video(
    predictor: Predictor,
    path: str | Path,
    output_dir: str | Path,
    *,
    label_video: bool = False,
    overwrite: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    palette: np.ndarray | None = None,
    on_frame: Callable[[VideoProgress], None] | None = None,
    progress: bool = False,
) -> VideoResult:
    """Segment every frame of a video into ``output_dir``, one frame in memory at a time.

    Writes ``NAME_overlay.mp4`` (class colours over the frames, H.264 at the clip's average frame rate; a
    frame of odd width or height is padded by one edge pixel, as 4:2:0 video needs even sizes) and the
    label maps: ``NAME_labels/000000.png ...`` (palette PNGs of class ids, one a decoded frame), or with
    ``label_video`` ``NAME_labels.mkv`` (FFV1, lossless 8-bit grey whose pixel values are the class ids).
    Every file is written atomically; the overlay is renamed into place last, so a video whose overlay
    exists is done and is skipped unless ``overwrite``. ``classes.txt`` lists the model's classes.

    Args:
        predictor: runs each frame (its precision, runtime, tiling and test-time augmentation).
        on_frame: called after each frame with a :class:`VideoProgress`.
        progress: show a progress bar (frames done / total, frames per second).
    Raises:
        DataError: the video cannot be read (naming it, and the frame where decoding failed), a frame's
            size changes mid-stream, or a label exceeds 255.
    """
    av = import_av(path)
    path, output_dir = Path(path), Path(output_dir)
    outputs = video_outputs(path, output_dir, label_video)
    if not overwrite and outputs.done():
        return VideoResult(path, outputs, skipped=True)
    info = probe_video(path, max_pixels)
    palette = voc_palette(256) if palette is None else palette
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        write_class_file(output_dir / PREDICTION_CLASS_FILE, ClassInfo(tuple(predictor.class_names)))
    except DataError as e:  # a name a class file cannot hold: the label maps are read by index
        log.warning("%s not written: %s", PREDICTION_CLASS_FILE, e)
    if not label_video:
        outputs.labels.mkdir(parents=True, exist_ok=True)
    width, height = info.width, info.height
    pad = ((0, _even(height) - height), (0, _even(width) - width), (0, 0))
    if any(p[1] for p in pad):
        log.info("%s: %dx%d frames padded by an edge pixel to %dx%d in the overlay (H.264 4:2:0 needs even sizes)",
                 path, width, height, _even(width), _even(height))
    result = VideoResult(path, outputs, width=width, height=height)
    start = time.perf_counter()
    bar = tqdm(total=info.frames, desc=path.name, unit="frame", disable=not progress)
    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        overlay_writer = stack.enter_context(_VideoWriter.create(
            av, outputs.overlay, "mp4", OVERLAY_CODEC, OVERLAY_PIXELS, _even(width), _even(height), info.rate,
            OVERLAY_OPTIONS))
        label_writer = None
        if label_video:  # entered last, so closed first: the overlay still appears last
            label_writer = stack.enter_context(_VideoWriter.create(
                av, outputs.labels, "matroska", LABEL_CODEC, LABEL_PIXELS, width, height, info.rate))
        for index, frame in enumerate(decoded_frames(path)):
            if frame.shape[:2] != (height, width):
                raise DataError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]} but the video's stream is "
                                f"{width}x{height}; a video whose frame size changes is not supported", path=path)
            labels = predictor.predict(frame).labels
            if label_writer is not None:
                if labels.max(initial=0) > 255:
                    raise DataError(f"frame {index}: class ids up to {labels.max()} do not fit the 8-bit label video; "
                                    "a model of at most 256 classes is needed", path=path)
                label_writer.add(labels.astype(np.uint8), "gray")
            else:
                write_mask_png(labels, outputs.labels / FRAME_NAME.format(index), palette)
            overlay_writer.add(np.pad(overlay(frame, labels, palette), pad, mode="edge"), "rgb24")
            result.frames = index + 1
            result.seconds = time.perf_counter() - start
            bar.update(1)
            if on_frame is not None:
                on_frame(VideoProgress(result.frames, info.frames, result.fps))
        if result.frames == 0:
            raise DataError("no frame could be decoded (empty or damaged video)", path=path)
    result.seconds = time.perf_counter() - start
    return result
