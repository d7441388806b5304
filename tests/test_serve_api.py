"""`fcnseg serve`'s HTTP API: every route, every bad input answered as JSON with the right status, the queue limit, clean stops."""

from __future__ import annotations

import asyncio
import base64
import builtins
import io
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

pytest.importorskip("fastapi", reason="fcnseg serve needs the serve extra: pip install 'fcnseg[serve]'")
pytest.importorskip("python_multipart", reason="fcnseg serve needs the serve extra: pip install 'fcnseg[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from fcnseg.weights.checkpoint import load_model  # noqa: E402
from fcnseg.data.palette import voc_palette  # noqa: E402
from fcnseg.images import read_image  # noqa: E402
from fcnseg.inference.predictor import Predictor  # noqa: E402
from fcnseg.metrics import class_pixel_counts  # noqa: E402
from fcnseg.serve.app import create_app  # noqa: E402
from fcnseg.serve.queue import QueueFull, WorkQueue  # noqa: E402
from fcnseg.serve.upload import UploadError, read_body  # noqa: E402
from serve_support import (CLASS_NAMES, live_server, save_small_checkpoint, sample_image,  # noqa: E402
                           serve_then_signal)



# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_small_checkpoint(tmp_path_factory.mktemp("serve") / "small.pt")


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return Predictor.from_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, model_name="small.pt")) as client:
        yield client


def png_bytes(image: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def labels_of(answer: dict) -> np.ndarray:
    """The label map the answer's base64 PNG holds, read back as palette indices."""
    with Image.open(io.BytesIO(base64.b64decode(answer["labels_png"]))) as png:
        assert png.mode == "P"
        return np.asarray(png).copy()


def assert_json_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str) and message
    for word in words:
        assert word in message, message
    return message


# --- the routes ---------------------------------------------------------------------------------


def test_page_and_its_files_are_served_from_the_package_with_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file-input"' in page.text and "multiple" in page.text and 'id="opacity"' in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert "http://" not in response.text and "https://" not in response.text  # no CDN, no analytics
    assert "http://" not in page.text and "https://" not in page.text


def test_healthz_says_ok_and_shows_the_idle_queue(client):
    answer = client.get("/healthz").json()
    assert answer == {"status": "ok", "queue": {"workers": 1, "capacity": 8, "busy": 0, "waiting": 0}}


def test_model_route_names_the_model_its_classes_colours_precision_runtime_and_limits(client, predictor):
    model = client.get("/api/model").json()
    assert model["name"] == "small.pt" and model["arch"] == "fcn8s" and model["backbone"] == "small"
    assert [c["name"] for c in model["classes"]] == CLASS_NAMES
    assert [c["colour"] for c in model["classes"]] == voc_palette(6).tolist()
    assert model["precision"] == predictor.precision
    assert model["runtime"]["device"] == "cpu" and model["runtime"]["torch"]
    assert model["limits"]["max_upload_bytes"] == 25 * 1024**2 and model["limits"]["queue"] == 8


def test_openapi_description_lists_the_routes_and_the_upload_body(client):
    spec = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/model", "/healthz"} <= set(spec["paths"])
    predict = spec["paths"]["/api/predict"]["post"]
    assert {"image/*", "multipart/form-data"} <= set(predict["requestBody"]["content"])
    assert {"200", "413", "415", "422", "503"} <= set(predict["responses"])
    assert client.get("/docs").status_code == 404  # its Swagger page would load scripts from a CDN


def test_unknown_route_is_a_json_404(client):
    assert_json_error(client.get("/nothing-here"), 404)


# --- predictions --------------------------------------------------------------------------------


def test_areas_equal_the_pixel_counts_of_the_returned_png_and_of_predictor_predict(client, predictor, tmp_path):
    image = sample_image()
    path = tmp_path / "scene.png"
    path.write_bytes(png_bytes(image))
    answer = client.post("/api/predict", content=path.read_bytes(), headers={"content-type": "image/png"}).json()
    labels = labels_of(answer)
    expected = predictor.predict(read_image(path)).labels
    assert (answer["width"], answer["height"]) == (64, 48) and labels.shape == (48, 64)
    np.testing.assert_array_equal(labels, expected)
    counts = class_pixel_counts(expected, len(CLASS_NAMES))
    assert (counts > 0).sum() >= 3  # the model is not trivially one class
    assert list(answer["areas"]) == CLASS_NAMES
    for name, n in zip(CLASS_NAMES, counts):
        assert answer["areas"][name] == {"pixels": int(n), "fraction": pytest.approx(n / (48 * 64), abs=1e-12)}
    assert answer["classes"] == CLASS_NAMES and answer["tiles"] == 1
    assert answer["precision"] == predictor.precision and answer["runtime"]["device"] == "cpu"
    assert set(answer["timings"]) == {"read_ms", "queue_ms", "decode_ms", "predict_ms", "encode_ms", "total_ms"}
    assert answer["timings"]["total_ms"] >= answer["timings"]["predict_ms"] > 0
    assert answer["image_jpeg"] is None


def test_multipart_upload_gives_the_raw_body_answer_and_its_file_name(client):
    data = png_bytes(sample_image())
    raw = client.post("/api/predict", content=data, headers={"content-type": "application/octet-stream"}).json()
    form = client.post("/api/predict", files={"image": ("holiday.png", data, "image/png")}, data={"note": "x"}).json()
    assert form["name"] == "holiday.png" and raw["name"] is None
    assert form["areas"] == raw["areas"] and form["labels_png"] == raw["labels_png"]


def test_exif_orientation_is_applied_and_the_image_comes_back_upright_when_asked(client, predictor):
    image = Image.fromarray(sample_image(48, 64))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    answer = client.post("/api/predict?image=true", content=buffer.getvalue(), headers={"content-type": "image/jpeg"}).json()
    assert (answer["width"], answer["height"]) == (48, 64)  # upright: the sides swap
    with Image.open(io.BytesIO(base64.b64decode(answer["image_jpeg"]))) as shown:
        assert shown.size == (48, 64) and shown.mode == "RGB"
    np.testing.assert_array_equal(labels_of(answer), predictor.predict(read_image(buffer.getvalue())).labels)


@pytest.mark.parametrize("mode,suffix", [("L", "png"), ("RGBA", "png"), ("I;16", "png"), ("CMYK", "tiff"), ("P", "gif")])
def test_every_image_mode_is_segmented_as_predict_reads_it(client, predictor, tmp_path, mode, suffix):
    rgb = Image.fromarray(sample_image())
    if mode == "I;16":
        grey = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
        picture = Image.fromarray(grey)
    elif mode == "P":
        picture = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        picture = rgb.convert(mode)
    path = tmp_path / f"x.{suffix}"
    picture.save(path)
    answer = client.post("/api/predict", files={"image": (path.name, path.read_bytes(), "application/octet-stream")}).json()
    np.testing.assert_array_equal(labels_of(answer), predictor.predict(read_image(path)).labels)


def test_large_image_is_tiled_within_the_memory_budget_as_predict_tiles_it(checkpoint):
    loaded = load_model(checkpoint)
    tiled = Predictor(loaded.model, loaded.normalization, loaded.class_names, margin=32)
    tiled.max_memory = int(tiled.estimate(150, 200).total * 0.95)  # the whole image does not fit
    plan = tiled.plan(150, 200)
    assert not plan.whole
    image = sample_image(150, 200, seed=3)
    with TestClient(create_app(tiled)) as client:
        answer = client.post("/api/predict", content=png_bytes(image)).json()
    assert answer["tiles"] == plan.num_tiles > 1
    np.testing.assert_array_equal(labels_of(answer), tiled.predict(image).labels)


# --- bad input: clear JSON errors, and the server lives on ---------------------------------------


def test_upload_over_the_limit_is_refused_with_413(predictor):
    with TestClient(create_app(predictor, max_upload_bytes=2000)) as client:
        big = png_bytes(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
        assert len(big) > 2000
        assert_json_error(client.post("/api/predict", content=big, headers={"content-type": "image/png"}), 413, "2.0 KiB")
        assert_json_error(client.post("/api/predict", files={"image": ("big.png", big, "image/png")}), 413, "--max-upload-mb")
        chunks = (big[i : i + 500] for i in range(0, len(big), 500))  # chunked: no Content-Length to trust
        assert_json_error(client.post("/api/predict", content=chunks, headers={"content-type": "image/png"}), 413)
        small = png_bytes(sample_image(8, 8))
        assert client.post("/api/predict", content=small, headers={"content-type": "image/png"}).status_code == 200
        exact = small + bytes(2000 - len(small))  # a PNG may carry trailing bytes: exactly the limit
        assert client.post("/api/predict", content=exact, headers={"content-type": "image/png"}).status_code == 200
        assert client.post("/api/predict", files={"image": ("exact.png", exact, "image/png")}).status_code == 200
        assert_json_error(client.post("/api/predict", content=exact + b"\0", headers={"content-type": "image/png"}), 413)
        assert_json_error(client.post("/api/predict", files={"image": ("over.png", exact + b"\0", "image/png")}), 413)


def test_body_limit_is_enforced_while_reading_not_after():
    consumed = []

    async def chunks():
        for i in range(100):
            consumed.append(i)
            yield b"x" * 1000

    with pytest.raises(UploadError) as raised:
        asyncio.run(read_body(chunks(), None, 5500))
    assert raised.value.status == 413 and len(consumed) == 6  # stopped at the chunk that crossed the limit
    consumed.clear()
    with pytest.raises(UploadError):
        asyncio.run(read_body(chunks(), str(10**9), 5500))
    assert consumed == []  # a declared length over the limit is refused before reading anything


def test_a_live_server_answers_413_before_a_too_long_body_has_arrived(predictor):
    with live_server(create_app(predictor, max_upload_bytes=10_000)) as url:
        port = int(url.rsplit(":", 1)[1])
        for head, part in (
            (b"Content-Length: 104857600\r\n", b"x" * 1000),  # declares 100 MiB, sends 1 kB, waits
            (b"Transfer-Encoding: chunked\r\n", b"".join(b"%x\r\n%s\r\n" % (2000, b"x" * 2000) for _ in range(8))),
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n" + head + b"\r\n" + part)
                reply = read_response(s)  # the body is still unfinished: only an early answer gets here
            status_line, _, rest = reply.partition(b"\r\n")
            assert b" 413 " in status_line, reply[:200]
            assert b'"error"' in rest


def read_response(s: socket.socket) -> bytes:
    """One HTTP response (head and Content-Length body) from a socket."""
    reply = b""
    while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < content_length(reply):
        chunk = s.recv(65536)
        if not chunk:
            break
        reply += chunk
    return reply


def content_length(reply: bytes) -> int:
    for line in reply.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def test_image_over_the_pixel_limit_is_refused_with_413(predictor):
    with TestClient(create_app(predictor, max_pixels=64 * 48 - 1)) as client:
        message = assert_json_error(client.post("/api/predict", files={"image": ("wide.png", png_bytes(sample_image()), "image/png")}), 413)
        assert "wide.png" in message and "64x48" in message and "--max-pixels" in message
        assert client.post("/api/predict", content=png_bytes(sample_image(40, 40))).status_code == 200


def test_memory_budget_too_small_for_any_tile_is_413_naming_the_flag(checkpoint):
    loaded = load_model(checkpoint)
    starved = Predictor(loaded.model, loaded.normalization, loaded.class_names, max_memory=1024)
    with TestClient(create_app(starved)) as client:
        assert_json_error(client.post("/api/predict", content=png_bytes(sample_image())), 413, "--max-memory")


def test_corrupt_and_truncated_files_are_refused_with_422_and_the_server_serves_on(client):
    good = png_bytes(sample_image())
    for name, data in (("noise.jpg", b"\xff\xd8\xff\xe0 not really a jpeg" * 10), ("half.png", good[: len(good) // 2]),
                       ("text.png", b"hello")):
        assert_json_error(client.post("/api/predict", files={"image": (name, data, "image/png")}), 422, name)
    assert_json_error(client.post("/api/predict", content=b"GIF89a\x00\x00", headers={"content-type": "image/gif"}), 422)
    assert client.post("/api/predict", content=good, headers={"content-type": "image/png"}).status_code == 200
    assert client.get("/healthz").json()["queue"]["busy"] == 0


def test_empty_bodies_and_forms_without_a_file_are_refused_with_422(client):
    assert_json_error(client.post("/api/predict", content=b"", headers={"content-type": "image/png"}), 422, "empty")
    assert_json_error(client.post("/api/predict"), 422, "empty")
    assert_json_error(client.post("/api/predict", files={"image": ("nothing.png", b"", "image/png")}), 422, "nothing.png", "empty")
    assert_json_error(client.post("/api/predict", files={"note": (None, "just text")}), 422, "no file")
    assert_json_error(
        client.post("/api/predict", content=b"--xyz\r\nbroken", headers={"content-type": "multipart/form-data; boundary=xyz"}), 422
    )
    assert_json_error(client.post("/api/predict", content=b"a", headers={"content-type": "multipart/form-data"}), 422, "boundary")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # what the damage is meant to cause
def test_damaged_files_of_every_format_get_413_or_422_never_a_server_error(client):
    rng = np.random.default_rng(0)
    originals = []
    for fmt in ("PNG", "JPEG", "TIFF", "GIF", "BMP", "WEBP"):
        buffer = io.BytesIO()
        Image.fromarray(sample_image(24, 32)).save(buffer, format=fmt)
        originals.append(buffer.getvalue())
    seen = set()
    for original in originals:
        for _ in range(8):
            data = bytearray(original)
            cut = int(rng.integers(8, len(data)))
            for i in rng.integers(0, cut, 6):  # flip bytes, then maybe truncate
                data[i] = int(rng.integers(0, 256))
            data = bytes(data[: cut if rng.random() < 0.5 else len(data)])
            response = client.post("/api/predict", content=data, headers={"content-type": "application/octet-stream"})
            assert response.status_code in (200, 413, 422), response.text
            if response.status_code != 200:
                assert response.json()["error"]
            seen.add(response.status_code)
    assert 422 in seen
    assert client.get("/healthz").json()["status"] == "ok"


def test_a_decoder_failing_in_an_unforeseen_way_is_a_422_naming_the_file(client, monkeypatch):
    import struct

    import fcnseg.serve.result

    def trips(source, max_pixels):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(fcnseg.serve.result, "read_image", trips)
    response = client.post("/api/predict", files={"image": ("odd.tif", b"II*\x00", "image/tiff")})
    assert_json_error(response, 422, "odd.tif", "cannot read the image", "unpack requires")


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_refused_with_415_saying_what_to_send(client, content_type):
    response = client.post("/api/predict", content=png_bytes(sample_image()), headers={"content-type": content_type})
    assert_json_error(response, 415, content_type, "image/*", "multipart/form-data")


def test_bad_query_is_a_json_422(client):
    assert_json_error(client.post("/api/predict?image=perhaps", content=png_bytes(sample_image())), 422, "image")


def test_uploads_are_never_written_to_disk(client, monkeypatch):
    # A 2 MiB multipart upload: Starlette's form parser would spool it to a temporary file (over 1 MiB).
    info = PngImagePlugin.PngInfo()
    info.add_text("padding", "x" * (2 * 1024**2))
    data = png_bytes(sample_image(), pnginfo=info)
    real_open, real_os_open = builtins.open, os.open

    def no_writes(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            raise AssertionError(f"an upload was written to {file}")
        return real_open(file, mode, *args, **kwargs)

    def no_os_writes(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise AssertionError(f"an upload was written to {path}")
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_writes)
    monkeypatch.setattr(os, "open", no_os_writes)
    response = client.post("/api/predict", files={"image": ("padded.png", data, "image/png")})
    assert response.status_code == 200, response.text


# --- load: the bounded queue ---------------------------------------------------------------------


class SlowPredictor:
    """The real predictor, but each ``predict`` waits for ``release`` (so that the queue fills deterministically)."""

    def __init__(self, predictor: Predictor):
        self.inner = predictor
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, image):
        assert self.release.wait(60), "the test never released the predictor"
        return self.inner.predict(image)


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_full_queue_answers_503_at_once_and_the_admitted_requests_finish(predictor):
    slow = SlowPredictor(predictor)
    app = create_app(slow, workers=1, queue_size=2)
    data = png_bytes(sample_image())
    with TestClient(app) as client:
        answers = []

        def post():
            answers.append(client.post("/api/predict", content=data, headers={"content-type": "image/png"}))

        threads = [threading.Thread(target=post) for _ in range(3)]  # 1 running + 2 waiting = full
        for t in threads:
            t.start()
        wait_for(lambda: client.get("/healthz").json()["queue"] == {"workers": 1, "capacity": 2, "busy": 1, "waiting": 2})
        started = time.monotonic()
        refused = client.post("/api/predict", content=data, headers={"content-type": "image/png"})
        assert time.monotonic() - started < 5  # answered at once, not after the queue drained
        assert_json_error(refused, 503, "busy", "--queue 2")
        assert refused.headers["retry-after"] == "1"
        slow.release.set()
        for t in threads:
            t.join(60)
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert client.post("/api/predict", content=data, headers={"content-type": "image/png"}).status_code == 200
        assert client.get("/healthz").json()["queue"]["busy"] == 0


def test_work_queue_runs_jobs_on_its_workers_and_refuses_beyond_its_capacity():
    queue = WorkQueue(workers=2, capacity=1)
    gate = threading.Event()

    async def scenario():
        jobs = [asyncio.ensure_future(queue.run(gate.wait, 30)) for _ in range(3)]
        await asyncio.sleep(0)  # let them be admitted
        while queue.state().busy < 2:
            await asyncio.sleep(0.01)
        assert queue.state().waiting == 1 and queue.full()
        with pytest.raises(QueueFull, match="2 images being segmented and 1 waiting"):
            await queue.run(lambda: None)
        gate.set()
        outcomes = await asyncio.gather(*jobs)
        assert [o.value for o in outcomes] == [True, True, True]
        assert outcomes[2].waited > 0  # the third waited for a worker
        assert not queue.full() and queue.state().busy == 0

    try:
        asyncio.run(scenario())
    finally:
        queue.close()


# --- the command ---------------------------------------------------------------------------------


def test_serve_binds_to_loopback_by_default_and_warns_when_told_otherwise(checkpoint, monkeypatch, caplog):
    import uvicorn

    from fcnseg.cli import main

    seen = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: seen.append(self.config))
    assert main(["serve", str(checkpoint), "--port", "8123"]) == 0
    assert (seen[0].host, seen[0].port) == ("127.0.0.1", 8123)
    assert "reachable from other machines" not in caplog.text
    assert main(["serve", str(checkpoint), "--host", "0.0.0.0", "--workers", "2", "--queue", "3"]) == 0
    assert seen[1].host == "0.0.0.0"
    assert "reachable from other machines" in caplog.text
    assert seen[1].app.state.queue.workers == 2 and seen[1].app.state.queue.capacity == 3


def test_serve_rejects_bad_numbers_in_one_line(checkpoint, capsys):
    from fcnseg.cli import main

    assert main(["serve", str(checkpoint), "--workers", "0"]) == 1
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert main(["serve", str(checkpoint), "--max-memory", "lots"]) == 1
    assert "--max-memory" in capsys.readouterr().err


def test_ctrl_c_stops_the_server_cleanly(checkpoint):
    returncode, output = serve_then_signal(checkpoint, signal.SIGINT)
    assert returncode == 0, output
    assert "Traceback" not in output
    assert "Shutting down" in output or "Finished server process" in output


class TiledPredictor(SlowPredictor):
    """Reports two of three tiles done, then waits for ``release``."""

    def predict(self, image, on_tile=None):
        if on_tile is not None:
            on_tile(1, 3)
            on_tile(2, 3)
        return super().predict(image)


def test_progress_reports_the_tiles_done_while_a_request_runs_and_forgets_it_after(predictor):
    slow = TiledPredictor(predictor)
    data = png_bytes(sample_image())
    with TestClient(create_app(slow, workers=1)) as client:
        assert client.get("/api/progress/job-1").status_code == 404
        answers = []
        thread = threading.Thread(target=lambda: answers.append(client.post(
            "/api/predict?progress=job-1", content=data, headers={"content-type": "image/png"})))
        thread.start()
        wait_for(lambda: client.get("/api/progress/job-1").json().get("done") == 2)
        assert client.get("/api/progress/job-1").json() == {"stage": "segmenting", "done": 2, "total": 3}
        slow.release.set()
        thread.join(60)
        assert answers[0].status_code == 200
        missing = client.get("/api/progress/job-1")
        assert missing.status_code == 404 and "job-1" in missing.json()["error"]


def test_the_real_predictor_reports_every_tile_to_the_progress_callback(checkpoint):
    from fcnseg.serve.result import segment_upload

    loaded = load_model(checkpoint)
    tiled = Predictor(loaded.model, loaded.normalization, loaded.class_names, margin=32, tile=64)
    calls = []
    result = segment_upload(tiled, png_bytes(sample_image(150, 200)), "a.png", None, on_tile=lambda *c: calls.append(c))
    assert result.tiles == 12 and calls == [(k, 12) for k in range(1, 13)]
