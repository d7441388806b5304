"""Class lists compared by name: identical fits, anything else stops with both lists and the remedies,
a class map reads one list in the other's terms, --ignore-class-names and generic names match by index."""

import logging

import numpy as np
import pytest
import torch

from fcnseg.data.class_match import is_generic, match_classes, read_class_map
from fcnseg.errors import ConfigError, DataError

MODEL = ["background", "cat", "dog", "bird"]


def match(model, data, **kwargs):
    return match_classes(model, data, model_source="model.pt", data_source="classes.txt", **kwargs)


def test_identical_lists_fit_without_remapping_or_warning(caplog):
    with caplog.at_level(logging.WARNING):
        mapping = match(MODEL, [" background", "cat ", "dog", "bird"])  # whitespace around names is stripped
    assert mapping.identity and not mapping.ignored_names and not caplog.records
    mask = np.array([[0, 3], [255, 1]])
    assert mapping.remap_mask(mask) is mask


def test_another_order_is_an_error_showing_both_lists_side_by_side_and_the_remedies():
    with pytest.raises(ConfigError) as caught:
        match(MODEL, ["background", "dog", "cat", "bird"])
    message = str(caught.value)
    assert "model.pt and classes.txt have the same 4 class names in another order" in message
    lines = message.splitlines()
    assert lines[1].split() == ["index", "model", "data"]
    assert lines[2].split() == ["0", "background", "background"]
    assert lines[3].split() == ["1", "cat", "dog", "<-", "differs"]
    assert lines[4].split() == ["2", "dog", "cat", "<-", "differs"]
    assert lines[5].split() == ["3", "bird", "bird"]
    assert "--class-map FILE" in message and "--ignore-class-names" in message


def test_other_names_and_other_counts_are_the_same_error():
    with pytest.raises(ConfigError, match=r"only the model's: bird; only the data's: Bird") as caught:
        match(MODEL, ["background", "cat", "dog", "Bird"])  # names are compared case-sensitively
    assert "<- differs" in str(caught.value) and "--class-map" in str(caught.value)
    with pytest.raises(ConfigError, match=r"model.pt has 4 classes but classes.txt has 5") as caught:
        match(MODEL, [*MODEL, "fish"])
    assert caught.value.args[0].splitlines()[-2].split() == ["4", "-", "fish", "<-", "differs"]


def test_a_name_listed_twice_is_an_error():
    with pytest.raises(ConfigError, match=r"classes.txt lists the class 'cat' more than once"):
        match(MODEL, ["background", "cat", "cat", "bird"])


def test_ignore_class_names_matches_by_index_and_warns(caplog):
    with caplog.at_level(logging.WARNING):
        mapping = match(MODEL, ["background", "dog", "cat", "bird"], ignore_names=True)
    assert mapping.identity and mapping.ignored_names
    assert "--ignore-class-names" in caplog.text and "<- differs" in caplog.text
    with pytest.raises(ConfigError, match=r"compares the counts only, and they differ"):
        match(MODEL, MODEL[:3], ignore_names=True)


def test_generic_names_match_any_list_of_their_count_with_one_warning(caplog):
    generic = [f"class_{i}" for i in range(4)]
    assert is_generic(generic) and is_generic(["class 0", "class 1"]) and not is_generic(["class_1", "class_0"])
    with caplog.at_level(logging.WARNING):
        mapping = match(generic, MODEL)
    assert mapping.identity
    assert len(caplog.records) == 1 and "model.pt has no class names" in caplog.text
    with pytest.raises(ConfigError, match=r"has 4 classes but classes.txt has 3"):
        match(generic, MODEL[:3])


def test_a_class_map_reorders_renames_and_ignores_and_remaps_masks_like_a_pixel_loop():
    data = ["bg", "dog", "cat", "fish", "bird"]
    mapping = match(MODEL, data, class_map={"bg": "background", "fish": None})
    assert mapping.data_to_model == (0, 2, 1, None, 3)
    assert mapping.unmapped_data_names() == ["fish"]
    assert "bg -> background" in mapping.describe() and "scored as ignore: fish" in mapping.describe()
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 5, size=(7, 9))
    mask[0, 0] = 255
    expected = np.empty_like(mask)
    for (y, x), value in np.ndenumerate(mask):  # the independent per-pixel reading
        name = data[value] if value != 255 else None
        target = {"bg": "background", "fish": None}.get(name, name)
        expected[y, x] = MODEL.index(target) if target is not None else 255
    assert np.array_equal(mapping.remap_mask(mask), expected)
    assert torch.equal(mapping.remap_mask(torch.from_numpy(mask)), torch.from_numpy(expected))


def test_a_data_class_absent_from_the_model_is_ignored_but_a_map_naming_unknown_classes_is_an_error():
    mapping = match(MODEL, ["background", "cat", "horse"], class_map={})
    assert mapping.data_to_model == (0, 1, None)
    with pytest.raises(ConfigError, match=r"names the data class 'cow', which classes.txt does not have"):
        match(MODEL, MODEL, class_map={"cow": "cat"})
    with pytest.raises(ConfigError, match=r"maps to 'kitten', which model.pt does not have"):
        match(MODEL, MODEL, class_map={"cat": "kitten"})


def test_read_class_map_reads_arrows_comments_and_empty_targets(tmp_path):
    path = tmp_path / "classes.map"
    path.write_text("# data -> model\n\naeroplane  ->  air plane\nbridge ->\n")
    assert read_class_map(path) == {"aeroplane": "air plane", "bridge": None}


@pytest.mark.parametrize("text, expected", [
    ("cat -> cat\ndog dog\n", r"classes.map: line 2 'dog dog': expected 'data name -> model name'"),
    ("-> cat\n", r"line 1 '-> cat': expected"),
    ("cat -> a\ncat -> b\n", r"line 2: the data class 'cat' is mapped twice"),
    ("# nothing\n", r"maps no class"),
])
def test_read_class_map_errors_name_the_file_and_line(tmp_path, text, expected):
    path = tmp_path / "classes.map"
    path.write_text(text)
    with pytest.raises(DataError, match=expected):
        read_class_map(path)
