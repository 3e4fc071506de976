"""A raw YOLOX head (packed [1, N, 5+C]: offsets, log sizes, objectness, classes over the
grids of strides 8/16/32) is recognised by its anchor count and values, decoded before
matching, and judged on its boxes: the same boxes pass, a shifted box or collapsed scores
fail, and an output whose anchor count is no grid count is not taken for one."""

import numpy as np
import pytest

from converters.validation import detection as det
from converters.validation import roles

# (input H, W, classes): square and not, one class (ddddocr's) and several
CASES = [(416, 416, 1), (320, 320, 3), (256, 384, 5), (640, 640, 2), (224, 288, 1)]


def raw_head(hw, n_classes, boxes, classes, seed, channels=False, logits=False):
    """A raw YOLOX head [1, N, 5+C] holding `boxes` (K, 4 pixels) of `classes` at anchors
    of the stride whose cell holds each box's centre, background elsewhere (small random
    offsets and log sizes, low scores)."""
    rng = np.random.RandomState(seed)
    cell, stride = det.yolox_grid(hw)
    n = len(cell)
    out = np.zeros((n, 5 + n_classes), np.float32)
    out[:, 0:2] = rng.uniform(-0.2, 1.2, (n, 2))
    out[:, 2:4] = rng.uniform(-1.0, 1.5, (n, 2))
    out[:, 4] = rng.uniform(0.0, 0.05, n)
    out[:, 5:] = rng.uniform(0.0, 0.3, (n, n_classes))
    anchors = []
    for b in boxes:
        size = max(b[2] - b[0], b[3] - b[1])
        s = 8 if size < 48 else 16 if size < 96 else 32
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        idx = np.nonzero((stride == s) & (cell[:, 0] == int(cx // s)) & (cell[:, 1] == int(cy // s)))[0]
        anchors.append(int(idx[0]))
    anchors = np.asarray(anchors)
    out[anchors, :4] = det.encode_yolox(boxes, anchors, hw)
    out[anchors, 4] = 0.95
    out[anchors, 5:] = 0.02
    out[anchors, 5 + np.asarray(classes)] = 0.9
    if logits:
        p = np.clip(out[:, 4:], 1e-6, 1 - 1e-6)
        out[:, 4:] = np.log(p / (1 - p))
    out = out[None]
    return out.transpose(0, 2, 1) if channels else out


def known_boxes(hw, n_classes, seed, k=6):
    """`k` boxes apart from each other (no two overlap), 12..120 pixels, in the image."""
    rng = np.random.RandomState(seed)
    h, w = hw
    boxes, classes = [], []
    while len(boxes) < k:
        bw, bh = rng.uniform(12, min(120, w / 3)), rng.uniform(12, min(120, h / 3))
        x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        b = [x, y, x + bw, y + bh]
        if all(det.iou_matrix([b], [o])[0, 0] == 0 for o in boxes):
            boxes.append(b)
            classes.append(int(rng.randint(n_classes)))
    return np.asarray(boxes), np.asarray(classes)


def samples(hw, n_classes, seed, **kw):
    heads, truth = [], []
    for s in range(3):
        b, c = known_boxes(hw, n_classes, seed * 10 + s)
        heads.append(raw_head(hw, n_classes, b, c, seed * 10 + s, **kw))
        truth.append((b, c))
    return np.stack(heads), truth


@pytest.mark.parametrize("hw,n_classes", [(c[:2], c[2]) for c in CASES])
def test_encoded_boxes_decode_back(hw, n_classes):
    ref, truth = samples(hw, n_classes, 1)
    for k, (b, c) in enumerate(truth):
        boxes, scores, act = det.decode_yolox(ref[k], hw)
        d = det.detect(boxes, scores, 0.25, 0.5, act)
        assert len(d.boxes) == len(b)
        m = det.match(det.Detections(b, np.ones(len(b)), c), d, iou=0.99)
        assert m["recall"] == 1.0 and m["precision"] == 1.0
        assert m["box_err_max"] < 1e-3


@pytest.mark.parametrize("channels", [False, True])
@pytest.mark.parametrize("logits", [False, True])
@pytest.mark.parametrize("hw,n_classes", [(c[:2], c[2]) for c in CASES])
def test_raw_head_recognised_and_judged(hw, n_classes, channels, logits):
    ref, truth = samples(hw, n_classes, 2, channels=channels, logits=logits)
    role = roles.infer_roles({"output": ref}, input_hw=hw)["output"]
    assert role.kind == "detection" and role.params["decode"] == "yolox", role
    n = det.grid_cells(hw)
    assert role.evidence.startswith(f"raw YOLOX head: {n} = grid cells of strides 8/16/32 at "
                                    f"{hw[0]}x{hw[1]}, decoded"), role.evidence
    assert role.params["activation"] == ("sigmoid" if logits else "none")
    v = roles.judge(role, ref, ref.copy(), None)
    assert not v.reasons, v.reasons
    assert v.metrics["source_detections"] == sum(len(b) for b, _ in truth)
    assert v.metrics["recall"] == 1.0 and v.metrics["precision"] == 1.0
    assert v.metrics["box_err"] < 1e-6
    # the judge's boxes are the known boxes, in input pixels
    got = np.asarray(v.metrics["matches"][0]["source_box"])
    assert np.min(np.abs(truth[0][0] - got).max(axis=1)) < 1e-2


def _perturb(ref, hw, channels, how):
    conv = ref.copy()
    a = conv[:, 0].transpose(0, 2, 1) if channels else conv[:, 0]   # a view: anchors x values
    if how == "shift":   # every sample's best anchor's box moved right by its own width
        for k in range(len(a)):
            i = int(np.argmax(a[k, :, 4]))
            a[k, i, 0] += np.exp(a[k, i, 2])   # the width in cells of its stride
    else:                # the scores collapsed: objectness and classes flat
        a[:, :, 4:] = float(np.median(a[:, :, 4:]))
    return conv


@pytest.mark.parametrize("how", ["shift", "collapse"])
@pytest.mark.parametrize("channels", [False, True])
@pytest.mark.parametrize("hw,n_classes", [(c[:2], c[2]) for c in CASES])
def test_perturbed_artefact_fails(hw, n_classes, channels, how):
    ref, _ = samples(hw, n_classes, 3, channels=channels)
    role = roles.infer_roles({"output": ref}, input_hw=hw)["output"]
    assert role.params["decode"] == "yolox"
    v = roles.judge(role, ref, _perturb(ref, hw, channels, how), None)
    assert v.reasons, v.headline
    if how == "shift":   # one box in six per sample lost: recall 5/6
        assert v.metrics["recall"] == pytest.approx(5 / 6)
    else:
        assert v.metrics["recall"] == 0.0


def test_shift_within_the_iou_still_passes():
    """A box moved a tenth of a cell is still the same box: no false FAILED."""
    hw = (416, 416)
    ref, _ = samples(hw, 1, 4)
    conv = ref.copy()
    conv[..., 0:2] += 0.1
    role = roles.infer_roles({"output": ref}, input_hw=hw)["output"]
    v = roles.judge(role, ref, conv, None)
    assert not v.reasons, v.reasons
    assert 0 < v.metrics["box_err"] < 3.3


@pytest.mark.parametrize("hw,n_classes", [(c[:2], c[2]) for c in CASES])
def test_not_a_grid_count_is_not_yolox(hw, n_classes):
    ref, _ = samples(hw, n_classes, 5)
    for cut in (ref[:, :, :-7], ref[:, :, 7:]):     # 7 anchors fewer (axis 2 of S, 1, N, 5+C): no grid count
        assert det.yolox_input_hw(cut.shape[2], hw) is None
        assert det.yolox_input_hw(cut.shape[2]) is None
        for given in (hw, None):
            role = roles.infer_roles({"output": cut}, input_hw=given)["output"]
            assert not (role.params or {}).get("decode"), role


def test_other_input_size_is_not_yolox():
    """The anchor count of 416x416 grids on a model whose input is 320x320: not YOLOX."""
    ref, _ = samples((416, 416), 1, 6)
    role = roles.infer_roles({"output": ref}, input_hw=(320, 320))["output"]
    assert not (role.params or {}).get("decode"), role


def test_decoded_boxes_are_not_taken_for_raw():
    """A YOLOv8-style packed head at a grid count (boxes in pixels, or in 0..1 following the
    anchors across the image) keeps the packed path."""
    hw = (320, 320)
    cell, stride = det.yolox_grid(hw)
    n = len(cell)
    rng = np.random.RandomState(7)
    for scale in (1.0, 1.0 / 320):
        head = np.zeros((1, 4 + 3, n), np.float32)
        head[0, 0] = (cell[:, 0] + 0.5) * stride * scale
        head[0, 1] = (cell[:, 1] + 0.5) * stride * scale
        head[0, 2:4] = stride * rng.uniform(1, 3, (2, n)) * scale
        head[0, 4:] = rng.uniform(0, 1, (3, n)) ** 4
        ref = np.stack([head, head])
        role = roles.infer_roles({"output0": ref}, input_hw=hw)["output0"]
        assert role.kind == "detection" and "decode" not in (role.params or {}), role


def test_output_role_overrides():
    hw = (416, 416)
    ref, _ = samples(hw, 1, 8)
    for given in ("raw", "sequence", "detection"):
        role = roles.infer_roles({"output": ref}, overrides={"output": given}, input_hw=hw)["output"]
        assert role.kind == given and role.evidence == "--output-role"
