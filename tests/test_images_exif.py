"""One image reader: a phone photo with an EXIF orientation is upright in the scan, in training and in prediction."""

import numpy as np
from PIL import Image

from fcnseg.data import VOCDataset, voc_palette
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.images import image_size, read_image
from fcnseg.inference.predictor import normalize_tile

EXIF_ORIENTATION = 0x0112
ROTATED_90_CLOCKWISE = 6  # the camera was held upright: viewers turn the stored pixels by 90 degrees


def write_phone_photo(path, upright: np.ndarray) -> None:
    """Store ``upright`` as a camera does when held in portrait: pixels turned, an EXIF tag to undo it."""
    stored = np.rot90(upright, k=1)  # what the sensor wrote: counter-clockwise by 90 degrees
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATED_90_CLOCKWISE
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif)


def test_exif_orientation_is_applied_alike_by_the_scan_the_data_set_and_prediction(tmp_path):
    rng = np.random.default_rng(0)
    upright = rng.integers(0, 256, size=(20, 31, 3), dtype=np.uint8)  # portrait-free: 20 rows, 31 columns
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp_path / sub).mkdir(parents=True)
    write_phone_photo(tmp_path / "JPEGImages" / "phone.png", upright)
    mask = (upright[..., 0] > 127).astype(np.uint8)  # annotated on the upright picture, as tools show it
    m = Image.fromarray(mask, mode="P")
    m.putpalette(voc_palette().flatten().tolist())
    m.save(tmp_path / "SegmentationClass" / "phone.png")
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("phone\n")

    assert np.array_equal(read_image(tmp_path / "JPEGImages" / "phone.png"), upright)  # prediction's reader
    assert image_size(tmp_path / "JPEGImages" / "phone.png") == (20, 31)
    dataset = VOCDataset(tmp_path, "train", normalization=IMAGENET_RGB)
    assert dataset.report.ok, dataset.report.problems  # the mask fits the upright image, not the stored one
    raw = dataset.load_raw(0)
    assert np.array_equal(raw.image, upright) and np.array_equal(raw.mask, mask)
    image, _ = dataset[0]
    predicted_input = normalize_tile(upright, IMAGENET_RGB)[0]  # what the predictor feeds the net
    assert np.allclose(image.numpy(), predicted_input.numpy(), atol=1e-5)
