"""What each output is, and how it is judged: the comparator asks the output's role.

    roles = infer_roles(source_outputs, overrides={"boxes": "detection"})   # name -> Role
    role.kind, role.evidence                  # 'sequence', "rank-3 [4, 1]: axis 1 is time"
    verdict = judge(role, source, converted, tolerances)   # Verdict(reasons, metrics, parts, headline)

Roles and their judges (reduced precision vs float, the comparator's "agreement" mode; float vs
float is judged by tolerances, and the role's metrics are reported beside them):
  class        class scores (logits or probabilities): top-1 agreement, top-k overlap
  multilabel   independent sigmoid scores: per-label decisions at a threshold, agreement, F1
  detection    packed [1,4+C,N] / [1,N,4+C]: box part and score part judged apart (a part whose
               range collapses fails), then scores through the activation, threshold,
               class-aware NMS, the source's detections matched by the artefact's at IoU
               >= 0.5: recall, precision, box error in the output's units
               (a raw YOLOX head [1,N,5+C], N the grid cells of strides 8/16/32 at the input
               size, is first decoded: cell + offset and exp(log size) times the stride,
               objectness x class)
  detection-boxes / detection-scores   split detector outputs (anchors x coords, anchors x
               scores): coordinates as regression; scores as per-anchor decisions at the
               threshold (recall, precision of the anchors the source keeps), range collapse
  landmarks    landmarks / regression: error in the output's units and relative to its range
  dense        segmentation / heat maps: argmax (channels) or threshold (one channel)
               agreement per pixel and IoU
  sequence     [1, T, C]: judged per time step (argmax per step for C >= 2 scores, else the
               values' error relative to the range); the time axis is never a class axis
  embedding    cosine per sample
  raw          per element: cosine and magnitude, as before roles
Nothing here calls an output's agreement "top-1" unless its role is class scores.
"""

import re
from collections import namedtuple

import numpy as np

from converters.validation import detection as det

ROLES = ("class", "multilabel", "detection", "detection-boxes", "detection-scores",
         "detection-nms", "landmarks", "dense", "sequence", "embedding", "raw")
NMS_PART = "detection-nms-part"   # the scores, classes, count of a detection-nms group
ALIASES = {"classes": "class", "classifier": "class", "scores": "class", "multi-label": "multilabel",
           "detector": "detection", "boxes": "detection-boxes", "regression": "landmarks",
           "landmark": "landmarks", "keypoints": "landmarks", "segmentation": "dense",
           "heatmap": "dense", "map": "dense", "time": "sequence", "none": "raw"}

Role = namedtuple("Role", ["kind", "evidence", "params"], defaults=(None,))
Role.__doc__ = "An output's role, the short evidence it was inferred from, and its parameters."

Verdict = namedtuple("Verdict", ["reasons", "metrics", "parts", "headline"])

# defaults a user accepts (flags change them)
MIN_RECALL = 0.9
MIN_PRECISION = 0.9
IOU = 0.5
SCORE_THRESHOLD = 0.25
LABEL_THRESHOLD = 0.5
MIN_LABEL_AGREEMENT = 0.95
MIN_F1 = 0.9
MIN_PIXEL_AGREEMENT = 0.95
MAX_RANGE_ERROR = 0.05       # mean |error| / source range, landmarks and per-step values
MIN_RANGE_RATIO = 0.5        # a part whose range shrinks below this fraction of the source's collapsed
MAX_RANGE_RATIO = 2.0        # ... or grows beyond this multiple (saturation, a wrong scale)

_NAME_RULES = [
    (r"landmark|keypoint|kpt|joint|pose|mesh|lmk", "landmarks"),
    (r"box|bbox|loc(ation)?s?$|regress|coord|anchor", "detection-boxes"),
    (r"seg|mask|heat ?map|depth|alpha|matte|density", "dense"),
    (r"embed|feature|descriptor|vector|encod|hidden", "embedding"),
    (r"vad|speech|frame|pitch|onset|step|time", "sequence"),
    (r"multi.?label|sigmoid|tags?$|attribute", "multilabel"),
    (r"logit|prob|softmax|class|predict|label|categor", "class"),
]


def normalize_role(text):
    """'Detection' -> 'detection'; ValueError naming the roles for an unknown one."""
    r = str(text).strip().lower()
    r = ALIASES.get(r, r)
    if r not in ROLES:
        raise ValueError(f"unknown output role '{text}': choose one of {', '.join(ROLES)}")
    return r


def parse_roles(values):
    """['boxes:detection', 'probs:multilabel'] -> {'boxes': 'detection', ...}. A name may
    contain ':' (the role is after the last one). ValueError with a readable message."""
    out = {}
    for v in values or []:
        name, sep, role = str(v).rpartition(":")
        if not sep or not name:
            raise ValueError(f"invalid --output-role '{v}': expected OUTPUT:ROLE "
                             f"(roles: {', '.join(ROLES)})")
        out[name] = normalize_role(role)
    return out


def _squeezed(shape):
    return [int(d) for d in shape if d != 1]


def _name_role(name):
    n = re.sub(r"[^a-z0-9]+", " ", str(name).lower()).strip()
    n = re.sub(r"^(serving default|statefulpartitionedcall|output|outputs)\b", "", n).strip()
    for pattern, role in _NAME_RULES:
        if re.search(pattern, n):
            return role, pattern
    return None, None


def infer_role(name, ref, others=None, hint=None, input_hw=None):
    """The role of one output from its name, its shape and the source's values `ref` (with
    a leading sample axis). `others`: {name: shape without the sample axis} of the other
    outputs (split detectors pair on the anchor count). `hint`: a role from the model's own
    metadata (TFLite metadata), taken as it is. `input_hw`: the model's image input size
    (H, W), where it has one (a raw YOLOX head's anchors are its grid cells).

    The steps: the model's metadata; a detector's shapes (_detector_role); the name
    (_named_role); the shape and values (_shape_role, _vector_role)."""
    ref = np.asarray(ref)
    if hint:
        role, why = hint if isinstance(hint, tuple) else (hint, f"model metadata says {hint}")
        return Role(normalize_role(role), why)
    o = _Output(name, ref, others or {})
    o.input_hw = input_hw
    if not o.dims:
        return Role("raw", f"one value per sample ({o.range})")
    return _detector_role(o) or _named_role(o) or _shape_role(o)


class _Output:
    """What the role of one output is inferred from: name, shape, values and the others."""

    def __init__(self, name, ref, others):
        self.name, self.ref, self.others = name, ref, others
        self.input_hw = None
        self.shape = list(ref.shape[1:])
        self.dims = _squeezed(self.shape)
        self.nrole, self.pattern = _name_role(name)
        finite = ref[np.isfinite(ref)] if ref.size and np.issubdtype(ref.dtype, np.floating) else ref
        self.lo = float(np.min(finite)) if finite.size else 0.0
        self.hi = float(np.max(finite)) if finite.size else 0.0
        self.range = f"values {self.lo:.3g}..{self.hi:.3g}"


def _detector_role(o):
    """A sequence of class probabilities, a packed detector or one half of a split detector,
    from a [1, A, B] output's shape and values; None for anything else."""
    if len(o.dims) != 2 or len(o.shape) > 3:
        return None
    dims, name, ref = o.dims, o.name, o.ref
    small, large = min(dims), max(dims)
    # packed detector: [1, 4+C, N] or [1, N, 4+C], many anchors, few coords+classes; not
    # when another output has as many anchors (a split head: GFL/PicoDet scores [1, N, C]
    # fit the packed shape too)
    split_pair = dims[0] >= 64 and any(n != name and _squeezed(s) and _squeezed(s)[0] == dims[0]
                                       for n, s in o.others.items())
    # a sequence of class probabilities (CTC text recognizers: [1, T, C] softmax over C)
    # sums to 1 along its long axis at every step: that is no detector
    along = np.asarray(ref[0], dtype=np.float64).reshape(dims).sum(axis=int(np.argmax(dims)))
    per_step_softmax = o.lo >= 0 and bool(np.allclose(along, 1.0, atol=1e-2))
    if per_step_softmax and len(o.shape) == 3 and o.nrole in (None, "class", "sequence"):
        steps, classes = (dims[0], dims[1]) if dims[1] == large else (dims[1], dims[0])
        return Role("sequence", f"{steps} steps of {classes} class probabilities (each step "
                                f"sums to 1): judged per time step")
    if 5 <= small <= 4 + 1000 and large >= 64 and large >= 4 * small and not split_pair \
            and not per_step_softmax:
        role = _packed_role(o, small, large)
        if role is not None:
            return role
    return _split_role(o)


def _packed_role(o, small, large):
    """A packed detector output ([1, 4+C, N] or [1, N, 4+C]) when its coordinates and scores
    look like ones; None otherwise."""
    dims = o.dims
    layout = det.packed_layout(dims)
    coords, scores = det.split_packed(o.ref[0].reshape(dims), layout=layout)
    yolox = _yolox_role(o, layout, coords, scores, small, large)
    if yolox is not None:
        return yolox
    s_lo, s_hi = float(np.min(scores)), float(np.max(scores))
    c_span = float(np.ptp(coords)) if coords.size else 0.0
    if o.nrole in (None, "detection-boxes", "class") and (c_span > 1.5 * max(s_hi - s_lo, 1e-9)
                                                          or (0 <= s_lo and s_hi <= 1)):
        return Role("detection", f"packed {dims}: {large} anchors x 4 box coords + "
                                 f"{small - 4} classes ({'rows' if layout == 'channels' else 'columns'}), "
                                 f"scores {s_lo:.3g}..{s_hi:.3g}",
                    {"layout": layout})
    return None


def _yolox_role(o, layout, coords, scores, small, large):
    """A raw YOLOX head: [1, N, 5+C] where N is the cell count of the grids of strides
    8/16/32 at the model's input size (or a square one) and the box values are offsets and
    log sizes, not boxes (detection.looks_like_raw_yolox); decoded before matching."""
    if small < 6 or o.nrole not in (None, "detection-boxes", "class"):
        return None
    hw = det.yolox_input_hw(large, o.input_hw)
    if hw is None or not det.looks_like_raw_yolox(coords, hw):
        return None
    rest = np.asarray(scores)
    act = det.infer_activation(rest)
    strides = "/".join(str(s) for s in det.YOLOX_STRIDES)
    given = "" if o.input_hw else ", a square input"
    return Role("detection", f"raw YOLOX head: {large} = grid cells of strides {strides} at "
                             f"{hw[0]}x{hw[1]}{given}, decoded (offsets, log sizes, objectness x "
                             f"{small - 5} class{'es' if small > 6 else ''}, "
                             f"{'probabilities' if act == 'none' else 'logits'})",
                {"layout": layout, "decode": "yolox", "input_hw": hw, "activation": act})


def _split_role(o):
    """Split detector: anchors x coords beside anchors x scores with the same anchor count."""
    dims, name = o.dims, o.name
    n_anchor = dims[0]
    paired = [n for n, s in o.others.items() if _squeezed(s) and _squeezed(s)[0] == n_anchor
              and n != name]
    if not (n_anchor >= 64 and paired):
        return None
    width = dims[1]
    other_widths = [(_squeezed(o.others[n]) + [1])[1] for n in paired]
    probabilities = width != 4 and 0 <= o.lo and o.hi <= 1   # sigmoid scores, whatever their count
    # coords: the widest, or 4 per box (a DFL distribution: 4 sides x bins) when its
    # partner is the wider one (many classes); scores in 0..1 are never coords
    if o.nrole == "detection-boxes" or (width >= 4 and not probabilities and (
            all(width > w for w in other_widths) or width % 4 == 0)):
        return Role("detection-boxes", f"{n_anchor} anchors x {width} coords, beside "
                                       f"'{paired[0]}' with as many anchors")
    return Role("detection-scores", f"{n_anchor} anchors x {width} scores, beside "
                                    f"'{paired[0]}' with as many anchors ({o.range})")


def _named_role(o):
    """The role the output's name gives, where its shape and values do not say otherwise;
    None when the name says nothing (or, for a map or a sequence, less than its shape)."""
    dims, nrole, pattern, name = o.dims, o.nrole, o.pattern, o.name
    if len(dims) == 1 and n_anchor_scores(dims, o.others, name):
        return Role("detection-scores", f"{dims[0]} anchor scores beside an anchors x coords output")
    if nrole == "detection-boxes" and len(dims) <= 2:
        return Role("landmarks", f"name matches '{pattern}' (coordinates, no anchors to pair): "
                                 f"judged as regression")
    if nrole in ("class", "multilabel") and len(dims) != 1 and len(o.shape) >= 3:
        return None   # 'predictions' of a map or a sequence: its shape says more than its name
    if nrole == "class" and len(dims) == 1 and o.lo >= 0 and o.hi <= 1.0 + 1e-6:
        if not _softmax_like(o.ref):
            return Role("multilabel", f"named like class scores ('{name}') but {dims[0]} values "
                                      f"in 0..1 not one class's probabilities (sums off 1, or "
                                      f"several above 0.5): independent sigmoids")
    if nrole and nrole != "detection-boxes":
        return Role(nrole, f"name '{name}' matches '{pattern}'")
    return None


def _shape_role(o):
    """The role from the output's shape and values alone."""
    shape, dims = o.shape, o.dims
    if len(shape) == 3 and shape[0] == 1 and shape[-1] == 4 and 1 < shape[1] <= 300:
        return Role("landmarks", f"{shape[1]} rows of 4 coordinates (boxes after post-processing): "
                                 f"judged as coordinates")
    if len(shape) >= 3 and len(dims) >= 2 and sum(d >= 8 for d in dims) >= 2:
        return Role("dense", f"spatial {shape} ({o.range})")
    if len(shape) == 3 and shape[0] == 1 and shape[1] > 1:
        return Role("sequence", f"rank-3 {shape}: axis 1 ({shape[1]} steps) is time, "
                                f"{shape[2]} value(s) per step")
    if len(dims) == 1:
        return _vector_role(o)
    return Role("raw", f"shape {shape}: no role recognised ({o.range})")


def _vector_role(o):
    """The role of a vector output (one non-unit dimension) from its values."""
    n, ref, lo, hi = o.dims[0], o.ref, o.lo, o.hi
    flat = ref.reshape(len(ref), -1).astype(np.float64)
    sums = flat.sum(axis=1)
    norms = np.linalg.norm(flat, axis=1)
    if lo >= 0 and hi <= 1.0 + 1e-6 and _softmax_like(ref):
        return Role("class", f"{n} non-negative scores summing to 1 (probabilities; sums "
                             f"{sums.min():.3g}..{sums.max():.3g})")
    if lo >= 0 and hi <= 1.0 + 1e-6 and _unit_spread(flat, norms):
        return Role("embedding", f"{n} non-negative values of unit L2 norm per sample, none "
                                 f"dominant (an embedding after ReLU and L2 normalisation, "
                                 f"not independent scores)")
    if lo >= 0 and hi <= 1.0 + 1e-6:
        return Role("multilabel", f"{n} scores in 0..1 not summing to 1 (sums "
                                  f"{sums.min():.3g}..{sums.max():.3g}): independent sigmoids")
    if n >= 16 and np.allclose(norms, 1.0, atol=1e-2):
        return Role("embedding", f"{n} values of unit L2 norm per sample")
    if lo >= 0 and hi > 1.5:
        return Role("landmarks", f"{n} non-negative values up to {hi:.3g} (coordinates, "
                                 f"not scores)")
    if _xyz_triples(flat):
        return Role("landmarks", f"{n} values as {n // 3} (x, y, z) points: x and y non-negative "
                                 f"up to {hi:.3g}, z of either sign (coordinates, not logits)")
    return Role("class", f"{n} values of either sign: logits")


def _unit_spread(flat, norms):
    """Every sample of unit L2 norm (16 values or more) with its weight spread: no value
    holds most of the norm (mean of the per-sample largest values below 0.9), so a
    multi-label vector with one confident label (norm near 1 too) is not taken for one."""
    return bool(flat.shape[1] >= 16 and np.allclose(norms, 1.0, atol=1e-2)
                and float(np.mean(np.max(flat, axis=1))) < 0.9)


def _xyz_triples(flat):
    """Landmarks as (x, y, z) triples (MediaPipe's face, iris and hand models): a multiple of 3
    values whose x and y are image coordinates (non-negative, spanning pixels) while z, a depth
    around 0, takes either sign. Class logits show no such per-triple split."""
    n = flat.shape[1]
    if n % 3 or n < 9:
        return False
    pts = flat.reshape(len(flat), n // 3, 3)
    xy, z = pts[..., :2], pts[..., 2]
    return bool((xy >= 0).mean() >= 0.95 and np.ptp(xy) > 1.5 and (z < 0).mean() > 0.05
                and np.abs(z).mean() < 0.5 * np.abs(xy).mean())


def _softmax_like(ref):
    """Probabilities of one class each: every sample sums to 1 within what 8-bit output
    quantization moves it (15%), and no sample has two scores above 0.5."""
    flat = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    sums = flat.sum(axis=1)
    return bool(np.all(np.abs(sums - 1) <= 0.15) and np.all(np.sum(flat > 0.5, axis=1) <= 1))


def n_anchor_scores(dims, others, name):
    n = dims[0]
    return n >= 64 and any(o != name and len(_squeezed(s)) == 2 and _squeezed(s)[0] == n
                           and _squeezed(s)[1] >= 4 for o, s in others.items())


def hints_for(artefact):
    """{output name: (role, evidence)} from the model's own metadata, where it has any."""
    if str(getattr(artefact, "format", "")).startswith("tflite") or \
            str(getattr(artefact, "path", "")).endswith(".tflite"):
        return tflite_metadata_roles(artefact.path)
    return {}


def _postprocessed_group(outputs, skip):
    """A detector's outputs after its own NMS (TFLite_Detection_PostProcess and the like):
    boxes [1, K, 4], scores [1, K] in 0..1 best first, classes [1, K] of whole numbers, and
    maybe a count [1]. Returns {boxes name: {scores, classes, count}} for each group found."""
    groups = {}
    shapes = {n: _squeezed(np.shape(a)[1:]) for n, a in outputs.items() if n not in skip}
    for b, sb in shapes.items():
        if len(sb) != 2 or sb[1] != 4 or np.ndim(outputs[b]) != 4:
            continue
        k = sb[0]
        flat = [n for n, sh in shapes.items() if n != b and sh == [k]]
        scores = [n for n in flat if np.min(outputs[n]) >= 0 and np.max(outputs[n]) <= 1
                  and np.all(np.diff(np.asarray(outputs[n]).reshape(len(outputs[n]), -1), axis=1) <= 1e-6)]
        classes = [n for n in flat if n not in scores[:1]
                   and np.allclose(outputs[n], np.round(outputs[n]))]
        if not scores or not classes:
            continue
        count = [n for n, sh in shapes.items() if sh in ([], [1]) and n not in (b,)
                 and np.allclose(outputs[n], np.round(outputs[n])) and np.max(outputs[n]) <= k]
        groups[b] = {"scores": scores[0], "classes": classes[0], "count": count[0] if count else None}
    return groups


def infer_roles(outputs, overrides=None, hints=None, labels=False, input_hw=None):
    """{name: Role} for every output (OrderedDict name -> source array (S, ...)).

    `overrides`: {name: role} from --output-role (a name matched as given, or normalized as
    runtimes mangle names); `hints`: {name: role} from the model's metadata; `labels`: the
    model has class labels and one output, which is then class scores; `input_hw`: the
    model's image input size (H, W), where it has one."""
    from converters.validation.metrics import normalize_name

    overrides = overrides or {}
    loose = {normalize_name(k): v for k, v in overrides.items()}
    shapes = {n: list(np.shape(a)[1:]) for n, a in outputs.items()}
    out = {}
    for name, ref in outputs.items():
        given = overrides.get(name) or loose.get(normalize_name(name))
        if given:
            out[name] = Role(normalize_role(given), "--output-role")
        elif labels and len(outputs) == 1:
            out[name] = Role("class", "the model carries class labels")
        else:
            others = {n: s for n, s in shapes.items() if n != name}
            out[name] = infer_role(name, ref, others, (hints or {}).get(name), input_hw)
    given = {n for n, r in out.items() if r.evidence == "--output-role"}
    for b, g in _postprocessed_group(outputs, given).items():
        parts = [g["scores"], g["classes"]] + ([g["count"]] if g["count"] else [])
        out[b] = Role("detection-nms", f"boxes after the model's own NMS, with scores "
                                       f"'{g['scores']}', classes '{g['classes']}'"
                                       + (f", count '{g['count']}'" if g["count"] else ""), g)
        for p in parts:
            out[p] = Role(NMS_PART, f"part of the detections of '{b}', judged with them")
    return out


# -- parts and collapse ------------------------------------------------------------------------
def _levels(a, cap=64):
    return len(np.unique(a.ravel()[: 1 << 20])[:cap + 1])


def part_check(part, ref, conv):
    """One part of an output judged on its own: its range and its distinct values in the
    artefact against the source's. Returns a dict with ok and, if not, why."""
    ref = np.asarray(ref, dtype=np.float64)
    conv = np.asarray(conv, dtype=np.float64)
    r_lo, r_hi = (float(ref.min()), float(ref.max())) if ref.size else (0.0, 0.0)
    c_lo, c_hi = (float(conv.min()), float(conv.max())) if conv.size else (0.0, 0.0)
    r_span, c_span = r_hi - r_lo, c_hi - c_lo
    r_lv, c_lv = _levels(ref), _levels(conv)
    d = {"part": part, "source_range": [r_lo, r_hi], "range": [c_lo, c_hi],
         "source_levels": r_lv, "levels": c_lv, "ok": True, "reason": ""}
    if not np.isfinite(conv).all():
        d.update(ok=False, reason=f"{part}: non-finite values")
    elif r_span > 0 and c_span == 0:
        d.update(ok=False, reason=f"{part}: dead (every value {c_lo:.3g}; the source's span "
                                  f"{r_lo:.3g}..{r_hi:.3g})")
    elif r_lv > 8 and c_lv <= 2:
        vals = ", ".join(f"{v:.3g}" for v in np.unique(conv)[:2])
        d.update(ok=False, reason=f"{part}: collapsed to {c_lv} levels ({vals}) where the source "
                                  f"has {r_lv if r_lv <= 64 else 'over 64'}")
    elif r_span > 0 and c_span < MIN_RANGE_RATIO * r_span:
        d.update(ok=False, reason=f"{part}: range {c_lo:.3g}..{c_hi:.3g} collapsed from the "
                                  f"source's {r_lo:.3g}..{r_hi:.3g}")
    elif r_span > 0 and c_span > MAX_RANGE_RATIO * r_span:
        d.update(ok=False, reason=f"{part}: range {c_lo:.3g}..{c_hi:.3g} blown up from the "
                                  f"source's {r_lo:.3g}..{r_hi:.3g}")
    return d


def _channel_checks(part, ref, conv, axis_name="class"):
    """Dead or saturated channels (last axis) of a part: a channel that varies in the source
    but is constant in the artefact."""
    out = []
    ref = ref.reshape(-1, ref.shape[-1])
    conv = conv.reshape(-1, conv.shape[-1])
    span = float(np.ptp(ref)) or 1.0
    for c in range(ref.shape[-1]):
        if np.ptp(ref[:, c]) > 0.05 * span and np.ptp(conv[:, c]) == 0:
            out.append({"part": f"{part} {axis_name} {c}", "ok": False,
                        "reason": f"{part} {axis_name} {c}: dead (always {conv[0, c]:.3g}; the "
                                  f"source's span {ref[:, c].min():.3g}..{ref[:, c].max():.3g})"})
            if len(out) >= 3:
                break
    return out


# -- judges ------------------------------------------------------------------------------------
def _t(tol, what, default):
    v = getattr(tol, what, None)
    return default if v is None else v


def _flat(a):
    return np.asarray(a, dtype=np.float64).reshape(len(a), -1)


def judge_class(ref, conv, tol):
    from converters.validation.metrics import topk_agreement

    n = len(ref)
    top1, overlap = topk_agreement(ref, conv, tol.top_k)
    # a sample whose source ties for first place (a quantized source: equal steps) agrees
    # with an artefact that picks any of the tied classes
    a, b = _flat(ref), _flat(conv)
    picked = a[np.arange(n), np.argmax(b, axis=1)]
    ties = int(np.sum((picked == a.max(axis=1)) & (np.argmax(a, axis=1) != np.argmax(b, axis=1))))
    agree = top1 + ties
    m = {"top1": top1, "top1_source_ties": ties, "top_k_overlap": overlap}
    reasons = []
    if agree / n < tol.min_top1:
        reasons.append(f"top-1 agreement {agree}/{n} below {tol.min_top1:.0%}")
    tie_note = f" ({ties} a tie in the source)" if ties else ""
    return Verdict(reasons, m, [], f"top-1 {agree}/{n}{tie_note}")


def _probabilities(a):
    a = np.asarray(a, dtype=np.float64)
    return a if (a.size == 0 or (a.min() >= 0 and a.max() <= 1)) else det.activate(a, "sigmoid")


def _f1(ref_pos, conv_pos):
    tp = int(np.sum(ref_pos & conv_pos))
    fp = int(np.sum(~ref_pos & conv_pos))
    fn = int(np.sum(ref_pos & ~conv_pos))
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def judge_multilabel(ref, conv, tol):
    thr = _t(tol, "label_threshold", LABEL_THRESHOLD)
    pr, pc = _probabilities(_flat(ref)), _probabilities(_flat(conv))
    a, b = pr >= thr, pc >= thr
    agree = float(np.mean(a == b)) if a.size else 1.0
    f1 = _f1(a, b)
    m = {"label_agreement": agree, "f1": f1, "label_threshold": thr,
         "source_positives": int(a.sum()), "positives": int(b.sum())}
    reasons = []
    if agree < _t(tol, "min_label_agreement", MIN_LABEL_AGREEMENT):
        reasons.append(f"label decisions at {thr:g} agree {agree:.1%}, below "
                       f"{_t(tol, 'min_label_agreement', MIN_LABEL_AGREEMENT):.0%}")
    if f1 < _t(tol, "min_f1", MIN_F1):
        reasons.append(f"F1 {f1:.3f} against the source's labels below {_t(tol, 'min_f1', MIN_F1):g}")
    return Verdict(reasons, m, [], f"labels agree {agree:.1%}, F1 {f1:.3f} at {thr:g}")


def _recall_precision_reasons(m, tol, what="detections"):
    reasons = []
    min_r, min_p = _t(tol, "min_recall", MIN_RECALL), _t(tol, "min_precision", MIN_PRECISION)
    if m["recall"] < min_r:
        reasons.append(f"recall {m['recall']:.2f} ({len(m['matched'])}/{m['sources']} source "
                       f"{what} found) below {min_r:g}")
    if m["precision"] < min_p:
        reasons.append(f"precision {m['precision']:.2f} ({len(m['matched'])}/{m['artefacts']} "
                       f"{what} match the source's) below {min_p:g}")
    return reasons


def _packed_boxes(coords, scores, params, act):
    """One sample's boxes (N, 4) x1 y1 x2 y2 and scores (N, C) with the activation the
    detect step still applies: a raw YOLOX head decoded (scores objectness x class, already
    through the activation), any other packed head as its box format says."""
    if params.get("decode") == "yolox":
        packed = np.concatenate([coords, scores], axis=1)
        boxes, s, _ = det.decode_yolox(packed, params["input_hw"], layout="anchors", activation=act)
        return boxes, s, "none"
    return det.to_xyxy(coords[:, :4], params.get("box_format", "cxcywh")), scores, act


def judge_detection(ref, conv, tol, params=None):
    params = params or {}
    shape = _squeezed(ref.shape[1:])
    layout = params.get("layout") or det.packed_layout(shape)
    coords_r, scores_r, coords_c, scores_c = [], [], [], []
    for r, c in zip(ref, conv):
        a, b = det.split_packed(r.reshape(shape), layout=layout)
        coords_r.append(a)
        scores_r.append(b)
        a, b = det.split_packed(c.reshape(shape), layout=layout)
        coords_c.append(a)
        scores_c.append(b)
    coords_r, scores_r = np.stack(coords_r), np.stack(scores_r)
    coords_c, scores_c = np.stack(coords_c), np.stack(scores_c)
    where = "rows" if layout == "channels" else "columns"
    nc = scores_r.shape[-1]
    yolox = params.get("decode") == "yolox"
    box_what = "raw YOLOX box part" if yolox else "box part"
    score_what = ("objectness + class part" if yolox else "score part") + f" ({where} 4-{3 + nc})"
    parts = [part_check(f"{box_what} ({where} 0-3)", coords_r, coords_c),
             part_check(score_what, scores_r, scores_c)]
    parts += _channel_checks(score_what, scores_r, scores_c)
    act = params.get("activation") or det.infer_activation(scores_r)
    thr = _t(tol, "score_threshold", SCORE_THRESHOLD)
    iou = _t(tol, "iou", IOU)
    src_d, art_d = [], []
    for k in range(len(ref)):
        for coords, scores, into in ((coords_r[k], scores_r[k], src_d), (coords_c[k], scores_c[k], art_d)):
            boxes, s, a = _packed_boxes(coords, scores, params, act)
            into.append(det.detect(boxes, s, thr, iou, a))
    m = det.match_runs(src_d, art_d, iou)
    metrics = {"recall": m["recall"], "precision": m["precision"], "matched": len(m["matched"]),
               "source_detections": m["sources"], "detections": m["artefacts"],
               "box_err": m["box_err"], "box_err_max": m["box_err_max"], "score_threshold": thr,
               "iou": iou, "activation": act,
               "matches": [{"sample": s, "source": int(i), "artefact": int(j), "iou": round(v, 4),
                            "class": int(src_d[s].classes[i]),
                            "source_box": [round(float(x), 3) for x in src_d[s].boxes[i]],
                            "box": [round(float(x), 3) for x in art_d[s].boxes[j]]}
                           for s, i, j, v in m["matched"][:50]]}
    reasons = [p["reason"] for p in parts if not p["ok"]]
    reasons += _recall_precision_reasons(m, tol)
    head = (f"recall {m['recall']:.2f}, precision {m['precision']:.2f} "
            f"({len(m['matched'])} of {m['sources']} detections matched at IoU {iou:g}), "
            f"box err {m['box_err']:.3g}")
    if m["sources"] == 0:
        head += " (the source detects nothing above {:g} on these inputs)".format(thr)
    return Verdict(reasons, metrics, parts, head)


def judge_detection_scores(ref, conv, tol):
    """Split detector scores: the anchors (and classes) the source keeps at the threshold, found
    again by the artefact's (per-anchor recall and precision), and the part's range."""
    thr = _t(tol, "score_threshold", SCORE_THRESHOLD)
    pr, pc = _probabilities(_flat(ref)), _probabilities(_flat(conv))
    a, b = pr >= thr, pc >= thr
    tp = int(np.sum(a & b))
    m = {"recall": tp / int(a.sum()) if a.sum() else 1.0,
         "precision": tp / int(b.sum()) if b.sum() else 1.0,
         "matched": [None] * tp, "sources": int(a.sum()), "artefacts": int(b.sum())}
    parts = [part_check("scores", pr, pc)]
    reasons = [p["reason"] for p in parts if not p["ok"]] + _recall_precision_reasons(
        m, tol, "anchors above the threshold")
    metrics = {"recall": m["recall"], "precision": m["precision"], "matched": tp,
               "source_detections": m["sources"], "detections": m["artefacts"],
               "score_threshold": thr}
    return Verdict(reasons, metrics, parts,
                   f"anchor recall {m['recall']:.2f}, precision {m['precision']:.2f} "
                   f"({tp} of {m['sources']} at {thr:g})")


def _range_error(ref, conv):
    ref, conv = np.asarray(ref, np.float64), np.asarray(conv, np.float64)
    err = np.abs(conv - ref)
    span = float(np.ptp(ref)) if ref.size else 0.0
    mean = float(np.mean(err)) if err.size else 0.0
    return mean, float(np.max(err)) if err.size else 0.0, span, (mean / span if span > 0 else
                                                                 (0.0 if mean == 0 else np.inf))


def judge_landmarks(ref, conv, tol, what="coordinates"):
    mean, mx, span, rel = _range_error(ref, conv)
    limit = _t(tol, "max_range_error", MAX_RANGE_ERROR)
    parts = [part_check(what, ref, conv)]
    reasons = [p["reason"] for p in parts if not p["ok"]]
    if not rel <= limit:
        reasons.append(f"mean error {mean:.3g} is {rel:.1%} of the source's range {span:.3g} "
                       f"(allowed {limit:.0%})")
    return Verdict(reasons, {"mean_err": mean, "max_err": mx, "range": span, "range_error": rel},
                   parts, f"mean err {mean:.3g} ({rel:.2%} of range {span:.3g}), max {mx:.3g}")


def _channel_axis(shape):
    """The channel axis of a spatial map (without the sample axis): the smallest non-spatial
    one, NCHW or NHWC; None for one channel."""
    if len(shape) == 4:   # [1, C, H, W] or [1, H, W, C]; square maps name their channel axis
        if shape[1] == shape[2] != shape[3]:
            return 3
        if shape[2] == shape[3] != shape[1]:
            return 1
        return 1 if shape[1] < shape[3] else 3
    if len(shape) == 3:   # [C, H, W] or [H, W, C]
        return 0 if shape[0] < shape[2] else 2
    return None


def judge_dense(ref, conv, tol):
    shape = list(ref.shape[1:])
    ax = _channel_axis(shape)
    limit = _t(tol, "min_pixel_agreement", MIN_PIXEL_AGREEMENT)
    if ax is not None and shape[ax] >= 2:
        a, b = np.argmax(ref, axis=ax + 1), np.argmax(conv, axis=ax + 1)
        classes = np.union1d(np.unique(a), np.unique(b))
        ious = [np.sum((a == c) & (b == c)) / max(1, np.sum((a == c) | (b == c))) for c in classes]
        how = f"argmax over {shape[ax]} channels"
    else:
        r, c = np.asarray(ref, np.float64), np.asarray(conv, np.float64)
        thr = 0.5 if r.min() >= 0 and r.max() <= 1 else float((r.min() + r.max()) / 2)
        a, b = r >= thr, c >= thr
        ious = [np.sum(a & b) / max(1, np.sum(a | b))] if (a | b).any() else [1.0]
        how = f"threshold {thr:.3g}"
    agree = float(np.mean(a == b))
    miou = float(np.mean(ious))
    parts = [part_check("map", ref, conv)]
    reasons = [p["reason"] for p in parts if not p["ok"]]
    if agree < limit:
        reasons.append(f"pixels agree {agree:.1%} ({how}), below {limit:.0%}")
    return Verdict(reasons, {"pixel_agreement": agree, "iou": miou, "how": how}, parts,
                   f"pixels agree {agree:.1%}, IoU {miou:.3f} ({how})")


def judge_sequence(ref, conv, tol):
    shape = list(ref.shape[1:])
    steps = shape[1] if len(shape) == 3 and shape[0] == 1 else shape[0]
    r = np.asarray(ref, np.float64).reshape(len(ref), steps, -1)
    c = np.asarray(conv, np.float64).reshape(len(conv), steps, -1)
    if r.shape[-1] >= 2:
        same = np.argmax(r, axis=-1) == np.argmax(c, axis=-1)
        # probabilities: a step where the source decides nothing (no score reaches the label
        # threshold: silence, an unvoiced frame) has no argmax worth agreeing with
        undecided = 0
        if r.min() >= 0 and r.max() <= 1:
            decisive = r.max(axis=-1) >= _t(tol, "label_threshold", LABEL_THRESHOLD)
            if decisive.any():
                undecided = int((~decisive).sum())
                same = same[decisive]
        ok_steps, total = int(same.sum()), int(same.size)
        limit = _t(tol, "min_top1", 0.8)
        reasons = []
        if ok_steps / total < limit:
            reasons.append(f"per-step argmax agrees on {ok_steps}/{total} time steps, below "
                           f"{limit:.0%}")
        note = f" ({undecided} steps where the source decides nothing not judged)" if undecided else ""
        return Verdict(reasons, {"steps_agree": ok_steps, "steps": total, "undecided_steps": undecided},
                       [], f"steps agree {ok_steps}/{total}{note}")
    v = judge_landmarks(r, c, tol, what="values")
    limit = _t(tol, "max_range_error", MAX_RANGE_ERROR)
    per_step = np.abs(c - r).reshape(-1)
    span = float(np.ptp(r)) or 1.0
    ok_steps = int(np.sum(per_step <= limit * span))
    m = dict(v.metrics, steps_within=ok_steps, steps=int(per_step.size))
    return Verdict(v.reasons, m, v.parts, f"{ok_steps}/{per_step.size} steps within "
                                          f"{limit:.0%} of range, " + v.headline)


def judge_embedding(ref, conv, tol):
    from converters.validation.metrics import cosine_per_sample

    cos = cosine_per_sample(ref, conv)
    reasons = []
    if not float(np.min(cos)) >= tol.min_cosine:
        reasons.append(f"cosine per sample down to {float(np.min(cos)):.4f}, below {tol.min_cosine}")
    return Verdict(reasons, {"cosine_min": float(np.min(cos))}, [],
                   f"cosine per sample >= {float(np.min(cos)):.4f}")


def judge_detection_nms(ref, conv, tol, params):
    """Detections the model made itself: per sample the first `count` rows (else all), those
    at or above the score threshold, matched by class at the IoU threshold."""
    arrays = (params or {}).get("arrays") or {}
    if not arrays.get("scores") or not arrays.get("classes") or any(
            v is None for v in arrays["scores"] + arrays["classes"]):
        raise ValueError("its scores and classes outputs are missing from the converted model")
    thr = _t(tol, "score_threshold", SCORE_THRESHOLD)
    iou = _t(tol, "iou", IOU)

    def dets(boxes, scores, classes, count):
        out = []
        for k in range(len(boxes)):
            n = int(np.asarray(count[k]).reshape(-1)[0]) if count is not None else None
            b = np.asarray(boxes[k], np.float64).reshape(-1, 4)[:n]
            sc = np.asarray(scores[k], np.float64).reshape(-1)[:n]
            cl = np.round(np.asarray(classes[k], np.float64).reshape(-1)[:n]).astype(np.int64)
            keep = sc >= thr
            out.append(det.Detections(b[keep], sc[keep], cl[keep]))
        return out

    cr, cc = arrays.get("count") or (None, None)
    src = dets(ref, arrays["scores"][0], arrays["classes"][0], cr)
    art = dets(conv, arrays["scores"][1], arrays["classes"][1], cc)
    m = det.match_runs(src, art, iou)
    metrics = {"recall": m["recall"], "precision": m["precision"], "matched": len(m["matched"]),
               "source_detections": m["sources"], "detections": m["artefacts"],
               "box_err": m["box_err"], "box_err_max": m["box_err_max"], "score_threshold": thr,
               "iou": iou,
               "matches": [{"sample": s, "source": int(i), "artefact": int(j), "iou": round(v, 4),
                            "class": int(src[s].classes[i]),
                            "source_box": [round(float(x), 4) for x in src[s].boxes[i]],
                            "box": [round(float(x), 4) for x in art[s].boxes[j]]}
                           for s, i, j, v in m["matched"][:50]]}
    parts = [part_check("scores", arrays["scores"][0], arrays["scores"][1])]
    reasons = [p["reason"] for p in parts if not p["ok"]] + _recall_precision_reasons(m, tol)
    return Verdict(reasons, metrics, parts,
                   f"recall {m['recall']:.2f}, precision {m['precision']:.2f} "
                   f"({len(m['matched'])} of {m['sources']} detections matched at IoU {iou:g}), "
                   f"box err {m['box_err']:.3g}")


def judge(role, ref, conv, tol):
    """The role's verdict on one output (agreement mode): Verdict(reasons, metrics, parts,
    headline). `ref`/`conv`: aligned arrays with a leading sample axis."""
    kind = role.kind if isinstance(role, Role) else normalize_role(role)
    ref = np.asarray(ref)
    conv = np.asarray(conv)
    try:
        if kind == "class":
            return judge_class(ref, conv, tol)
        if kind == "multilabel":
            return judge_multilabel(ref, conv, tol)
        if kind == "detection":
            return judge_detection(ref, conv, tol, role.params if isinstance(role, Role) else None)
        if kind == "detection-scores":
            return judge_detection_scores(ref, conv, tol)
        if kind == "detection-nms":
            return judge_detection_nms(ref, conv, tol, role.params if isinstance(role, Role) else None)
        if kind == NMS_PART:
            return Verdict([], {}, [], "")
        if kind in ("landmarks", "detection-boxes"):
            return judge_landmarks(ref, conv, tol)
        if kind == "dense":
            return judge_dense(ref, conv, tol)
        if kind == "sequence":
            return judge_sequence(ref, conv, tol)
        if kind == "embedding":
            return judge_embedding(ref, conv, tol)
    except Exception as e:   # a role forced on a shape it cannot have: said, never a crash
        return Verdict([f"cannot judge as {kind}: {type(e).__name__}: {e}"], {}, [], "")
    return Verdict([], {}, [], "")


# -- TFLite metadata (the TFLite Support schema, metadata_schema.fbs) --------------------------
# ContentProperties union: 1 FeatureProperties, 2 ImageProperties, 3 BoundingBoxProperties,
# 4 AudioProperties; AssociatedFileType: 2 TENSOR_AXIS_LABELS, 3 TENSOR_VALUE_LABELS.
_CONTENT = {2: ("dense", "image properties"), 3: ("detection-boxes", "bounding box properties")}
_SSD_NAMES = {"location": "detection-boxes", "score": "detection-scores"}


def tflite_metadata_roles(path):
    """{output tensor name: (role, evidence)} from a TFLite model's TFLITE_METADATA (output
    tensor metadata: content properties, axis-label files, the standard detection names);
    {} when the model has none or it cannot be read."""
    try:
        from edge.tflite_model import TFLiteModel, _Table

        model = TFLiteModel.load(path)
        buf = model.metadata_bytes("TFLITE_METADATA")
        if not buf or len(buf) < 8:
            return {}
        root = _Table(buf, int.from_bytes(buf[:4], "little"))
        subgraphs = root.tables(3)
        if not subgraphs:
            return {}
        metas = subgraphs[0].tables(3)
        outputs = model.outputs()
    except Exception:   # metadata is a hint: a damaged one is no hint, the model still runs
        return {}
    out = {}
    for tensor, meta in zip(outputs, metas):
        try:
            mname = (meta.string(0) or "").strip().lower()
            content = meta.table(3)
            ctype = content.scalar(0, "<B") if content is not None else 0
            files = [f.scalar(2, "<b") for f in meta.tables(6)]
        except Exception:
            continue
        if mname in _SSD_NAMES:
            out[tensor.name] = (_SSD_NAMES[mname], f"TFLite metadata names it '{mname}'")
        elif ctype in _CONTENT:
            role, what = _CONTENT[ctype]
            out[tensor.name] = (role, f"TFLite metadata: {what}")
        elif 2 in files:
            out[tensor.name] = ("class", "TFLite metadata: labels along its axis (TENSOR_AXIS_LABELS)")
        elif 3 in files and ctype != 3:
            out[tensor.name] = ("dense", "TFLite metadata: labels for its values (TENSOR_VALUE_LABELS)")
    return out
