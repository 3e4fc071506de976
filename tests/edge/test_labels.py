import pytest

from edge.errors import InputError
from edge.labels import check_labels, read_labels


def test_plain_lines(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("background\ntench, Tinca tinca\n3d printer\n\n")
    assert read_labels(p) == {0: "background", 1: "tench, Tinca tinca", 2: "3d printer"}


@pytest.mark.parametrize("text", ["0 cat\n1 dog\n5 bird\n", "0: cat\n1: dog\n5:bird\n", "0  cat\n1\tdog\n5 bird"])
def test_id_label_forms(tmp_path, text):
    p = tmp_path / "l.txt"
    p.write_text(text)
    assert read_labels(p) == {0: "cat", 1: "dog", 5: "bird"}


def test_coral_labels(coral):
    labels = read_labels(coral / "imagenet_labels.txt")
    assert len(labels) == 1001 and labels[0] == "background"


def test_bundled_labels():
    from tests.conftest import REPO

    labels = read_labels(REPO / "labels" / "imagenet_labels.txt")
    assert len(labels) == 1000 and labels[0].startswith("tench")


def test_bad_label_files(tmp_path):
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(InputError, match="not UTF-8"):
        read_labels(tmp_path / "bin")
    with pytest.raises(InputError, match="is a folder"):
        read_labels(tmp_path)
    with pytest.raises(InputError, match="cannot read"):
        read_labels(tmp_path / "missing")


def test_check_labels():
    labels = {i: str(i) for i in range(1000)}
    assert check_labels(labels, 1000) is None
    assert "background" in check_labels(labels, 1001)
    assert "3 labels" in check_labels({0: "a", 1: "b", 2: "c"}, 10)
