"""`fcnseg predict MODEL clip.mp4`: an overlay video and per-frame label maps, frame by frame, from the image Predictor."""

from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.data.classes import read_class_file
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.data.palette import overlay, read_mask_png
from fcnseg.data.synthetic import generate_sample
from fcnseg.inference.predictor import Predictor
from fcnseg.models import build_model
from fcnseg.weights.checkpoint import save_checkpoint

CLASSES = ["background", "disc", "square", "triangle"]
FRAMES, HEIGHT, WIDTH = 12, 48, 64
ARGS = ["--workers", "0", "--no-progress", "--precision", "fp32"]
NO_AV = "PyAV is not installed (pip install 'fcnseg[video]'): video tests need it to write and read clips"


@pytest.fixture(scope="module")
def av():
    return pytest.importorskip("av", reason=NO_AV)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small FCN-8s with random score layers, so that frames get label maps of several classes."""
    torch.manual_seed(3)
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=len(CLASSES), padding="same"))
    for name in ("score_fr", "score_pool4", "score_pool3"):
        torch.nn.init.normal_(getattr(model, name).weight, std=0.05)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(path, model.eval(), model.config, CLASSES, PAPER_BGR)
    return path


def scenes(count=FRAMES, size=(HEIGHT, WIDTH)):
    return [generate_sample(0, "val", i, size=size).image for i in range(count)]


def write_clip(av, path, frames, codec="ffv1", pixels="bgr0", rate=12):
    """Encode RGB uint8 frames; FFV1 is lossless, so the frames decode back exactly."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pixels
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def decode(av, path, pixels="rgb24"):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format=pixels) for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def clip(av, tmp_path_factory):
    return write_clip(av, tmp_path_factory.mktemp("clips") / "clip.mkv", scenes())


@pytest.fixture(scope="module")
def expected_labels(av, clip, checkpoint):
    """Each decoded frame predicted on its own by the same Predictor, independently of the video code."""
    predictor = Predictor.from_checkpoint(checkpoint, precision="fp32")
    frames = decode(av, clip)
    assert len(frames) == FRAMES and all((a == b).all() for a, b in zip(frames, scenes())), "the clip must be lossless"
    labels = [predictor.predict(frame).labels for frame in frames]
    assert len(np.unique(np.stack(labels))) >= 2, "the test needs label maps of more than one class"
    return labels


def one_line_error(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_a_video_gives_an_overlay_video_and_one_label_map_per_frame_equal_to_predicting_each_frame(
        av, tmp_path, clip, checkpoint, expected_labels):
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(clip), "-o", str(out), *ARGS]) == 0
    names = sorted(p.name for p in (out / "clip_labels").iterdir())
    assert names == [f"{i:06d}.png" for i in range(FRAMES)]
    for name, expected in zip(names, expected_labels):
        np.testing.assert_array_equal(read_mask_png(out / "clip_labels" / name), expected)
    overlays = decode(av, out / "clip_overlay.mp4")
    assert len(overlays) == FRAMES and overlays[0].shape == (HEIGHT, WIDTH, 3)
    # H.264 is lossy: each frame is close to the overlay of its own frame and labels, farther from its neighbours'
    reference = [overlay(frame, labels) for frame, labels in zip(scenes(), expected_labels)]
    error = [np.abs(o.astype(int) - r).mean() for o, r in zip(overlays, reference)]
    shifted = [np.abs(o.astype(int) - r).mean() for o, r in zip(overlays[1:], reference)]
    assert max(error) < 10 and min(shifted) > 3 * max(error), (error, shifted)
    assert list(read_class_file(out / "classes.txt").names) == CLASSES


def test_the_label_video_holds_every_frames_class_ids_losslessly(av, tmp_path, clip, checkpoint, expected_labels):
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(clip), "-o", str(out), "--label-video", *ARGS]) == 0
    labels = decode(av, out / "clip_labels.mkv", "gray")
    assert len(labels) == FRAMES
    for decoded, expected in zip(labels, expected_labels):
        np.testing.assert_array_equal(decoded, expected)
    assert not (out / "clip_labels").exists() and len(decode(av, out / "clip_overlay.mp4")) == FRAMES


def test_progress_is_reported_after_every_frame_with_the_total_and_the_speed(av, tmp_path, clip, checkpoint):
    from fcnseg.inference.video import predict_video

    reports = []
    result = predict_video(Predictor.from_checkpoint(checkpoint, precision="fp32"), clip, tmp_path / "out",
                           on_frame=reports.append)
    assert [r.done for r in reports] == list(range(1, FRAMES + 1))
    assert {r.total for r in reports} == {FRAMES}  # Matroska stores no count: estimated from the duration
    assert all(r.fps > 0 for r in reports) and result.frames == FRAMES and result.fps > 0


def test_frames_are_streamed_one_at_a_time_not_decoded_ahead(av, tmp_path, clip, checkpoint, monkeypatch):
    import fcnseg.inference.video as video

    decoded, seen = [], []
    original = video.decoded_frames

    def counting(path):
        for frame in original(path):
            decoded.append(1)
            yield frame

    class Recording(Predictor):
        def predict(self, image, **kwargs):
            seen.append(len(decoded))  # frames decoded when this one is predicted
            return super().predict(image, **kwargs)

    monkeypatch.setattr(video, "decoded_frames", counting)
    predictor = Recording.from_checkpoint(checkpoint, precision="fp32")
    video.predict_video(predictor, clip, tmp_path / "out")
    assert seen == list(range(1, FRAMES + 1))


def test_odd_frame_sizes_keep_their_label_maps_and_pad_the_overlay_to_even(av, tmp_path, checkpoint):
    clip = write_clip(av, tmp_path / "odd.mkv", scenes(3, size=(47, 63)))
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(clip), "-o", str(out), *ARGS]) == 0
    assert read_mask_png(out / "odd_labels" / "000002.png").shape == (47, 63)
    assert decode(av, out / "odd_overlay.mp4")[0].shape == (48, 64, 3)


def test_a_finished_video_is_skipped_and_redone_with_overwrite(av, tmp_path, checkpoint, capsys):
    clip = write_clip(av, tmp_path / "clip.mkv", scenes(3))
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(clip), "-o", str(out), *ARGS]) == 0
    first = (out / "clip_overlay.mp4").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["predict", str(checkpoint), str(clip), "-o", str(out), *ARGS]) == 0
    assert "already segmented" in capsys.readouterr().out
    assert (out / "clip_overlay.mp4").stat().st_mtime_ns == first
    assert main(["predict", str(checkpoint), str(clip), "-o", str(out), "--overwrite", *ARGS]) == 0
    assert "3 frames of 64x48" in capsys.readouterr().out


@pytest.mark.parametrize("label_video", [False, True])
def test_a_run_that_fails_midway_leaves_no_overlay_label_video_or_temp_file(av, tmp_path, clip, checkpoint,
                                                                            label_video):
    from fcnseg.errors import DataError
    from fcnseg.inference.video import predict_video

    class FailingAtFrameFive(Predictor):
        calls = 0

        def predict(self, image, **kwargs):
            FailingAtFrameFive.calls += 1
            if FailingAtFrameFive.calls == 5:
                raise DataError("stop", path="frame 4")
            return super().predict(image, **kwargs)

    out = tmp_path / "out"
    with pytest.raises(DataError, match="stop"):
        predict_video(FailingAtFrameFive.from_checkpoint(checkpoint, precision="fp32"), clip, out,
                      label_video=label_video)
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    frames = [] if label_video else ["clip_labels", *(f"clip_labels/{i:06d}.png" for i in range(4))]
    assert left == sorted(["classes.txt", *frames])


@pytest.mark.parametrize("content", ["garbage", "empty", "truncated"])
def test_an_unreadable_video_is_a_one_line_error_naming_it(av, tmp_path, checkpoint, capsys, content):
    path = tmp_path / "broken.mp4"
    if content == "truncated":  # an MP4 whose index (written at the end) is cut off
        write_clip(av, path, scenes(4), codec="libx264", pixels="yuv420p")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(b"this is not a video\n" * 20 if content == "garbage" else b"")
    assert main(["predict", str(checkpoint), str(path), "-o", str(tmp_path / "out"), *ARGS]) == 1
    line = one_line_error(capsys)
    assert str(path) in line and "cannot read the video" in line
    assert not (tmp_path / "out" / "broken_overlay.mp4").exists()


def test_a_video_output_that_would_replace_an_input_is_refused_before_any_work(av, tmp_path, clip, checkpoint, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    video = folder / "walk.mkv"
    video.write_bytes(clip.read_bytes())
    other = write_clip(av, folder / "walk_overlay.mp4", scenes(2), codec="libx264", pixels="yuv420p")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(["predict", str(checkpoint), str(video), str(other), "-o", str(folder), *ARGS]) == 1
    line = one_line_error(capsys)
    assert str(other) in line and "would replace the input" in line
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_an_output_folder_inside_an_input_folder_is_refused_for_videos_too(av, tmp_path, clip, checkpoint, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "walk.mkv").write_bytes(clip.read_bytes())
    out = folder / "pred"
    assert main(["predict", str(checkpoint), str(folder), str(folder / "walk.mkv"), "-o", str(out), *ARGS]) == 1
    assert "choose a folder outside it" in one_line_error(capsys) and not out.exists()


def test_videos_in_a_folder_are_not_segmented_and_the_summary_says_how_to_name_them(av, tmp_path, clip, checkpoint,
                                                                                     capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "walk.mkv").write_bytes(clip.read_bytes())
    from PIL import Image

    Image.fromarray(scenes(1)[0]).save(folder / "photo.png")
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(folder), "-o", str(out), *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "1 of the files skipped are videos" in printed and "walk.mkv" in printed
    assert (out / "photo_labels.png").is_file() and not (out / "walk_overlay.mp4").exists()


def test_without_pyav_a_video_input_says_how_to_install_it(tmp_path, checkpoint, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0" * 64)
    assert main(["predict", str(checkpoint), str(path), "-o", str(tmp_path / "out"), *ARGS]) == 1
    line = one_line_error(capsys)
    assert str(path) in line and "pip install 'fcnseg[video]'" in line
    assert not (tmp_path / "out").exists()


def test_video_suffixes_are_recognised_in_any_case_and_hidden_files_are_not():
    from fcnseg.inference.video import is_video_file

    assert all(is_video_file(n) for n in ("a.mp4", "b.MOV", "c.avi", "d.mkv", "e.webm"))
    assert not any(is_video_file(n) for n in (".hidden.mp4", "photo.png", "clip.mp4.txt"))


def test_the_overlay_keeps_the_clips_frame_rate(av, tmp_path, checkpoint):
    clip = write_clip(av, tmp_path / "ntsc.mkv", scenes(3), rate=Fraction(30000, 1001))
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(clip), "-o", str(out), *ARGS]) == 0
    with av.open(str(out / "ntsc_overlay.mp4")) as container:
        assert container.streams.video[0].average_rate == Fraction(30000, 1001)


def test_frames_over_the_pixel_limit_are_refused_before_the_model_loads(av, tmp_path, clip, checkpoint, capsys):
    assert main(["predict", str(checkpoint), str(clip), "-o", str(tmp_path / "out"), *ARGS, "--max-pixels", "1000"]) == 1
    line = one_line_error(capsys)
    assert str(clip) in line and "64x48 = 3,072 pixels exceed the limit of 1,000" in line and "--max-pixels" in line
