"""Tolerance and statistic semantics against hand-computed cases (Polygraphy's rules)."""

from collections import OrderedDict

import numpy as np
import pytest

from converters.validation.comparator import (
    Tolerances,
    align,
    compare_output,
    compare_runs,
    cosine_per_sample,
    match_names,
    norm_ratio,
    parse_per_output,
    tolerance_check,
    topk_agreement,
)

# Exactly representable values: absdiff = [0.25, 0, 0.0625, 0.5]
# reldiff (relative to the source) = [0.25, 0, 0.0625 / eps (huge), 0.0625]
REF = np.array([[1.0, 2.0, 0.0, 8.0]])
OUT = np.array([[1.25, 2.0, 0.0625, 8.5]])


def check(atol, rtol, stat="elemwise", q=0.99):
    return tolerance_check(REF, OUT, atol, rtol, stat, q)


def test_elemwise_fails_only_when_both_tolerances_are_exceeded():
    passed, mismatched, _ = check(0.1, 0.1)
    assert not passed and mismatched == 1          # only element 0 exceeds both
    assert check(0.25, 0.1)[0]                     # element 0 now within atol
    assert check(0.1, 0.25)[0]                     # element 0 now within rtol
    passed, mismatched, _ = check(0.01, 0.01)
    assert not passed and mismatched == 3          # elements 0, 2 and 3


def test_relative_error_is_relative_to_the_source_with_epsilon_for_zero():
    _, _, s = check(1, 1)
    assert s["max_abs"] == 0.5
    assert s["max_rel"] == pytest.approx(0.0625 / 2.220446049250313e-16)
    # swapping the roles changes the relative error of element 3: 0.5 / 8.5
    _, _, s2 = tolerance_check(OUT, REF, 1, 1)
    assert s2["max_rel"] == pytest.approx(1.0)    # element 2: 0.0625 / 0.0625


def test_mean_median_max_quantile_statistics():
    _, _, s = check(1, 1, "mean")
    assert s["mean_abs"] == pytest.approx(0.203125)
    assert s["median_abs"] == pytest.approx(0.15625)
    assert check(0.21, 1e-9, "mean")[0]            # mean abs 0.203 <= 0.21
    assert not check(0.2, 0.1, "mean")[0]          # mean abs and mean rel both too big
    # median rel = (0.0625 + 0.25) / 2 = 0.15625
    assert check(0.15, 0.16, "median")[0]
    assert not check(0.15, 0.15, "median")[0]
    assert check(0.15, 0.16, "quantile", 0.5)[0]   # the 0.5 quantile is the median
    assert not check(0.15, 0.15, "quantile", 0.5)[0]
    assert check(0.5, 0, "max")[0]
    assert not check(0.49, 1.0, "max")[0]
    assert check(0.49, 1e20, "max")[0]


def test_required_tolerance_follows_the_statistic():
    assert check(0, 0)[2]["required_atol"] == 0.5
    assert check(0, 0, "mean")[2]["required_atol"] == pytest.approx(0.203125)
    assert check(0, 0, "median")[2]["required_rtol"] == pytest.approx(0.15625)


def test_nan_always_fails():
    out = OUT.copy()
    out[0, 1] = np.nan
    passed, mismatched, _ = tolerance_check(REF, out, 1e9, 1e9)
    assert not passed and mismatched == 1
    assert not tolerance_check(REF, out, 1e9, 1e9, "mean")[0]


def test_unknown_statistic_is_refused():
    with pytest.raises(ValueError):
        check(1, 1, "average")


def test_align_transposes_channels_last_only_when_shapes_say_so():
    ref = np.arange(24.0).reshape(1, 1, 4, 2, 3)            # sample, N, C, H, W
    nhwc = ref.transpose(0, 1, 3, 4, 2)                     # sample, N, H, W, C
    got, note = align(ref, nhwc)
    assert np.array_equal(got, ref) and "channels-last" in note
    back, note = align(nhwc, ref)
    assert np.array_equal(back, nhwc) and "channels-first" in note
    # a plain reshape of the same numbers is not a layout: values differ after alignment
    wrong, _ = align(ref, ref.reshape(1, 1, 2, 3, 4))
    assert wrong is not None and not np.array_equal(wrong, ref)
    assert align(ref, np.zeros((1, 5)))[0] is None
    flat, note = align(np.zeros((2, 1, 10)), np.ones((2, 10)))
    assert flat.shape == (2, 1, 10) and "reshaped" in note
    # a size-1 axis moved (onnx2tf's [1, 2, 128] state for [2, 1, 128]): same numbers, same order
    state = np.arange(512.0).reshape(1, 2, 1, 256)
    moved, note = align(state, state.reshape(1, 1, 2, 256))
    assert np.array_equal(moved, state) and "reshaped" in note
    assert align(state, state.reshape(1, 1, 256, 2))[0] is None    # not the same order: refused


def test_cosine_topk_and_magnitude():
    assert cosine_per_sample(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))[0] == pytest.approx(0)
    assert cosine_per_sample(np.array([[1.0, 1.0]]), np.array([[2.0, 2.0]]))[0] == pytest.approx(1)
    assert cosine_per_sample(np.zeros((1, 3)), np.zeros((1, 3)))[0] == 1.0
    a = np.array([[0.1, 0.5, 0.2, 0.9]])
    b = np.array([[0.1, 0.9, 0.2, 0.5]])
    assert topk_agreement(a, b, 1) == (0, 0.0)
    assert topk_agreement(a, b, 2) == (0, 1.0)
    assert topk_agreement(a, a, 3) == (1, 1.0)
    assert norm_ratio(np.array([[3.0, 4.0]]), np.array([[6.0, 8.0]])) == pytest.approx(2.0)


def test_one_score_per_sample_is_compared_across_samples():
    """A wake-word score ([1, 1] per sample): int8 turns scores below its step (1/256) into 0,
    which per-sample cosine would call a total mismatch; across the samples it agrees, and
    scores that no longer follow the source still fail."""
    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.uniform(0, 0.003, 90), rng.uniform(0.6, 1.0, 10)]).reshape(100, 1, 1)
    int8 = np.round(ref * 256) / 256
    ok = compare_output("score", ref, int8, Tolerances(), "agreement")
    assert ok.passed and ok.cosine > 0.99 and "one value per sample" in ok.note, ok.reason
    shuffled = compare_output("score", ref, int8[rng.permutation(100)], Tolerances(), "agreement")
    assert not shuffled.passed and "cosine" in shuffled.reason
    quiet = compare_output("score", ref, int8 * 0.5, Tolerances(), "agreement")
    assert not quiet.passed and "magnitude" in quiet.reason


def test_agreement_mode_uses_top1_cosine_and_magnitude():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(20, 1, 10))
    tol = Tolerances()
    ok = compare_output("p", ref, ref + 0.01 * rng.normal(size=ref.shape), tol, "agreement")
    assert ok.passed and ok.is_classifier and ok.top1_agree >= 18
    shuffled = compare_output("p", ref, ref[::-1], tol, "agreement")
    assert not shuffled.passed and "top-1 agreement" in shuffled.reason
    scaled = compare_output("p", ref, ref * 0.1, tol, "agreement")
    assert scaled.cosine == pytest.approx(1.0) and scaled.top1_agree == 20
    assert not scaled.passed and "magnitude" in scaled.reason
    lenient = compare_output("p", ref, ref * 0.1, Tolerances(max_scale_error=1.0), "agreement")
    assert lenient.passed


def test_match_names_by_name_then_position():
    pairs, warnings = match_names(["a", "b"], ["b", "a"])
    assert pairs == [("a", "a"), ("b", "b")] and not warnings
    pairs, warnings = match_names(["x", "y"], ["p", "q"])
    assert pairs == [("x", "p"), ("y", "q")] and "position" in warnings[0]
    pairs, _ = match_names(["image"], ["serving_default_image:0"])
    assert pairs == [("image", "serving_default_image:0")]
    pairs, warnings = match_names(["output_0", "output_1"], ["b", "a"], reference_synthetic=True)
    assert pairs == [("output_0", "b"), ("output_1", "a")] and not warnings


def test_compare_runs_swapped_and_missing_outputs():
    a, b = np.ones((3, 1, 4)), np.zeros((3, 1, 4))
    ref = OrderedDict(a=a, b=b)
    assert compare_runs(ref, OrderedDict(b=b, a=a), Tolerances()).passed
    swapped = compare_runs(ref, OrderedDict(a=b, b=a), Tolerances())
    assert not swapped.passed and [o.passed for o in swapped.outputs] == [False, False]
    missing = compare_runs(ref, OrderedDict(a=a), Tolerances())
    assert not missing.passed and missing.outputs[1].reason.startswith("no matching output")


def test_per_output_tolerances():
    assert parse_per_output(["1e-3"]) == 0.001
    tol = Tolerances(atol=parse_per_output(["1e-3", "logits:0.5"]))
    assert tol.for_output("logits", "atol") == 0.5 and tol.for_output("other", "atol") == 0.001
    with pytest.raises(ValueError):
        parse_per_output(["logits:abc"])
    ref = OrderedDict(logits=np.zeros((1, 4)), feat=np.zeros((1, 4)))
    out = OrderedDict(logits=np.full((1, 4), 0.25), feat=np.full((1, 4), 0.25))
    res = compare_runs(ref, out, Tolerances(atol={"": 1e-3, "logits": 0.3}, rtol=0.0))
    assert [o.passed for o in res.outputs] == [True, False]


def test_default_atol_follows_float_rounding_of_the_output_magnitude():
    """A faithful float conversion of an output in the hundreds differs by float
    reassociation (here ~4.7e-4, as onnxruntime's ORT format gave an audio model): it passes
    with the default tolerances; perturbed weights, swapped outputs and a wrong layout fail."""
    from converters.validation.comparator import ROUNDING_ULPS, compare_output

    rng = np.random.default_rng(0)
    ref = (rng.standard_normal((4, 16, 32)) * 200).astype(np.float32)
    ref[:, 0, :4] = 1e-3  # small values beside large ones: rtol cannot save them
    faithful = ref + rng.uniform(-4.7e-4, 4.7e-4, ref.shape).astype(np.float32)
    r = compare_output("mel", ref, faithful, Tolerances())
    assert r.passed, r.reason
    assert r.atol == pytest.approx(ROUNDING_ULPS * np.finfo(np.float32).eps * np.abs(ref).max())
    assert "float32 ulps" in r.note
    # an explicit atol is used as it is
    assert not compare_output("mel", ref, faithful, Tolerances(atol=1e-4, scale_atol=False)).passed
    perturbed = ref * (1 + 0.01 * rng.standard_normal(ref.shape)).astype(np.float32)
    assert not compare_output("mel", ref, perturbed, Tolerances()).passed
    swapped = ref[::-1].copy()
    assert not compare_output("mel", ref, swapped, Tolerances()).passed
    wrong_layout = ref.transpose(0, 2, 1).reshape(ref.shape)
    assert not compare_output("mel", ref, wrong_layout, Tolerances()).passed
    # small outputs keep the plain default atol
    small = ref / 1e4
    assert compare_output("x", small, small + 2e-4, Tolerances()).atol == Tolerances().atol


@pytest.mark.parametrize("seed", range(12))
def test_a_sample_within_atol_of_zero_has_no_direction_to_fail_on(seed):
    """A segmentation map of pure background (values ~1e-9 on both sides) has a cosine of float
    noise: it must not fail an artefact whose every other sample agrees, in either mode; but a
    sample that is near zero in the source and not in the artefact, or a real map that differs,
    still fails. Generated: sample count, position of the flat samples, map size and role."""
    from converters.validation.roles import Role

    rng = np.random.default_rng(seed)
    n, h = int(rng.integers(3, 9)), int(rng.integers(8, 33))
    ref = rng.random((n, h, h, 1)).astype(np.float32)
    flat = rng.choice(n, size=int(rng.integers(1, n)), replace=False)
    ref[flat] = rng.normal(0, 1e-9, (len(flat), h, h, 1))
    out = ref + rng.normal(0, 1e-6, ref.shape).astype(np.float32)
    out[flat] = rng.normal(0, 1e-9, (len(flat), h, h, 1))          # noise against noise
    role = Role("dense" if seed % 2 else "raw", "given")
    for mode in ("agreement", "numeric"):
        r = compare_output("seg", ref, out, Tolerances(), mode=mode, role=role)
        assert r.passed, (mode, r.reason)
        assert r.cosine == pytest.approx(1.0, abs=1e-3)
        assert "no direction to compare" in r.note or "every sample" in r.note
    lit = out.copy()
    lit[flat[0]] = 0.5                                               # the artefact lights it up
    assert not compare_output("seg", ref, lit, Tolerances(), mode="agreement", role=role).passed
    real = [i for i in range(n) if i not in set(flat)][0]
    broken = out.copy()
    broken[real] = rng.random((h, h, 1))                             # a real map that differs
    assert not compare_output("seg", ref, broken, Tolerances(), mode="numeric", role=role).passed


def test_every_sample_within_atol_of_zero_agrees():
    ref = np.full((3, 4, 4, 1), 1e-9, np.float32)
    out = -ref
    r = compare_output("seg", ref, out, Tolerances(), mode="agreement")
    assert r.passed and r.cosine == 1.0, r.reason
