"""Compare a converted model's outputs with its source's: tolerances, statistics, top-k.

Semantics follow Polygraphy's `CompareFunc.simple`:
  absdiff = |converted - source|, reldiff = absdiff / |source| (a 0 in the source gets a tiny
  epsilon, so a relative difference against 0 is huge rather than NaN).
  elemwise: an element fails only when it exceeds BOTH atol and rtol (NaN always fails).
  max | mean | median | quantile: the statistic of absdiff and of reldiff is computed over all
  elements; the output fails only when the abs statistic exceeds atol AND the rel one rtol.
The "required tolerance" is the smallest atol (with rtol ignored) or rtol (with atol ignored)
that would pass with the chosen statistic.

Beyond element-wise checks, for outputs that look like class scores the comparator counts
top-1 agreement and top-k overlap, and for every output the cosine similarity per sample.
A pair of formats is judged in one of two modes:
  "numeric":   float vs float, the tolerance check above decides.
  "agreement": reduced precision (int8, Edge TPU, float16) vs float, judged by top-1
               agreement (classifiers), mean cosine similarity and the ratio of output
               magnitudes (cosine alone cannot see outputs that are all scaled down).
"""

from collections import OrderedDict, namedtuple
from dataclasses import dataclass, field

import numpy as np

from converters.validation.metrics import (  # noqa: F401  (re-exported)
    cosine_per_sample,
    norm_ratio,
    normalize_name,
    topk_agreement,
)

STATS = ("elemwise", "max", "mean", "median", "quantile")
EPSILON = 2.220446049250313e-16

# Defaults per pair of formats (see module docstring).
FLOAT_ATOL = 1e-4
FLOAT_RTOL = 1e-3
MIN_TOP1 = 0.95      # class agreement a user accepts from an int8 / float16 classifier
MIN_COSINE = 0.95
MAX_SCALE_ERROR = 0.25
# A faithful float32 conversion still differs by the runtime's float reassociation (fused
# kernels, another summation order): errors of a few units in the last place of the largest
# values a layer sums, growing with depth. The default atol is therefore at least ROUNDING_ULPS
# float32 ulps of the output's largest magnitude (64 ulps = 7.6e-6 x max|source|); a broken
# conversion (perturbed weights, swapped outputs, wrong layout) misses by far more. An atol
# given on the command line is used as it is.
FLOAT32_EPS = float(np.finfo(np.float32).eps)
ROUNDING_ULPS = 64


@dataclass
class Tolerances:
    """What counts as a match. atol/rtol/check_stat: a value, or {output name: value} with
    the key "" (or a missing name) falling back to the default."""

    atol: object = FLOAT_ATOL
    rtol: object = FLOAT_RTOL
    check_stat: object = "elemwise"
    quantile: float = 0.99
    top_k: int = 5
    min_top1: float = MIN_TOP1
    min_cosine: float = MIN_COSINE
    max_scale_error: float = MAX_SCALE_ERROR   # |norm(converted) / norm(source) - 1|
    mode: str = None                 # None: chosen per pair of formats; "numeric" | "agreement"
    scale_atol: bool = None          # atol at least ROUNDING_ULPS ulps of the output's magnitude;
                                     # None: only while atol is the default
    # output roles (converters/validation/roles.py): {output name: role} given by the user, and
    # the thresholds of the roles' judges (None: the defaults in roles.py)
    roles: dict = None
    min_recall: float = None
    min_precision: float = None
    score_threshold: float = None
    iou: float = None
    label_threshold: float = None
    min_label_agreement: float = None
    min_f1: float = None
    min_pixel_agreement: float = None
    max_range_error: float = None

    def for_output(self, name, what):
        value = getattr(self, what)
        if isinstance(value, dict):
            if name in value:
                return value[name]
            default = Tolerances()
            return value.get("", getattr(default, what))
        return value


def parse_per_output(values, cast=float, what="value"):
    """['1e-3', 'logits:1e-2'] -> {'': 0.001, 'logits': 0.01} (or a plain value when only one
    default is given). Raises ValueError with a readable message."""
    out = {}
    for v in values or []:
        name, sep, val = str(v).rpartition(":")
        try:
            out[name if sep else ""] = cast(val)
        except ValueError:
            raise ValueError(f"invalid {what} '{v}': expected VALUE or OUTPUT:VALUE") from None
    if list(out) == [""]:
        return out[""]
    return out


OutputResult = namedtuple("OutputResult", [
    "name", "converted_name", "passed", "mode", "shape", "note",
    "atol", "rtol", "check_stat",
    "max_abs", "mean_abs", "median_abs", "max_rel", "mean_rel", "median_rel",
    "required_atol", "required_rtol", "mismatched", "elements",
    "cosine", "cosine_min", "norm_ratio", "is_classifier", "top1_agree", "top_k", "top_k_overlap", "samples",
    "reason", "role", "role_evidence", "metrics", "parts", "headline",
], defaults=("raw", "", None, None, ""))
OutputResult.__doc__ = "The comparison of one output over every sample."


def align(reference, other):
    """`other` shaped like `reference`, transposing a channels-last layout when shapes say so.

    Both arrays carry a leading sample axis. Returns (array or None, note).
    """
    rs, os_ = reference.shape, other.shape
    if rs == os_:
        return other, ""
    if other.size == reference.size:
        # the same dimensions in the same order, only size-1 axes added, dropped or moved
        # (onnx2tf's [1, 2, 128] for a [2, 1, 128] state): the same numbers in the same order
        if tuple(d for d in rs if d != 1) == tuple(d for d in os_ if d != 1):
            return other.reshape(rs), f"reshaped {list(os_[1:])} -> {list(rs[1:])}"
        # sample axis + batch + channels: (S, N, C, H, W) vs (S, N, H, W, C), or 3-D (S, N, C, L)
        if len(rs) == len(os_) and len(rs) >= 4:
            last_first = (0, 1, len(rs) - 1) + tuple(range(2, len(rs) - 1))
            first_last = (0, 1) + tuple(range(3, len(rs))) + (2,)
            if tuple(os_[i] for i in last_first) == rs:
                return other.transpose(last_first), "channels-last -> channels-first"
            if tuple(os_[i] for i in first_last) == rs:
                return other.transpose(first_last), "channels-first -> channels-last"
    return None, f"shapes differ: {list(rs[1:])} vs {list(os_[1:])}"


def looks_like_classifier(shape):
    """Class scores: (1, N) or (N,) with N >= 2 (a batch of one)."""
    dims = [d for d in shape if d != 1]
    return len(dims) == 1 and dims[0] >= 2 and len(shape) <= 2


def _stat(diff, stat, quantile):
    if diff.size == 0:
        return 0.0
    if stat in ("max", "elemwise"):
        return float(np.max(diff))
    if stat == "mean":
        return float(np.mean(diff))
    if stat == "median":
        return float(np.median(diff))
    if stat == "quantile":
        return float(np.quantile(diff, quantile))
    raise ValueError(f"unknown statistic '{stat}'")


def _failed(value, tol):
    return bool(np.isnan(value) or value > tol)


def diffs(reference, converted):
    """(absdiff, reldiff) as float64 arrays, reldiff relative to the reference (source)."""
    ref = reference.astype(np.float64)
    absdiff = np.abs(converted.astype(np.float64) - ref)
    denom = np.abs(ref)
    denom[denom == 0] = EPSILON
    return absdiff, absdiff / denom


def tolerance_check(reference, converted, atol, rtol, check_stat="elemwise", quantile=0.99):
    """Polygraphy's pass/fail for one output: (passed, mismatched elements, stats dict)."""
    if check_stat not in STATS:
        raise ValueError(f"unknown statistic '{check_stat}', choose one of {', '.join(STATS)}")
    absdiff, reldiff = diffs(reference, converted)
    stats = {
        "max_abs": _stat(absdiff, "max", quantile), "mean_abs": _stat(absdiff, "mean", quantile),
        "median_abs": _stat(absdiff, "median", quantile),
        "max_rel": _stat(reldiff, "max", quantile), "mean_rel": _stat(reldiff, "mean", quantile),
        "median_rel": _stat(reldiff, "median", quantile),
    }
    if check_stat == "elemwise":
        bad = ((absdiff > atol) | np.isnan(absdiff)) & ((reldiff > rtol) | np.isnan(reldiff))
        mismatched = int(np.count_nonzero(bad))
        passed = mismatched == 0
    else:
        a, r = _stat(absdiff, check_stat, quantile), _stat(reldiff, check_stat, quantile)
        passed = not (_failed(a, atol) and _failed(r, rtol))
        mismatched = int(np.count_nonzero((absdiff > atol) & (reldiff > rtol)))
    stats["required_atol"] = _stat(absdiff, check_stat, quantile)
    stats["required_rtol"] = _stat(reldiff, check_stat, quantile)
    return passed, mismatched, stats


# roles whose own judge decides in agreement mode; the others also need the whole output's
# cosine and magnitude (a packed detector's cosine is carried by its box rows and hides its
# score rows, a per-step or per-label verdict is not a cosine)
_COSINE_ROLES = ("class", "raw", "embedding", "dense")


def compare_output(name, reference, converted, tolerances, mode="numeric", converted_name=None,
                   classifier=None, role=None):
    """Compare one output over all samples.

    Args:
      reference / converted: arrays with a leading sample axis (S, ...), the source's first.
      tolerances: Tolerances. mode: "numeric" or "agreement" (see module docstring).
      classifier: force (True/False) or guess (None) whether the output is class scores.
      role: roles.Role of the output (None: inferred from its name, shape and values).
    Returns:
      OutputResult.
    """
    from converters.validation import roles as _roles

    reference = np.asarray(reference)
    converted = np.asarray(converted)
    rtol = float(tolerances.for_output(name, "rtol"))
    stat = tolerances.for_output(name, "check_stat")
    k = int(tolerances.top_k)
    aligned, note = align(reference, converted)
    atol, note = _output_atol(name, reference, tolerances, note)
    role = _output_role(name, reference, classifier, role)
    base = dict(name=name, converted_name=converted_name or name, mode=mode, note=note,
                shape=list(reference.shape[1:]), atol=atol, rtol=rtol, check_stat=stat,
                samples=int(len(reference)), top_k=k, role=role.kind, role_evidence=role.evidence)
    if aligned is None:
        return _unaligned(base, reference, converted, note)
    ok, mismatched, stats = tolerance_check(reference, aligned, atol, rtol, stat, tolerances.quantile)
    cos, ratio = _similarity(reference, aligned, base, atol)
    is_cls = role.kind == "class"
    top1 = overlap = None
    if is_cls:
        top1, overlap = topk_agreement(reference, aligned, k)
    verdict = _roles.judge(role, reference, aligned, tolerances)
    if mode == "agreement":
        reasons = list(verdict.reasons) + _agreement_reasons(role, cos, ratio, tolerances)
        passed = not reasons
        reason = "; ".join(reasons)
    else:
        passed = ok
        reason = "" if ok else (
            f"{mismatched}/{reference.size} elements exceed atol {atol:g} and rtol {rtol:g}"
            if stat == "elemwise" else
            f"{stat} abs error {stats['required_atol']:.3g} > atol {atol:g} and "
            f"{stat} rel error {stats['required_rtol']:.3g} > rtol {rtol:g}")
    return OutputResult(**base, passed=passed, **stats, mismatched=mismatched,
                        elements=int(reference.size), cosine=float(np.mean(cos)),
                        cosine_min=float(np.min(cos)), norm_ratio=ratio, is_classifier=bool(is_cls),
                        top1_agree=top1, top_k_overlap=overlap, reason=reason,
                        metrics=verdict.metrics, parts=verdict.parts, headline=verdict.headline)


def _output_atol(name, reference, tolerances, note):
    """(atol, note): the output's atol, raised to float32 rounding of its largest value when
    the user left atol at its default."""
    atol = float(tolerances.for_output(name, "atol"))
    scale = getattr(tolerances, "scale_atol", None)
    if scale is None:
        scale = not isinstance(tolerances.atol, dict) and tolerances.atol == FLOAT_ATOL
    if scale and reference.size and np.issubdtype(reference.dtype, np.floating):
        peak = float(np.nanmax(np.abs(reference))) if np.isfinite(reference).any() else 0.0
        floor = ROUNDING_ULPS * FLOAT32_EPS * peak
        if floor > atol:
            atol = floor
            note = "; ".join(x for x in (note, f"atol {floor:.3g} = {ROUNDING_ULPS} float32 ulps of "
                                         f"the output's largest value {peak:.3g} (float rounding)") if x)
    return atol, note


def _output_role(name, reference, classifier, role):
    """The role given, else class scores when `classifier`, else inferred (roles.infer_role);
    never class scores when `classifier` is False."""
    from converters.validation import roles as _roles

    if role is not None:
        return role
    role = (_roles.Role("class", "given as class scores") if classifier else
            _roles.infer_role(name, reference))
    if classifier is False and role.kind == "class":
        role = _roles.Role("raw", "not class scores (given)")
    return role


def _unaligned(base, reference, converted, note):
    """The result of an output whose shape cannot be aligned with the source's: failed."""
    nan = float("nan")
    return OutputResult(**base, passed=False, max_abs=nan, mean_abs=nan, median_abs=nan,
                        max_rel=nan, mean_rel=nan, median_rel=nan, required_atol=nan,
                        required_rtol=nan, mismatched=int(converted.size),
                        elements=int(reference.size), cosine=nan, cosine_min=nan,
                        norm_ratio=nan, is_classifier=False, top1_agree=None, top_k_overlap=None,
                        reason=note)


def _similarity(reference, aligned, base, atol=0.0):
    """(cosine per sample, norm ratio); over all samples' values together for an output of one
    value per sample (said in base['note']). A sample whose values are all within `atol` of
    zero on both sides (a segmentation map of pure background, below 1e-8) has no direction:
    its cosine would be float noise, so it counts as agreeing, as an all-zero pair does, and
    is left out of the magnitude ratio (said in the note)."""
    if reference.size != len(reference) and len(reference) > 0:
        r = np.abs(reference.reshape(len(reference), -1).astype(np.float64))
        c = np.abs(aligned.reshape(len(aligned), -1).astype(np.float64))
        flat = (np.nanmax(r, axis=1) <= atol) & (np.nanmax(c, axis=1) <= atol)
        if flat.all():
            base["note"] = "; ".join(x for x in (base["note"], (
                f"every sample within atol {atol:g} of zero on both sides: cosine taken as 1")) if x)
            return np.ones(len(flat)), 1.0
        if flat.any():
            base["note"] = "; ".join(x for x in (base["note"], (
                f"{int(flat.sum())} of {len(flat)} samples within atol {atol:g} of zero on both "
                "sides: no direction to compare, cosine taken as 1")) if x)
            cos = cosine_per_sample(reference, aligned)
            cos[flat] = 1.0
            return cos, norm_ratio(reference[~flat], aligned[~flat])
    if reference.size == len(reference) > 1:
        # one value per sample (a detector's score): a scalar's cosine is only its sign, and a
        # score below the int8 step (1/256) becoming 0 would count as cosine 0 and magnitude 0;
        # the samples' values are compared as one vector instead
        base["note"] = "; ".join(x for x in (base["note"], "one value per sample: cosine and "
                                             "magnitude over all samples' values") if x)
        return (cosine_per_sample(reference.reshape(1, -1), aligned.reshape(1, -1)),
                norm_ratio(reference.reshape(1, -1), aligned.reshape(1, -1)))
    return cosine_per_sample(reference, aligned), norm_ratio(reference, aligned)


def _agreement_reasons(role, cos, ratio, tolerances):
    """Why an output judged by agreement fails on cosine or magnitude ([] when it does not)."""
    reasons = []
    if role.kind in _COSINE_ROLES:
        if not float(np.mean(cos)) >= tolerances.min_cosine:
            reasons.append(f"cosine {float(np.mean(cos)):.4f} below {tolerances.min_cosine}")
        if not abs(ratio - 1) <= tolerances.max_scale_error:
            reasons.append(f"output magnitude {ratio:.3g}x the source's (allowed 1 +- "
                           f"{tolerances.max_scale_error:g})")
    return reasons


def match_names(reference_names, other_names, other_synthetic=False, reference_synthetic=False):
    """Pair each reference name with one of `other_names`: by name, else by position.

    Returns (list of (ref_name, other_name or None), warnings).
    """
    pairs, warnings = [], []
    remaining = list(other_names)
    unmatched = []
    exact = {n: n for n in other_names}
    loose = {}
    for n in other_names:
        loose.setdefault(normalize_name(n), n)
    for i, r in enumerate(reference_names):
        o = exact.get(r) if r in remaining else None
        if o is None:
            cand = loose.get(normalize_name(r))
            o = cand if cand in remaining else None
        if o is None or reference_synthetic or other_synthetic:
            unmatched.append(i)
            pairs.append([r, None])
            continue
        remaining.remove(o)
        pairs.append([r, o])
    # whatever is left: by position among the unmatched
    by_position = []
    for i in unmatched:
        r = reference_names[i]
        pos = list(reference_names).index(r)
        o = other_names[pos] if pos < len(other_names) and other_names[pos] in remaining else (
            remaining[0] if remaining else None)
        if o is not None:
            remaining.remove(o)
            by_position.append((r, o))
        pairs[i][1] = o
    if by_position and not (reference_synthetic or other_synthetic) and len(reference_names) > 1:
        warnings.append("outputs matched by position, not by name: "
                        + ", ".join(f"{r} <-> {o}" for r, o in by_position))
    return [tuple(p) for p in pairs], warnings


@dataclass
class PairResult:
    """Every output of one converted model compared with the source."""

    outputs: list = field(default_factory=list)    # OutputResult
    warnings: list = field(default_factory=list)
    mode: str = "numeric"

    @property
    def passed(self):
        return bool(self.outputs) and all(o.passed for o in self.outputs)


def compare_runs(reference_outputs, converted_outputs, tolerances, mode="numeric",
                 reference_synthetic=False, converted_synthetic=False, classifier=None,
                 role_hints=None, input_hw=None):
    """Compare two runs.

    Args:
      reference_outputs / converted_outputs: OrderedDict name -> array with a leading sample
        axis (the per-sample outputs stacked), the source's first.
      classifier: True when the model carries class labels (its one output is class scores).
      role_hints: {output name: role} from the model's metadata; tolerances.roles (the
        user's --output-role) wins over them, and both over inference.
      input_hw: the source's image input size (H, W), where it has one (a raw YOLOX
        head's anchors are the cells of its grids).
    Returns:
      PairResult.
    """
    ref_names = list(reference_outputs)
    conv_names = list(converted_outputs)
    pairs, warnings = match_names(ref_names, conv_names, converted_synthetic, reference_synthetic)
    if len(ref_names) != len(conv_names):
        warnings.append(f"the source has {len(ref_names)} outputs, the converted model "
                        f"{len(conv_names)}")
    roles = _roles_of(reference_outputs, converted_outputs, pairs, tolerances, role_hints,
                      classifier, input_hw, warnings)
    result = PairResult(warnings=warnings, mode=mode)
    for r, o in pairs:
        if o is None:
            result.outputs.append(_missing_output(r, reference_outputs[r], roles[r], mode, tolerances))
            continue
        result.outputs.append(compare_output(r, reference_outputs[r], converted_outputs[o],
                                             tolerances, mode, converted_name=o,
                                             classifier=classifier, role=roles[r]))
    return result


def _roles_of(reference_outputs, converted_outputs, pairs, tolerances, role_hints, classifier,
              input_hw, warnings):
    """{output: Role} of the source's outputs (--output-role, then the model's metadata, then
    inference), a detector's companion outputs attached from both runs; a --output-role name
    that is no output is a warning."""
    from converters.validation.roles import infer_roles

    given = getattr(tolerances, "roles", None) or {}
    ref_names = list(reference_outputs)
    roles = infer_roles(reference_outputs, overrides=given, hints=role_hints,
                        labels=classifier is True, input_hw=input_hw)
    known = {normalize_name(r) for r in ref_names}
    unknown = sorted(n for n in given if n not in ref_names and normalize_name(n) not in known)
    if unknown:
        warnings.append(f"--output-role names no output of the source: {', '.join(unknown)} "
                        f"(outputs: {', '.join(ref_names)})")
    converted_of = dict(pairs)
    for name, role in list(roles.items()):
        if role.kind == "detection-nms" and role.params:   # its companions, from both runs
            arrays = {}
            for key in ("scores", "classes", "count"):
                ref_name = role.params.get(key)
                if ref_name:
                    conv_name = converted_of.get(ref_name)
                    arrays[key] = (reference_outputs[ref_name],
                                   converted_outputs[conv_name] if conv_name else None)
            roles[name] = role._replace(params=dict(role.params, arrays=arrays))
    return roles


def _missing_output(name, reference, role, mode, tolerances):
    """The failed result of a source output the converted model does not have."""
    nan = float("nan")
    return OutputResult(
        name=name, converted_name=None, passed=False, mode=mode, shape=list(np.shape(reference)[1:]),
        note="", atol=nan, rtol=nan, check_stat="", max_abs=nan, mean_abs=nan, median_abs=nan,
        max_rel=nan, mean_rel=nan, median_rel=nan, required_atol=nan, required_rtol=nan,
        mismatched=0, elements=0, cosine=nan, cosine_min=nan, norm_ratio=nan, is_classifier=False,
        top1_agree=None, top_k=tolerances.top_k, top_k_overlap=None, samples=len(reference),
        reason="no matching output in the converted model", role=role.kind,
        role_evidence=role.evidence)


def stack_samples(runs):
    """[OrderedDict name -> array per sample] -> OrderedDict name -> array (S, ...)."""
    out = OrderedDict()
    if not runs:
        return out
    for name in runs[0]:
        out[name] = np.stack([np.asarray(r[name]) for r in runs])
    return out
