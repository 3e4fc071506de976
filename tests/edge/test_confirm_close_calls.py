"""Confirm close calls: a photo decoded on the fast (draft) path is also classified on a
second resampling of the same draft; when the two disagree (decode_noise_call) it is decoded
again exactly and classified again; a photo whose two resamplings agree keeps the fast answer,
however small its lead; results stay in input order; --json says which decode answered."""

import json

import numpy as np
import pytest
from PIL import Image

from edge import classify as classify_mod
from edge.classify import Classifier, classify_images, decode_noise_call
from edge.preprocess import list_images, set_exact_decode

N = 10  # classes of the fake model
FAST, VARIANT, EXACT = 100, 150, 200  # the grey level of each decode of a test photo


@pytest.fixture(autouse=True)
def _fast_decode():
    set_exact_decode(False)
    yield
    set_exact_decode(False)


class FakeInterpreter:
    """A classifier whose output depends on the input's mean grey level: the fast decode, its
    variant and the exact decode of a test photo differ in that level (FAST, VARIANT, EXACT),
    and `scores[level]` holds each one's output vector. Counts its invocations."""

    def __init__(self, scores, dtype=np.uint8, scale=1 / 256):
        self.scores = scores
        self.dtype = dtype
        self.scale = scale
        self.x = None
        self.invocations = 0

    def get_input_details(self):
        return [{"index": 0, "name": "x", "shape": np.array([1, 8, 8, 3]), "dtype": np.uint8,
                 "quantization": (1 / 128, 128)}]

    def get_output_details(self):
        quant = (self.scale, 0) if self.dtype == np.uint8 else (0.0, 0)
        return [{"index": 1, "name": "y", "shape": np.array([1, N]), "dtype": self.dtype,
                 "quantization": quant}]

    def set_tensor(self, index, x):
        self.x = x

    def invoke(self):
        self.invocations += 1

    def get_tensor(self, index):
        level = int(round(float(np.mean(self.x))))  # raw uint8 input: the pixel level
        return np.asarray(self.scores[level], self.dtype)[None]


def vector(top, lead, second=None, dtype=np.uint8, base=100):
    """Scores with class `top` first, leading class `second` (default top+1) by `lead`."""
    second = (top + 1) % N if second is None else second
    v = np.full(N, 10 if dtype == np.uint8 else 0.01, np.float64)
    v[second] = base
    v[top] = base + lead
    return v


def level(value):
    return np.full((8, 8, 3), value, np.uint8)


@pytest.fixture
def fake_decode(monkeypatch):
    """The decodes replaced: every photo named *draft* decodes drafted to FAST with a variant
    at VARIANT (exact: EXACT); others decode exactly (EXACT, no variant). Records the exact
    re-decodes."""
    calls = []

    def load_variants(self, path):
        drafted = "draft" in str(path).rsplit("/", 1)[-1]
        return (level(FAST), level(VARIANT)) if drafted else (level(EXACT), None)

    def load_decoded(self, path, exact=None):
        drafted = "draft" in str(path).rsplit("/", 1)[-1] and not exact
        return level(FAST if drafted else EXACT), drafted

    def load_exact(self, path):
        calls.append(str(path).rsplit("/", 1)[-1])
        return level(EXACT)

    from edge import preprocess

    monkeypatch.setattr(preprocess.Preprocessor, "load_variants", load_variants)
    monkeypatch.setattr(preprocess.Preprocessor, "load_decoded", load_decoded)
    monkeypatch.setattr(preprocess.Preprocessor, "load_exact", load_exact)
    return calls


def make_classifier(fast, variant, exact, **kw):
    interp = FakeInterpreter({FAST: fast, VARIANT: variant, EXACT: exact}, **kw)
    return Classifier(interp, layout="NHWC"), interp


def noise_cases():
    """Generated (first, second, k, expected): the variant's top-1 elsewhere (always a call),
    the same top-1 with the lead moved by `move` (a call exactly when lead <= k * move), and
    ties. Quantized integers and the same outputs scaled as floats."""
    rng = np.random.default_rng(1)
    cases = []
    for _ in range(60):
        top, other = rng.choice(N, 2, replace=False)
        lead = int(rng.integers(0, 40))
        a = vector(int(top), lead)
        b = vector(int(other), int(rng.integers(1, 40)))
        cases.append((a, b, float(rng.choice([0, 1, 2])), True))
        move = int(rng.integers(0, 30))
        b = vector(int(top), lead + move)
        for k in (0.0, 1.0, 2.5):
            cases.append((a, b, k, lead <= k * move))
    return cases


@pytest.mark.parametrize("scale", [1.0, 1 / 256, 0.07])
def test_decode_noise_call_generated(scale):
    for a, b, k, want in noise_cases():
        assert decode_noise_call(a * scale, b * scale, k) is want, (a, b, k)


def test_decode_noise_call_is_not_a_lead_threshold():
    """A lead of 1 step that the variant does not move is no call; a lead of 36 steps that the
    variant overturns is one (the old fixed threshold had these the other way round)."""
    assert decode_noise_call(vector(3, 1), vector(3, 1)) is False
    assert decode_noise_call(vector(3, 36), vector(5, 2)) is True
    assert decode_noise_call(vector(3, 0), vector(3, 0)) is True  # a tie: the answer is arbitrary


@pytest.mark.parametrize("other", [0, 2, 4, 9])
def test_decode_noise_call_variant_tie(other):
    """The variant ties the fast top-1 with another class, whichever index it has: a call;
    the fast path's own runner-up, whichever it is, does not change the verdict."""
    assert decode_noise_call(vector(3, 8), vector(3, 0, second=other)) is True
    assert decode_noise_call(vector(3, 8, second=other), vector(3, 8)) is False


@pytest.mark.parametrize("count", [1, 3])
def test_variants_disagree_decoded_again_exactly(fake_decode, count):
    clf, interp = make_classifier(vector(3, 40), vector(5, 40), vector(7, 40))
    [r] = classify_images(clf, ["draft_a.jpg"], count=count, k=1)
    assert fake_decode == ["draft_a.jpg"]
    assert r.decode == "draft, confirmed exact"
    assert r.classes[0].id == 7  # the exact decode's answer
    assert interp.invocations == 1 + 2 * count and len(r.times_ms) == count


@pytest.mark.parametrize("lead", [1, 2, 5, 50, 150])
def test_stable_photo_keeps_the_fast_answer(fake_decode, lead):
    """The variant ranks the same top-1 and moves the lead (k = 0): no exact decode, however
    small the lead."""
    clf, interp = make_classifier(vector(3, lead), vector(3, lead + 3), vector(7, 40))
    [r] = classify_images(clf, ["draft_a.jpg"], k=2)
    assert fake_decode == []
    assert r.decode == "draft" and r.classes[0].id == 3 and r.classes[1].id == 4
    assert interp.invocations == 2


def test_confirm_k_widens_the_call(fake_decode):
    clf, _ = make_classifier(vector(3, 4), vector(3, 8), vector(7, 40))
    assert classify_images(clf, ["draft_a.jpg"])[0].decode == "draft"
    [r] = classify_images(clf, ["draft_a.jpg"], confirm_k=1.0)  # lead 4 <= 1 * |4 - 8|
    assert r.decode == "draft, confirmed exact" and r.classes[0].id == 7


def test_exact_decodes_are_never_confirmed(fake_decode):
    clf, interp = make_classifier(vector(3, 0), vector(5, 0), vector(7, 0))  # a tie, exact already
    [r] = classify_images(clf, ["plain.png"])
    assert fake_decode == [] and r.decode == "exact" and interp.invocations == 1


def test_confirm_off_keeps_the_fast_answer(fake_decode):
    clf, interp = make_classifier(vector(3, 0), vector(5, 40), vector(7, 40))
    [r] = classify_images(clf, ["draft_a.jpg"], confirm=False)
    assert fake_decode == [] and r.decode == "draft" and r.classes[0].id == 3
    assert interp.invocations == 1  # no variant run either


def test_float_scores(fake_decode):
    fast = vector(3, 0.2, dtype=np.float32, base=0.3)
    clf, _ = make_classifier(fast, vector(5, 0.2, dtype=np.float32, base=0.3),
                             vector(7, 0.3, dtype=np.float32, base=0.2), dtype=np.float32)
    assert classify_images(clf, ["draft_a.jpg"])[0].classes[0].id == 7
    clf, _ = make_classifier(fast, vector(3, 0.25, dtype=np.float32, base=0.3),
                             vector(7, 0.3, dtype=np.float32, base=0.2), dtype=np.float32)
    [r] = classify_images(clf, ["draft_a.jpg"])
    assert r.decode == "draft" and r.classes[0].id == 3


@pytest.mark.parametrize("workers", [None, 0, 1, 3])
def test_folder_order_kept_with_confirmations(tmp_path, fake_decode, workers):
    """Generated folder: photos whose variants disagree and stable ones mixed, decoded on
    worker threads (the exact decodes on a thread of their own) or inline; the results come
    back in file order, each with its own decode and answer."""
    rng = np.random.default_rng(0)
    names, want = [], []
    for i in range(24):
        unstable = bool(rng.random() < 0.4)
        name = f"p{i:02d}_draft.jpg" if rng.random() < 0.8 else f"p{i:02d}_plain.jpg"
        names.append(name)
        Image.new("RGB", (4, 4)).save(tmp_path / name)
        want.append(("draft, confirmed exact" if unstable else "draft")
                     if "draft" in name else "exact")
    # each photo's fast answer is its own (index % 9), set as it reaches the interpreter;
    # its variant agrees unless it is to be confirmed
    order = iter(range(len(names)))
    clf, interp = make_classifier(None, None, vector(9, 40))

    real_classify_one = classify_mod._classify_one

    def one(classifier, path, pixels, variant, *rest):
        i = next(order)
        assert path.endswith(names[i])
        interp.scores[FAST] = vector(i % 9, 30)
        unstable = want[i] == "draft, confirmed exact"
        interp.scores[VARIANT] = vector((i + 1) % 9 if unstable else i % 9, 20)
        return real_classify_one(classifier, path, pixels, variant, *rest)

    import unittest.mock

    with unittest.mock.patch.object(classify_mod, "_classify_one", one):
        results = classify_images(clf, list_images([str(tmp_path)]), workers=workers)
    assert [r.path.rsplit("/", 1)[-1] for r in results] == sorted(names)
    assert [r.decode for r in results] == want
    for i, r in enumerate(results):
        expect = {"draft": i % 9, "draft, confirmed exact": 9, "exact": 9}[r.decode]
        assert r.classes[0].id == expect
    assert fake_decode == [n for n, w in zip(names, want) if w == "draft, confirmed exact"]


@pytest.mark.parametrize("workers", [None, 0])
def test_failed_exact_decode_skipped_in_order(tmp_path, monkeypatch, workers):
    """A photo to confirm whose exact decode fails (a damaged file in a folder) is skipped with
    a warning in its place; the photos after it keep their answers and order."""
    from edge import preprocess
    from edge.errors import InputError

    names = [f"p{i}_draft.jpg" for i in range(6)]
    for n in names:
        Image.new("RGB", (4, 4)).save(tmp_path / n)
    monkeypatch.setattr(preprocess.Preprocessor, "load_variants",
                        lambda self, path: (level(FAST), level(VARIANT)))

    def load_exact(self, path):
        if path.endswith("p2_draft.jpg"):
            raise InputError(f"cannot read image {path}: truncated")
        return level(EXACT)

    monkeypatch.setattr(preprocess.Preprocessor, "load_exact", load_exact)
    clf, _ = make_classifier(vector(3, 9), vector(5, 9), vector(7, 9))
    skipped = []
    results = classify_images(clf, list_images([str(tmp_path)]), on_skip=skipped.append,
                              workers=workers)
    assert [r.path.rsplit("/", 1)[-1] for r in results] == [n for n in names if n != "p2_draft.jpg"]
    assert {r.classes[0].id for r in results} == {7}
    assert len(skipped) == 1 and "p2_draft.jpg" in skipped[0]
    with pytest.raises(InputError):  # a file named on the command line: an error
        classify_images(clf, [str(tmp_path / "p2_draft.jpg"), str(tmp_path / "p3_draft.jpg")],
                        workers=workers)


def test_json_reports_the_decode(tmp_path, capsys, tiny):
    """classify --json: every result says how it was decoded; a small PNG is exact, a camera
    sized JPEG is drafted (and confirmed when its call is close), --exact-decode is exact."""
    from tests.conftest import run_cli

    Image.new("RGB", (40, 30), (230, 20, 20)).save(tmp_path / "small.png")
    big = np.zeros((1200, 1600, 3), np.uint8)
    big[..., 1] = 230
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)
    rc, out, err = run_cli(capsys, "classify", "-m", tiny["uint8"], "-i", tmp_path, "--json")
    assert rc == 0, err
    got = {r["image"].rsplit("/", 1)[-1]: r["decode"] for r in json.loads(out)["results"]}
    assert got["small.png"] == "exact"
    assert got["big.jpg"] in ("draft", "draft, confirmed exact")
    rc, out, err = run_cli(capsys, "classify", "-m", tiny["uint8"], "-i", tmp_path, "--json",
                           "--exact-decode")
    assert rc == 0, err
    assert {r["decode"] for r in json.loads(out)["results"]} == {"exact"}


@pytest.mark.parametrize("close", [True, False])
def test_eval_confirms_close_calls(tmp_path, monkeypatch, tiny, close):
    """eval (converters.validation.evaluate) confirms by classify's rule: a drafted photo whose
    answer changes on the second resampling (decode_noise_call) is decoded again exactly and
    scored on that decode; one whose answer holds is not decoded again."""
    from converters.validation import data as data_mod
    from converters.validation.evaluate import evaluate
    from edge import classify as edge_classify

    items = []
    for cls, rgb in enumerate([(230, 20, 20), (20, 230, 20), (20, 20, 230)]):
        for i in range(2):
            path = tmp_path / f"c{cls}_{i}.jpg"
            Image.new("RGB", (1600, 1200), rgb).save(path, quality=90)
            items.append((str(path), str(cls)))
    exact_calls = []
    real = data_mod.decode_pixels

    def spy(path, size, channels=3, exact=None):
        if exact:
            exact_calls.append(str(path))
        return real(path, size, channels, exact)

    monkeypatch.setattr(data_mod, "decode_pixels", spy)
    calls = []
    monkeypatch.setattr(edge_classify, "decode_noise_call", lambda a, b, k=0.0: calls.append(1) or close)
    top1, _, n, _ = evaluate(str(tiny["uint8"]), items, {str(c): c for c in range(3)}, 1,
                             preprocessing={"mean": 127.5, "std": 127.5})
    assert n == 6 and top1 == 6
    assert len(calls) == 6   # every photo drafted, each with its second resampling
    assert sorted(exact_calls) == (sorted(p for p, _ in items) if close else [])


@pytest.mark.parametrize("scale", [1 / 256, 0.0664, 0.5])
@pytest.mark.parametrize("moved", range(-3, 9))
def test_the_rule_is_the_same_on_dequantized_scores(scale, moved):
    """eval's scores come dequantized, classify's as the output holds them: the call does not
    depend on the units. The fast top-1 (class 2) leads by 5; the variant moves the runner-up."""
    raw = np.array([3, 90, 95, 5], np.float64)
    variant = raw.copy()
    variant[1] += moved
    want = decode_noise_call(raw, variant)
    assert want is (moved >= 5)
    assert decode_noise_call((raw - 7) * scale, (variant - 7) * scale) is want


@pytest.mark.parametrize("call", [True, False])
def test_json_decode_follows_the_rule(tmp_path, capsys, tiny, monkeypatch, call):
    """classify --json on a camera-sized JPEG: "draft, confirmed exact" exactly when the rule
    calls it (decode_noise_call stubbed both ways), "draft" otherwise; the PNG stays "exact"."""
    from tests.conftest import run_cli

    monkeypatch.setattr(classify_mod, "decode_noise_call", lambda a, b, k=0.0: call)
    Image.new("RGB", (40, 30), (230, 20, 20)).save(tmp_path / "small.png")
    big = np.zeros((1200, 1600, 3), np.uint8)
    big[..., 2] = 200
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)
    rc, out, err = run_cli(capsys, "classify", "-m", tiny["uint8"], "-i", tmp_path, "--json")
    assert rc == 0, err
    got = {r["image"].rsplit("/", 1)[-1]: r["decode"] for r in json.loads(out)["results"]}
    assert got == {"small.png": "exact",
                   "big.jpg": "draft, confirmed exact" if call else "draft"}
