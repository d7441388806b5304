"""Text files users give (class files, split lists, labelmaps, label lists, annotation JSON) are read as UTF-8 through
one reader: a file in another encoding is a DataError naming the file, the line and byte offset of the bad byte."""

import json

import pytest

from fcnseg.cli import main
from fcnseg.data import read_class_file, read_split_file
from fcnseg.annotations import import_dataset
from fcnseg.annotations.cvat import read_labelmap
from fcnseg.data.pascal_context import read_context_labels
from fcnseg.errors import DataError
from fcnseg.files import read_text

LATIN1 = "background\ncaf\u00e9\n".encode("latin-1")  # 0xe9 at byte offset 14, on line 2


def test_read_text_drops_a_utf8_byte_order_mark_and_names_the_bad_byte_of_other_encodings(tmp_path):
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfcat\ncaf\xc3\xa9\n")
    assert read_text(bom) == "cat\ncaf\u00e9\n"
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(LATIN1)
    with pytest.raises(DataError) as caught:
        read_text(bad, what="class file")
    message = str(caught.value)
    assert caught.value.path == str(bad)
    assert "class file is not UTF-8" in message and "0xe9" in message and "byte offset 14" in message
    assert "line 2" in message and "save the file as UTF-8" in message
    with pytest.raises(DataError, match="split file not found"):
        read_text(tmp_path / "absent.txt", what="split file")


@pytest.mark.parametrize(
    "reader, what",
    [
        (read_class_file, "class file"),
        (read_split_file, "split file"),
        (read_labelmap, "CVAT labelmap"),
        (read_context_labels, "label file"),
    ],
)
def test_every_text_reader_of_the_data_sets_turns_a_latin1_file_into_a_data_error(tmp_path, reader, what):
    path = tmp_path / "file.txt"
    content = LATIN1 if reader is not read_context_labels else "0: background\n1: caf\u00e9\n".encode("latin-1")
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"{what} is not UTF-8") as caught:
        reader(path)
    assert str(path) in str(caught.value)


def test_a_latin1_coco_json_and_class_file_are_one_line_errors_and_a_labelme_json_is_reported(tmp_path, capsys):
    coco = tmp_path / "coco.json"
    coco.write_bytes(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "X"}]})
                     .replace("X", "caf\u00e9").encode("latin-1"))
    assert main(["import", "coco", str(coco), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{coco}: COCO JSON is not UTF-8" in err
    assert not (tmp_path / "out").exists()

    src = tmp_path / "labelme"
    src.mkdir()
    (src / "a.json").write_bytes('{"shapes": [], "imagePath": "caf\u00e9.png"}'.encode("latin-1"))
    report = import_dataset("labelme", src, tmp_path / "out2")
    assert [(p.kind, p.path) for p in report.problems] == [("unreadable_annotation", str(src / "a.json"))]
    assert "labelme JSON is not UTF-8" in report.problems[0].message
