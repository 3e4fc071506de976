"""scripts/corpus_cells.py: every refusal in the corpus table is classified, and the counts add up
(on small synthetic tables: no corpus needed)."""

import importlib.util

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def cc():
    spec = importlib.util.spec_from_file_location("corpus_cells", REPO / "scripts" / "corpus_cells.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_refusal_in_the_current_corpus_table_is_classified(cc):
    cases = cc.load_cases(cc.AFTER.read_text(encoding="utf-8"))
    assert len(cases) >= 20
    outcomes = {o for row in cases.values() for o in row[4].values()}
    unclassified = []
    for outcome in sorted(outcomes):
        try:
            cc.classify(outcome)
        except LookupError:
            unclassified.append(outcome)
    assert not unclassified, f"add these refusals to REASONS in scripts/corpus_cells.py: {unclassified}"


@pytest.mark.parametrize("outcome, kind", [
    ("validated", "validated"), ("FAILED: MISMATCH: 'x': recall", "FAILED"),
    ("not validated: structure only", "structure only"),
    ("refused: ", "refused: no rewrite can"),
    ("refused: needs --calibration DIR", "refused: no rewrite can"),
    ("refused: no Core ML lowering in onnx2coreml: If", "refused: rewrite could"),
])
def test_classify(cc, outcome, kind):
    assert cc.classify(outcome)[0] == kind


@pytest.mark.parametrize("outcome", ["refused: a reason nobody reviewed", "FAIL", "converted", ""])
def test_an_unknown_outcome_is_not_classified(cc, outcome):
    with pytest.raises(LookupError):
        cc.classify(outcome)


SYNTHETIC = '''
import os
V = "validated"
CASES = {{"a": ("k", [], [], {{}}, {{"ort": V, "coreml": {a_coreml!r}}}),
         "b": ("k", [], [], {{}}, {{"onnx": "refused: cannot convert op CALL_ONCE", "edgetpu": "refused: "}})}}
CASES.update({{{extra}}})

def test_something():
    raise AssertionError("test functions are not run")
'''


def test_counts_before_and_after_on_synthetic_tables(cc):
    before = cc.load_cases(SYNTHETIC.format(a_coreml="refused: no Core ML lowering in onnx2coreml: If", extra=""))
    after = cc.load_cases(SYNTHETIC.format(a_coreml="validated", extra='"c": ("k", [], [], {}, {"ort": V})'))
    assert sorted(after) == ["a", "b", "c"]
    text = cc.report(before, after)
    assert "2 models in both tables" in text
    assert "| coreml | 0 -> 1 | 0 | 0 | 1 -> 0 | 0 | 1 |" in text
    assert "| ort | 1 | 0 | 0 | 0 | 0 | 1 |" in text
    assert "| **total** | 1 -> 2 |" in text   # "c" is counted only under "all models"
    assert "1 added: c" in text and "validated 3" in text
    assert "| no Edge TPU compiler here | no rewrite can | 1 | 1 |" in text
    total = cc.counts(cc.cells(after), {"a", "b"})["total"]
    assert sum(total.values()) == 2 * len(cc.TARGETS)
