"""Confirm close calls: a photo decoded on the fast (draft) path whose top-1 leads its top-2 by
no more than the decode noise is decoded again exactly and classified again; a clear winner
keeps the fast answer; results stay in input order; --json says which decode answered."""

import json

import numpy as np
import pytest
from PIL import Image

from edge import classify as classify_mod
from edge.classify import CONFIRM_RELATIVE, CONFIRM_STEPS, Classifier, classify_images
from edge.preprocess import list_images, set_exact_decode

N = 10  # classes of the fake model


@pytest.fixture(autouse=True)
def _fast_decode():
    set_exact_decode(False)
    yield
    set_exact_decode(False)


class FakeInterpreter:
    """A classifier whose output depends on the input's mean grey level: the fast decode and
    the exact decode of a test photo differ in that level (draft: 100, exact: 200), and
    `scores[(level)]` holds each decode's output vector. Counts its invocations."""

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


@pytest.fixture
def fake_decode(monkeypatch):
    """load_decoded replaced: every photo named *draft* decodes drafted to level 100 (exact:
    200); others decode exactly (level 200). Records the exact re-decodes."""
    calls = []

    def load_decoded(self, path, exact=None):
        name = str(path).rsplit("/", 1)[-1]
        drafted = "draft" in name and not exact
        if exact:
            calls.append(name)
        return np.full((8, 8, 3), 100 if drafted else 200, np.uint8), drafted

    from edge import preprocess

    monkeypatch.setattr(preprocess.Preprocessor, "load_decoded", load_decoded)
    return calls


def make_classifier(fast, exact, **kw):
    interp = FakeInterpreter({100: fast, 200: exact}, **kw)
    return Classifier(interp, layout="NHWC"), interp


@pytest.mark.parametrize("lead", range(0, CONFIRM_STEPS + 1))
def test_close_call_is_decoded_again_exactly(fake_decode, lead):
    clf, interp = make_classifier(vector(3, lead), vector(7, 40))
    [r] = classify_images(clf, ["draft_a.jpg"], count=2, k=1)
    assert fake_decode == ["draft_a.jpg"]
    assert r.decode == "draft, confirmed exact"
    assert r.classes[0].id == 7  # the exact decode's answer
    assert interp.invocations == 4 and len(r.times_ms) == 2


@pytest.mark.parametrize("lead", [CONFIRM_STEPS + 1, CONFIRM_STEPS + 2, 50, 150])
def test_clear_winner_keeps_the_fast_answer(fake_decode, lead):
    clf, interp = make_classifier(vector(3, lead), vector(7, 40))
    [r] = classify_images(clf, ["draft_a.jpg"], k=2)
    assert fake_decode == []
    assert r.decode == "draft" and r.classes[0].id == 3
    assert interp.invocations == 1


def test_exact_decodes_are_never_confirmed(fake_decode):
    clf, interp = make_classifier(vector(3, 0), vector(7, 0))  # a tie, decoded exactly already
    [r] = classify_images(clf, ["plain.png"])
    assert fake_decode == [] and r.decode == "exact" and interp.invocations == 1


def test_confirm_off_keeps_the_fast_answer(fake_decode):
    clf, _ = make_classifier(vector(3, 0), vector(7, 40))
    [r] = classify_images(clf, ["draft_a.jpg"], confirm=False)
    assert fake_decode == [] and r.decode == "draft" and r.classes[0].id == 3


@pytest.mark.parametrize("rel,confirmed", [(0.0, True), (CONFIRM_RELATIVE * 0.9, True),
                                           (CONFIRM_RELATIVE * 1.5, False), (0.9, False)])
def test_float_scores_use_a_relative_margin(fake_decode, rel, confirmed):
    top = 0.5
    fast = np.full(N, 0.001, np.float32)
    fast[3], fast[4] = top, top * (1 - rel)
    clf, _ = make_classifier(fast, vector(7, 0.3, dtype=np.float32, base=0.2), dtype=np.float32)
    [r] = classify_images(clf, ["draft_a.jpg"])
    assert (r.decode == "draft, confirmed exact") is confirmed
    assert r.classes[0].id == (7 if confirmed else 3)


def test_folder_order_kept_with_confirmations(tmp_path, fake_decode):
    """Generated folder: close calls and clear winners mixed, decoded on worker threads; the
    results come back in file order, each with its own decode and answer."""
    rng = np.random.default_rng(0)
    names, want = [], []
    for i in range(24):
        close = bool(rng.random() < 0.4)
        name = f"p{i:02d}_draft.jpg" if rng.random() < 0.8 else f"p{i:02d}_plain.jpg"
        names.append(name)
        Image.new("RGB", (4, 4)).save(tmp_path / name)
        want.append(("draft, confirmed exact" if close else "draft")
                     if "draft" in name else "exact")
    # each photo's fast answer is its own (index % 9), set as it reaches the interpreter
    order = iter(range(len(names)))
    leads = [0 if w == "draft, confirmed exact" else 60 for w in want]
    clf, interp = make_classifier(None, vector(9, 40))

    real_classify_one = classify_mod._classify_one

    def one(classifier, path, pixels, confirm, count, k, threshold, drafted):
        i = next(order)
        assert path.endswith(names[i])
        interp.scores[100] = vector(i % 9, leads[i])
        return real_classify_one(classifier, path, pixels, confirm, count, k, threshold, drafted)

    import unittest.mock

    with unittest.mock.patch.object(classify_mod, "_classify_one", one):
        results = classify_images(clf, list_images([str(tmp_path)]))
    assert [r.path.rsplit("/", 1)[-1] for r in results] == sorted(names)
    assert [r.decode for r in results] == want
    for i, r in enumerate(results):
        expect = {"draft": i % 9, "draft, confirmed exact": 9, "exact": 9}[r.decode]
        assert r.classes[0].id == expect
    assert fake_decode == [n for n, w in zip(names, want) if w == "draft, confirmed exact"]


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
    """eval (converters.validation.evaluate): a drafted photo whose call is close is decoded
    again exactly and scored on that decode; a clear one is not decoded again."""
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
    monkeypatch.setattr(edge_classify, "close_call", lambda scores, step=None, steps=None: close)
    top1, _, n, _ = evaluate(str(tiny["uint8"]), items, {str(c): c for c in range(3)}, 1,
                             preprocessing={"mean": 127.5, "std": 127.5})
    assert n == 6 and top1 == 6
    assert sorted(exact_calls) == (sorted(p for p, _ in items) if close else [])


@pytest.mark.parametrize("scale", [1 / 256, 0.0664, 0.5])
@pytest.mark.parametrize("lead_steps", range(0, CONFIRM_STEPS + 4))
def test_close_call_on_dequantized_scores(scale, lead_steps):
    """eval's scores come dequantized: the same rule in steps of the output's scale."""
    from edge.classify import close_call

    raw = np.array([3, 90, 90 + lead_steps, 5], np.float64)
    assert close_call((raw - 7) * scale, scale) is (lead_steps <= CONFIRM_STEPS)
    assert close_call(raw, 1.0) is (lead_steps <= CONFIRM_STEPS)
