"""Generic image/mask folder and its class file: grey, palette and RGB masks matched by stem."""

import numpy as np
import pytest
from PIL import Image

from fcnseg.data import FolderDataset, build_dataset, read_class_file, write_class_file
from fcnseg.data.classes import ClassInfo
from fcnseg.errors import DataError

COLOURS = [(0, 0, 0), (250, 10, 10), (10, 250, 10)]


def write_folder(root, names, mode="L", seed=0, classes_text=None):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    (root / "classes.txt").write_text(classes_text or "# comment\nbackground 0 0 0\nred thing 250 10 10\n\ngreen 10 250 10\n")
    arrays = {}
    for name in names:
        h, w = int(rng.integers(8, 20)), int(rng.integers(8, 20))
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        mask = rng.integers(0, 3, size=(h, w)).astype(np.uint8)
        mask[-1, -1] = 255
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        if mode == "RGB":
            rgb = np.array(COLOURS + [(0, 0, 0)] * 252 + [(224, 224, 192)], dtype=np.uint8)[mask]
            Image.fromarray(rgb).save(root / "masks" / f"{name}.png")
        elif mode == "P":
            m = Image.fromarray(mask, mode="P")
            m.putpalette(np.array(COLOURS * 86, dtype=np.uint8)[:256].flatten().tolist())
            m.save(root / "masks" / f"{name}.png")
        else:
            Image.fromarray(mask, mode="L").save(root / "masks" / f"{name}.png")
        arrays[name] = (image, mask)
    return arrays


@pytest.mark.parametrize("mode", ["L", "P", "RGB"])
def test_folder_pairs_images_and_masks_by_stem_for_grey_palette_and_rgb_masks(tmp_path, mode):
    arrays = write_folder(tmp_path, ["b", "a", "c"], mode)
    ds = build_dataset("auto", tmp_path, "all")
    assert isinstance(ds, FolderDataset)
    assert [ds.name(i) for i in range(3)] == ["a", "b", "c"]
    assert ds.class_names == ["background", "red thing", "green"]
    for i, name in enumerate(["a", "b", "c"]):
        raw = ds.load_raw(i)
        np.testing.assert_array_equal(raw.image, arrays[name][0])
        np.testing.assert_array_equal(raw.mask, arrays[name][1])


def test_class_file_colours_become_the_palette(tmp_path):
    write_folder(tmp_path, ["a"])
    ds = FolderDataset(tmp_path)
    assert [tuple(c) for c in ds.palette[:3]] == COLOURS
    assert tuple(ds.palette[255]) == (224, 224, 192)


def test_folder_split_from_a_list_file_or_a_subfolder(tmp_path):
    write_folder(tmp_path, ["a", "b", "c"])
    (tmp_path / "val.txt").write_text("c\na\n")
    assert [FolderDataset(tmp_path, "val").name(i) for i in range(2)] == ["c", "a"]
    write_folder(tmp_path / "train", ["t1", "t2"])
    assert len(FolderDataset(tmp_path, "train")) == 2


def test_class_file_round_trips_names_with_spaces_and_colours(tmp_path):
    info = ClassInfo(("background", "potted plant", "cat"), ((0, 0, 0), (1, 2, 3), (250, 251, 252)))
    write_class_file(tmp_path / "c.txt", info)
    assert read_class_file(tmp_path / "c.txt") == info
    (tmp_path / "plain.txt").write_text("background\ncat\n")
    assert read_class_file(tmp_path / "plain.txt") == ClassInfo(("background", "cat"), None)


@pytest.mark.parametrize(
    "line, name, colour",
    [
        ("digit 0", "digit 0", None),
        ("traffic light", "traffic light", None),
        ("type 2 diabetes", "type 2 diabetes", None),
        ("cat 1 2", "cat 1 2", None),  # two numbers are not a colour
        ("traffic light 250 170 30", "traffic light", (250, 170, 30)),
        ("digit 0 1 2 3", "digit 0", (1, 2, 3)),
        ("7 0 0 0", "7", (0, 0, 0)),
        ("grey 0 0 300", "grey 0 0 300", None),  # 300 is no colour value, so the line is a name
        ("minus -1 0 0", "minus -1 0 0", None),
        ("  potted   plant  ", "potted plant", None),
        ("wide \uff11 2 3", "wide \uff11 2 3", None),  # a full-width digit is no colour value
    ],
)
def test_a_class_line_is_a_name_unless_its_last_three_tokens_are_a_colour(tmp_path, line, name, colour):
    (tmp_path / "classes.txt").write_text(line + "\n")
    info = read_class_file(tmp_path / "classes.txt")
    assert info.names == (name,)
    assert info.colours == (None if colour is None else (colour,))


@pytest.mark.parametrize(
    "names, colours",
    [
        (("background", "digit 0", "digit 1", "type 2 diabetes", "traffic light"), None),
        (("background", "digit 0", "type 2 diabetes", "7"), ((0, 0, 0), (1, 2, 3), (4, 5, 6), (255, 255, 255))),
        (("background", "traffic light 250 170 30"), ((0, 0, 0), (250, 170, 30))),
    ],
)
def test_class_file_round_trips_names_with_digits(tmp_path, names, colours):
    info = ClassInfo(names, colours)
    write_class_file(tmp_path / "c.txt", info)
    assert read_class_file(tmp_path / "c.txt") == info


@pytest.mark.parametrize(
    "name, problem",
    [
        ("speed 30 50 70", "reads back as a name and a colour"),
        ("", "empty"),
        ("two\nlines", "line break"),
        ("# heading", "starts with '#'"),
        ("double  space", "reads back as 'double space'"),
    ],
)
def test_write_class_file_refuses_a_name_it_could_not_read_back(tmp_path, name, problem):
    with pytest.raises(DataError, match=problem) as info:
        write_class_file(tmp_path / "c.txt", ClassInfo(("background", name)))
    assert "c.txt" in str(info.value) and not (tmp_path / "c.txt").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("background 0 0 0\ncat\n", r"1 of 2 classes have a colour; expected all or none \(line 2 'cat' has none;"),
        ("background 0 0 0\ngrey 0 0 300\n", r"line 2 'grey 0 0 300' has none"),
        ("background\ncat 1 2 3\n", r"line 1 'background' has none"),
        ("background\nbackground\n", "listed twice"),
        ("# nothing\n", "lists no classes"),
    ],
)
def test_malformed_class_file_names_the_file_and_the_problem(tmp_path, text, message):
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_class_file(tmp_path / "classes.txt")
    assert "classes.txt" in str(info.value)


def test_rgb_mask_with_a_colour_not_in_the_class_file_is_reported(tmp_path):
    write_folder(tmp_path, ["a", "b"], "RGB")
    Image.fromarray(np.full((8, 8, 3), 77, np.uint8)).save(tmp_path / "masks" / "b.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "b.png")
    ds = FolderDataset(tmp_path)
    assert len(ds) == 1
    (problem,) = ds.report.problems
    assert problem.path == "masks/b.png" and "(77, 77, 77)" in problem.message
