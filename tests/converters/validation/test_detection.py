"""The detection judge: decode, class-aware NMS, matching at IoU 0.5 (hand-computed cases)."""

import numpy as np
import pytest

from converters.validation.detection import (
    Detections,
    decode_packed,
    detect,
    iou_matrix,
    match,
    match_runs,
    nms,
    packed_layout,
)


def _packed(boxes_cxcywh, scores, layout="channels"):
    """[1, 4+C, N] (channels) or [1, N, 4+C] (anchors) from (N, 4) boxes and (N, C) scores."""
    a = np.concatenate([np.asarray(boxes_cxcywh, float), np.asarray(scores, float)], axis=1)
    return (a.T if layout == "channels" else a)[None]


BOXES = [[50, 50, 20, 20], [52, 50, 20, 20], [200, 100, 40, 60], [10, 10, 4, 4]]
SCORES = [[0.9, 0.1], [0.8, 0.0], [0.1, 0.7], [0.05, 0.1]]


@pytest.mark.parametrize("layout", ["channels", "anchors"])
def test_decode_packed_both_layouts(layout):
    out = _packed(BOXES, SCORES, layout)
    assert packed_layout(out.shape) == layout
    boxes, scores = decode_packed(out)
    assert boxes.shape == (4, 4) and scores.shape == (4, 2)
    np.testing.assert_allclose(boxes[0], [40, 40, 60, 60])
    np.testing.assert_allclose(scores[2], [0.1, 0.7])


def test_decode_packed_refuses_a_shape_without_room_for_a_class():
    with pytest.raises(ValueError):
        decode_packed(np.zeros((1, 4, 4)))


def test_iou_hand_computed():
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]]
    np.testing.assert_allclose(iou_matrix(a, b)[0], [50 / 150, 0, 1])


def test_nms_is_class_aware():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]], float)
    scores = np.array([0.9, 0.8, 0.7])
    # box 1 overlaps box 0 (same class) and is suppressed; box 2 is another class and stays
    assert nms(boxes, scores, np.array([0, 0, 1])).tolist() == [0, 2]
    assert nms(boxes, scores, np.array([0, 1, 2])).tolist() == [0, 1, 2]


def test_detect_threshold_activation_and_nms():
    boxes, scores = decode_packed(_packed(BOXES, SCORES))
    d = detect(boxes, scores, threshold=0.25)
    assert d.classes.tolist() == [0, 1] and d.scores.tolist() == [0.9, 0.7]
    logits = np.log(np.asarray(SCORES).clip(1e-6) / (1 - np.asarray(SCORES).clip(1e-6, 1 - 1e-6)))
    d2 = detect(boxes, logits, threshold=0.25, activation="sigmoid")
    assert d2.classes.tolist() == [0, 1]
    np.testing.assert_allclose(d2.scores, [0.9, 0.7])


def test_match_recall_precision_and_box_error():
    src = Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], float),
                     np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]))
    art = Detections(np.array([[1, 0, 11, 10], [20, 20, 30, 30], [80, 80, 90, 90]], float),
                     np.array([0.9, 0.8, 0.6]), np.array([0, 0, 0]))   # 2nd: wrong class
    m = match(src, art)
    assert [(i, j) for i, j, _ in m["matched"]] == [(0, 0)]
    assert m["recall"] == pytest.approx(1 / 3) and m["precision"] == pytest.approx(1 / 3)
    assert m["box_err"] == pytest.approx(0.5) and m["box_err_max"] == 1.0
    same = match(src, src)
    assert same["recall"] == same["precision"] == 1.0 and same["box_err"] == 0.0


def test_match_below_iou_is_no_match_and_empty_sides():
    src = Detections(np.array([[0, 0, 10, 10]], float), np.array([0.9]), np.array([0]))
    art = Detections(np.array([[6, 0, 16, 10]], float), np.array([0.9]), np.array([0]))
    assert match(src, art)["recall"] == 0.0                 # IoU 4/16 < 0.5
    assert match(src, art, iou=0.2)["recall"] == 1.0
    empty = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
    assert match(empty, empty)["recall"] == 1.0
    m = match(src, empty)
    assert m["recall"] == 0.0 and m["precision"] == 1.0
    pooled = match_runs([src, src], [src, empty])
    assert pooled["recall"] == 0.5 and pooled["sources"] == 2 and pooled["matched"][0][0] == 0
