"""`fcnseg serve`'s page in a real browser (headless Chromium): upload, overlay, legend against `fcnseg predict`, slider, hover, downloads.

Drives the system's Chromium (Debian's ``chromium`` package; ``.ci/run`` installs it) with the
``playwright`` package; never downloads a browser. Where no browser is found the tests are skipped
with a warning that says so.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="fcnseg serve needs the serve extra: pip install 'fcnseg[serve]'")

from fcnseg.cli import main as fcnseg_main  # noqa: E402
from fcnseg.data.palette import colorize, read_mask_png, voc_palette  # noqa: E402
from fcnseg.inference.predictor import Predictor  # noqa: E402
from fcnseg.serve.app import create_app  # noqa: E402
from serve_support import CLASS_NAMES, live_server, sample_image, save_small_checkpoint  # noqa: E402

BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MAX_UPLOAD = 1024**2  # small limits, so that the page's refusals can be tried with small files
MAX_PIXELS = 100_000


def find_browser() -> str | None:
    """The Chromium to drive: $FCNSEG_CHROMIUM, else the first of BROWSER_NAMES on PATH, else None."""
    given = os.environ.get("FCNSEG_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    return next((path for path in map(shutil.which, BROWSER_NAMES) if path), None)


def skip_loudly(reason: str):
    warnings.warn(f"BROWSER TEST NOT RUN: {reason}", UserWarning, stacklevel=2)
    pytest.skip(f"BROWSER TEST NOT RUN: {reason}")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_loudly("the playwright package is missing (pip install -e '.[dev]')")
    executable = find_browser()
    if executable is None:
        skip_loudly("no Chromium found (apt-get install chromium, or set FCNSEG_CHROMIUM to its path)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_small_checkpoint(tmp_path_factory.mktemp("serve") / "small.pt")


@pytest.fixture(scope="module")
def server(checkpoint):
    predictor = Predictor.from_checkpoint(checkpoint)
    app = create_app(predictor, model_name=checkpoint.name, max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS)
    with live_server(app) as url:
        yield url


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    page.wait_for_selector('body[data-state="idle"]', timeout=15_000)
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def predict_with_the_command(checkpoint: Path, images: list[Path], out: Path) -> dict:
    """Per-image class areas as `fcnseg predict --stats` writes them (areas.json)."""
    assert fcnseg_main(["predict", str(checkpoint), *map(str, images), "-o", str(out), "--stats", "--workers", "0", "--no-progress"]) == 0
    return json.loads((out / "areas.json").read_text())["images"]


def canvas_pixels(page) -> np.ndarray:
    """The view canvas's RGB pixels, uint8 [H, W, 3]."""
    data = page.evaluate(
        """() => { const c = document.getElementById('view');
                   return {w: c.width, h: c.height, d: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)}; }"""
    )
    return np.array(data["d"], dtype=np.uint8).reshape(data["h"], data["w"], 4)[..., :3]


def legend(page) -> dict[str, dict]:
    rows = page.eval_on_selector_all(
        "#legend tbody tr",
        "rows => rows.map(r => ({name: r.dataset.class, pixels: r.dataset.pixels, fraction: r.dataset.fraction, "
        "area: r.querySelector('.area').textContent}))",
    )
    return {r["name"]: r for r in rows}


def assert_overlay(shown: np.ndarray, image: np.ndarray, labels: np.ndarray, alpha: float) -> None:
    """Class colours blended at ``alpha`` over the image, background left unblended (as fcnseg.data.palette.overlay)."""
    colours = colorize(labels).astype(np.float64)
    expected = np.where((labels > 0)[..., None], (1 - alpha) * image + alpha * colours, image)
    assert np.abs(shown.astype(np.float64) - expected).max() <= 1.5  # canvas compositing rounds to 8 bits


def test_page_segments_uploads_and_its_legend_equals_fcnseg_predict(page, checkpoint, tmp_path):
    names = ["street.png", "field.png"]
    paths = []
    for name, seed in zip(names, (1, 5)):
        paths.append(tmp_path / name)
        Image.fromarray(sample_image(48, 64, seed=seed)).save(paths[-1])
    expected = predict_with_the_command(checkpoint, paths, tmp_path / "predicted")

    info = page.inner_text("#model-info")
    assert "small.pt" in info and "fcn8s" in info and "classes 6" in info and "precision" in info and "PyTorch" in info

    page.set_input_files("#file-input", [str(p) for p in paths])  # several files at once
    page.wait_for_function("() => [...document.querySelectorAll('#results li .status')].filter(s => s.textContent.endsWith(' ms')).length === 2",
                           timeout=60_000)
    assert page.locator("#messages .message").count() == 0

    for index, (name, path) in enumerate(zip(names, paths)):
        page.click(f"#results li:nth-child({index + 1})")
        page.wait_for_function(f"() => document.getElementById('timing').textContent.startsWith({json.dumps(name)})")
        shown = legend(page)
        assert list(shown) == CLASS_NAMES
        for cls in CLASS_NAMES:
            pixels, fraction = expected[name]["pixels"][cls], expected[name]["fraction"][cls]
            assert int(shown[cls]["pixels"]) == pixels
            assert float(shown[cls]["fraction"]) == pytest.approx(fraction, abs=1e-12)
            assert shown[cls]["area"].endswith("%")
            assert abs(float(shown[cls]["area"][:-1]) - 100 * fraction) <= 0.005 + 1e-9  # shown to 2 decimals
        timing = page.inner_text("#timing")
        assert "64×48 px" in timing and " ms " in timing and "precision" in timing

    labels = read_mask_png(tmp_path / "predicted" / "field_labels.png").astype(np.uint8)
    assert len(np.unique(labels)) >= 3

    # labels view: exactly the palette colours of the label map predict wrote
    page.check('input[name="view"][value="labels"]')
    np.testing.assert_array_equal(canvas_pixels(page), colorize(labels))
    # image view, then the overlay at the default opacity and after moving the slider
    page.check('input[name="view"][value="image"]')
    image = canvas_pixels(page)
    page.check('input[name="view"][value="overlay"]')
    assert_overlay(canvas_pixels(page), image, labels, 0.5)
    page.fill("#opacity", "0.8")
    assert page.inner_text("#opacity-value") == "80%"
    assert_overlay(canvas_pixels(page), image, labels, 0.8)

    # hover: the class under the cursor, on a pixel of some foreground class
    ys, xs = np.nonzero(labels > 0)
    y, x = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
    box = page.locator("#view").bounding_box()
    page.mouse.move(box["x"] + (x + 0.5) * box["width"] / 64, box["y"] + (y + 0.5) * box["height"] / 48)
    assert page.get_attribute("#hover", "data-class") == CLASS_NAMES[labels[y, x]]
    assert page.inner_text("#hover") == f"({x}, {y}): {CLASS_NAMES[labels[y, x]]}"
    assert page.get_attribute("#legend tr.hovered", "data-class") == CLASS_NAMES[labels[y, x]]

    # downloads: the label PNG is predict's label map; the overlay is the picture on show
    with page.expect_download() as download:
        page.click("#download-labels")
    assert download.value.suggested_filename == "field_labels.png"  # not the upload's own name
    download.value.save_as(tmp_path / "downloaded.png")
    np.testing.assert_array_equal(read_mask_png(tmp_path / "downloaded.png"), labels)
    with page.expect_download() as download:
        page.click("#download-overlay")
    assert download.value.suggested_filename == "field_overlay.png"
    download.value.save_as(tmp_path / "overlay.png")
    with Image.open(tmp_path / "overlay.png") as overlay_png:
        assert_overlay(np.asarray(overlay_png.convert("RGB")), image, labels, 0.8)

    shot = tmp_path / "serve.png"
    page.mouse.move(box["x"] + (x + 0.5) * box["width"] / 64, box["y"] + (y + 0.5) * box["height"] / 48)
    page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as png:
        assert png.format == "PNG" and png.size[0] >= 1000
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # not a blank page


def test_page_states_why_a_file_was_refused(page, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    Image.fromarray(sample_image(400, 400)).save(tmp_path / "huge.png")  # 160,000 pixels > MAX_PIXELS
    (tmp_path / "heavy.png").write_bytes(b"\x89PNG" + bytes(MAX_UPLOAD + 1))
    page.set_input_files("#file-input", [str(tmp_path / n) for n in ("broken.jpg", "huge.png", "heavy.png")])
    page.wait_for_function("() => document.querySelectorAll('#messages .message').length === 3", timeout=60_000)
    messages = page.locator("#messages .message").all_inner_texts()
    assert messages[0].startswith("broken.jpg: cannot read the image") and messages[0].count("broken.jpg") == 1
    assert "HTTP 422" in messages[0]
    assert "huge.png" in messages[1] and "400x400" in messages[1] and "--max-pixels" in messages[1] and "HTTP 413" in messages[1]
    assert "heavy.png" in messages[2] and "1.0 MiB" in messages[2] and "--max-upload-mb" in messages[2]
    assert page.locator("#results li.failed").count() == 3
    # the server lives on: a good image still goes through
    Image.fromarray(sample_image()).save(tmp_path / "fine.png")
    page.set_input_files("#file-input", str(tmp_path / "fine.png"))
    page.wait_for_selector('body[data-state="ready"]', timeout=60_000)
    assert page.locator("#legend tbody tr[data-pixels]").count() == len(CLASS_NAMES)


def test_the_page_uses_the_model_palette(page):
    colours = page.eval_on_selector_all("#legend tbody tr .swatch", "s => s.map(e => getComputedStyle(e).backgroundColor)")
    assert colours == [f"rgb({r}, {g}, {b})" for r, g, b in voc_palette(len(CLASS_NAMES)).tolist()]


def drawn_width(page) -> float:
    return page.locator("#view").bounding_box()["width"]


def test_controls_wait_for_a_result_errors_can_be_dismissed_and_a_tiny_image_is_drawn_readably(page, tmp_path):
    # before any upload: no toolbar, no downloads (the overlay link would download the page itself), no empty stage
    for selector in ("#toolbar", "#download-labels", "#download-overlay", "#stage", "#zoom-in"):
        assert not page.locator(selector).is_visible(), selector

    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    page.set_input_files("#file-input", str(tmp_path / "broken.jpg"))
    page.wait_for_selector("#messages .message", timeout=60_000)
    assert not page.locator("#toolbar").is_visible()  # a failure shows no controls either
    page.click("#messages .message button.close")
    assert page.locator("#messages .message").count() == 0

    Image.fromarray(sample_image(10, 10, seed=2)).save(tmp_path / "tiny.png")
    page.set_input_files("#file-input", str(tmp_path / "tiny.png"))
    page.wait_for_selector('body[data-state="ready"]', timeout=60_000)
    assert page.locator("#toolbar").is_visible() and page.locator("#download-overlay").is_visible()
    assert drawn_width(page) >= 200  # 10 px drawn at a size a person can read
    assert page.eval_on_selector("#view", "c => getComputedStyle(c).imageRendering") == "pixelated"
    assert page.eval_on_selector("#view", "c => [c.width, c.height]") == [10, 10]  # the canvas holds the image's pixels


def test_the_picture_zooms_and_pans_and_uploads_show_their_progress(page, tmp_path):
    page.evaluate("""() => {
        window.statuses = [];
        new MutationObserver(() => document.querySelectorAll('#results li .status')
            .forEach(s => window.statuses.push(s.textContent)))
          .observe(document.getElementById('results'), {subtree: true, childList: true, characterData: true});
    }""")
    Image.fromarray(sample_image(48, 64, seed=4)).save(tmp_path / "street.png")
    page.set_input_files("#file-input", str(tmp_path / "street.png"))
    page.wait_for_selector('body[data-state="ready"]', timeout=60_000)
    statuses = page.evaluate("window.statuses")
    assert any(s.startswith("uploading ") and " of " in s for s in statuses), statuses
    assert any(s.startswith("segmenting… ") and s.endswith(" s") for s in statuses), statuses
    assert statuses[-1].endswith(" ms") and not page.locator("#progress").is_visible()

    fitted = drawn_width(page)
    page.click("#zoom-in")
    assert drawn_width(page) == pytest.approx(1.25 * fitted, abs=1.5)
    page.click("#zoom-actual")
    assert drawn_width(page) == pytest.approx(64, abs=0.5) and page.inner_text("#zoom-value") == "100%"
    page.click("#zoom-fit")
    assert drawn_width(page) == pytest.approx(fitted, abs=0.5)
    box = page.locator("#view").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(8):  # the wheel zooms in past the stage
        page.mouse.wheel(0, -100)
        page.wait_for_timeout(30)
    assert drawn_width(page) > 4 * fitted
    stage = page.locator("#stage").bounding_box()
    assert drawn_width(page) > stage["width"]  # now larger than its frame: it scrolls, and dragging pans
    before = page.eval_on_selector("#stage", "s => [s.scrollLeft, s.scrollTop]")
    cx, cy = stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 60, steps=4)
    page.mouse.up()
    after = page.eval_on_selector("#stage", "s => [s.scrollLeft, s.scrollTop]")
    assert after[0] < before[0] or after[1] < before[1], (before, after)  # dragged right/down: the view moved left/up
