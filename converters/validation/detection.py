"""A detector's outputs judged as detections: decode, activation, threshold, class-aware NMS,
and the source's detections matched by the artefact's at an IoU threshold.

Pure numpy, one image at a time:

    boxes, scores = decode_packed(out)              # [1,4+C,N] or [1,N,4+C] (YOLOv8-style)
    boxes, scores, act = decode_yolox(out, (416, 416))   # a raw YOLOX head [1,N,5+C]
    det = detect(boxes, scores, threshold=0.25)     # -> Detections(boxes, scores, classes)
    m = match(detect(...source...), detect(...artefact...), iou=0.5)
    m["recall"], m["precision"], m["matched"], m["box_err"]

Boxes are (x1, y1, x2, y2) in the output's own units (pixels for YOLO heads, 0..1 for
normalized ones): box errors are reported in those units.
"""

from collections import namedtuple

import numpy as np

Detections = namedtuple("Detections", ["boxes", "scores", "classes"])
Detections.__doc__ = "boxes (K, 4) x1 y1 x2 y2, scores (K,), classes (K,) int, best first."

BOX_FORMATS = ("cxcywh", "xyxy", "yxyx", "xywh")


def packed_layout(shape, num_coords=4):
    """'channels' for [4+C, N] (rows are coords then classes), 'anchors' for [N, 4+C];
    the batch axis of one may be there or not. The shorter axis is the coords+classes one
    (a detector has more anchors than classes); ValueError when neither axis can be."""
    dims = [int(d) for d in shape]
    if len(dims) == 3 and dims[0] == 1:
        dims = dims[1:]
    if len(dims) != 2:
        raise ValueError(f"a packed detection output is [1, {num_coords}+C, N] or "
                         f"[1, N, {num_coords}+C], not {list(shape)}")
    rows, cols = dims
    fits_rows, fits_cols = rows > num_coords, cols > num_coords
    if fits_rows and (rows < cols or not fits_cols):
        return "channels"
    if fits_cols:
        return "anchors"
    raise ValueError(f"no axis of {list(shape)} holds {num_coords} coordinates and a class")


def split_packed(out, num_coords=4, layout=None):
    """The packed output's parts as they are: (coords (N, num_coords), scores (N, C))."""
    a = np.asarray(out)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    layout = layout or packed_layout(a.shape, num_coords)
    if layout == "channels":
        a = a.T
    return a[:, :num_coords], a[:, num_coords:]


def to_xyxy(coords, box_format="cxcywh"):
    """(N, 4) in `box_format` -> (N, 4) x1 y1 x2 y2, float64."""
    c = np.asarray(coords, dtype=np.float64).reshape(-1, 4)
    if box_format == "xyxy":
        return c.copy()
    if box_format == "yxyx":
        return c[:, [1, 0, 3, 2]].copy()
    if box_format == "cxcywh":
        half = c[:, 2:4] / 2
        return np.concatenate([c[:, 0:2] - half, c[:, 0:2] + half], axis=1)
    if box_format == "xywh":
        return np.concatenate([c[:, 0:2], c[:, 0:2] + c[:, 2:4]], axis=1)
    raise ValueError(f"unknown box format '{box_format}', choose one of {', '.join(BOX_FORMATS)}")


def decode_packed(out, num_coords=4, box_format="cxcywh", layout=None):
    """A packed detection output -> (boxes (N, 4) x1 y1 x2 y2, class scores (N, C)).

    `out`: [1, 4+C, N] or [1, N, 4+C] (or without the batch axis of one); the first
    `num_coords` values per anchor are the box (`box_format`, YOLOv8: cx cy w h), the rest
    the class scores, returned as they are (see `activate`)."""
    coords, scores = split_packed(out, num_coords, layout)
    return to_xyxy(coords[:, :4], box_format), np.asarray(scores, dtype=np.float64)


YOLOX_STRIDES = (8, 16, 32)


def grid_cells(hw, strides=YOLOX_STRIDES):
    """The anchor count of a head with one anchor per cell of each stride's grid at input
    size `hw` (H, W): 416x416 -> 52^2 + 26^2 + 13^2 = 3549."""
    return sum((int(hw[0]) // s) * (int(hw[1]) // s) for s in strides)


def yolox_input_hw(n, input_hw=None, strides=YOLOX_STRIDES):
    """The input size (H, W) whose grids of `strides` hold `n` cells: `input_hw` (the
    model's own input size) when it does, else the square size that does (multiples of the
    largest stride up to 4096); None when none does."""
    top = max(strides)
    if input_hw:
        h, w = (int(d) for d in input_hw)
        ok = h > 0 and w > 0 and h % top == 0 and w % top == 0 and grid_cells((h, w), strides) == n
        return (h, w) if ok else None
    for side in range(top, 4097, top):
        if grid_cells((side, side), strides) == n:
            return (side, side)
    return None


def yolox_grid(hw, strides=YOLOX_STRIDES):
    """Each anchor's cell (x, y) (N, 2) and stride (N,), in YOLOX's order: stride 8's grid
    row by row, then 16's, then 32's."""
    cells, steps = [], []
    for s in strides:
        gh, gw = int(hw[0]) // s, int(hw[1]) // s
        yv, xv = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        cells.append(np.stack([xv.ravel(), yv.ravel()], axis=1))
        steps.append(np.full(gh * gw, s))
    return np.concatenate(cells).astype(np.float64), np.concatenate(steps).astype(np.float64)


def looks_like_raw_yolox(coords, hw, strides=YOLOX_STRIDES):
    """True when (N, 4) box values are YOLOX's raw ones (offsets in cells, log sizes): small
    (99% within 16 where boxes in pixels reach past it) and x not following the anchor's
    position across the image (decoded boxes, in pixels or 0..1, do)."""
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] < 4 or not np.all(np.isfinite(c)):
        return False
    if float(np.percentile(np.abs(c[:, :4]), 99)) > 16:
        return False
    cell, stride = yolox_grid(hw, strides)
    if len(cell) != len(c):
        return False
    x, gx = c[:, 0], cell[:, 0] * stride
    if np.ptp(x) == 0:
        return True
    return abs(float(np.corrcoef(x, gx)[0, 1])) < 0.5


def decode_yolox(out, hw, layout=None, activation=None, strides=YOLOX_STRIDES):
    """A raw YOLOX head [1, N, 5+C] (or [1, 5+C, N]) -> (boxes (N, 4) x1 y1 x2 y2 in input
    pixels, scores (N, C), activation), decoded as YOLOX decodes it: centre = (cell +
    offset) x stride, size = exp(log size) x stride, score = objectness x class score, both
    through `activation` ('none' for probabilities, 'sigmoid' for logits; inferred from
    their range when not given)."""
    coords, rest = split_packed(out, 4, layout)
    cell, stride = yolox_grid(hw, strides)
    c = np.asarray(coords, dtype=np.float64)
    xy = (c[:, 0:2] + cell) * stride[:, None]
    wh = np.exp(np.clip(c[:, 2:4], -60, 60)) * stride[:, None]
    rest = np.asarray(rest, dtype=np.float64)
    act = activation or infer_activation(rest)
    p = activate(rest, act)
    return to_xyxy(np.concatenate([xy, wh], axis=1)), p[:, :1] * p[:, 1:], act


def encode_yolox(boxes, cells, hw, strides=YOLOX_STRIDES):
    """The inverse of decode_yolox's box part, for tests and tools: boxes (K, 4) x1 y1 x2 y2
    in pixels placed at anchor indices `cells` (K,) -> their raw values (K, 4)."""
    cell, stride = yolox_grid(hw, strides)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    idx = np.asarray(cells, dtype=np.int64)
    s = stride[idx][:, None]
    centre = (b[:, 0:2] + b[:, 2:4]) / 2
    size = b[:, 2:4] - b[:, 0:2]
    return np.concatenate([centre / s - cell[idx], np.log(size / s)], axis=1)


def infer_activation(scores):
    """'none' when the scores already lie in [0, 1] (probabilities), else 'sigmoid' (logits)."""
    s = np.asarray(scores)
    if s.size == 0 or (np.nanmin(s) >= 0 and np.nanmax(s) <= 1):
        return "none"
    return "sigmoid"


def activate(scores, activation="none"):
    """Scores through the model's activation: 'none', 'sigmoid' or 'softmax' (last axis)."""
    s = np.asarray(scores, dtype=np.float64)
    if activation in (None, "none", "identity"):
        return s
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-np.clip(s, -60, 60)))
    if activation == "softmax":
        e = np.exp(s - np.max(s, axis=-1, keepdims=True))
        return e / np.sum(e, axis=-1, keepdims=True)
    raise ValueError(f"unknown activation '{activation}'")


def iou_matrix(a, b):
    """IoU of every box of `a` (K, 4) with every box of `b` (M, 4), x1 y1 x2 y2 -> (K, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-300), 0.0)


def nms(boxes, scores, classes, iou=0.5, max_det=300):
    """Class-aware greedy non-maximum suppression: indices kept, best score first. A box is
    suppressed only by a better box of the same class overlapping it at IoU > `iou`."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    for c in np.unique(classes):
        idx = order[classes[order] == c]
        while len(idx):
            i = idx[0]
            keep.append(int(i))
            if len(idx) == 1:
                break
            overlap = iou_matrix(boxes[i:i + 1], boxes[idx[1:]])[0]
            idx = idx[1:][overlap <= iou]
    keep = sorted(keep, key=lambda i: (-scores[i], i))
    return np.asarray(keep[:max_det], dtype=np.int64)


def detect(boxes, scores, threshold=0.25, iou=0.5, activation="none", max_det=300):
    """Detections of one image: scores (N, C) through `activation`, each anchor's best
    class, those at or above `threshold`, class-aware NMS. `scores` may be (N,) for one
    class."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = activate(scores, activation)
    if s.ndim == 1:
        s = s[:, None]
    s = s.reshape(len(boxes), -1)
    if s.shape[1] == 0:
        cls = np.zeros(len(boxes), dtype=np.int64)
        best = np.zeros(len(boxes))
    else:
        cls = np.argmax(s, axis=1)
        best = s[np.arange(len(s)), cls]
    ok = np.nonzero(best >= threshold)[0]
    keep = ok[nms(boxes[ok], best[ok], cls[ok], iou, max_det)] if len(ok) else ok
    return Detections(boxes[keep], best[keep], cls[keep].astype(np.int64))


def _as_detections(d):
    if isinstance(d, Detections):
        return d
    if isinstance(d, dict):
        return Detections(np.asarray(d["boxes"], dtype=np.float64).reshape(-1, 4),
                          np.asarray(d.get("scores", np.ones(len(d["boxes"])))),
                          np.asarray(d.get("classes", np.zeros(len(d["boxes"]), int))))
    boxes, scores, classes = d
    return Detections(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(scores),
                      np.asarray(classes))


def match(src, art, iou=0.5):
    """The source's detections matched by the artefact's: greedy, best source score first,
    each to the unmatched artefact detection of the same class with the highest IoU >= `iou`.

    Returns dict(recall = matched / source detections (1.0 when the source has none),
    precision = matched / artefact detections (1.0 when the artefact has none),
    matched = [(source index, artefact index, iou)], box_err = mean absolute coordinate
    difference over matched pairs in the output's units (0.0 when none matched),
    box_err_max, sources, artefacts)."""
    src, art = _as_detections(src), _as_detections(art)
    ious = iou_matrix(src.boxes, art.boxes)
    taken = np.zeros(len(art.boxes), dtype=bool)
    pairs = []
    for i in np.argsort(-np.asarray(src.scores, dtype=np.float64), kind="stable"):
        if not len(art.boxes):
            break
        cand = ious[i].copy()
        cand[taken | (np.asarray(art.classes) != src.classes[i])] = -1.0
        j = int(np.argmax(cand))
        if cand[j] >= iou:
            taken[j] = True
            pairs.append((int(i), j, float(cand[j])))
    n_src, n_art, n = len(src.boxes), len(art.boxes), len(pairs)
    if pairs:
        err = np.abs(src.boxes[[p[0] for p in pairs]] - art.boxes[[p[1] for p in pairs]])
        box_err, box_err_max = float(np.mean(err)), float(np.max(err))
    else:
        box_err = box_err_max = 0.0
    return {"recall": n / n_src if n_src else 1.0, "precision": n / n_art if n_art else 1.0,
            "matched": pairs, "box_err": box_err, "box_err_max": box_err_max,
            "sources": n_src, "artefacts": n_art}


def match_runs(src_samples, art_samples, iou=0.5):
    """`match` over several images, pooled: [Detections] x2 -> the same dict, counts summed,
    `matched` as (sample, source index, artefact index, iou)."""
    pairs, errs, n_src, n_art = [], [], 0, 0
    for k, (s, a) in enumerate(zip(src_samples, art_samples)):
        m = match(s, a, iou)
        s, a = _as_detections(s), _as_detections(a)
        pairs += [(k,) + p for p in m["matched"]]
        errs += [np.abs(s.boxes[i] - a.boxes[j]) for i, j, _ in m["matched"]]
        n_src += m["sources"]
        n_art += m["artefacts"]
    n = len(pairs)
    e = np.concatenate(errs) if errs else np.zeros(0)
    return {"recall": n / n_src if n_src else 1.0, "precision": n / n_art if n_art else 1.0,
            "matched": pairs, "box_err": float(np.mean(e)) if e.size else 0.0,
            "box_err_max": float(np.max(e)) if e.size else 0.0, "sources": n_src,
            "artefacts": n_art}
