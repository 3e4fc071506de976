"""A speaker or face embedding after ReLU and L2 normalisation (Resemblyzer's) has every value
in 0..1: it is judged as an embedding (cosine per sample), not as independent sigmoid scores,
while scores with one confident label (norm near 1 too) are not taken for one."""

import numpy as np
import pytest

from converters.validation import roles
from converters.validation.comparator import Tolerances, compare_output


def relu_embeddings(n, samples, seed):
    e = np.maximum(np.random.default_rng(seed).normal(0, 1, (samples, 1, n)), 0)
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


@pytest.mark.parametrize("n", [16, 64, 256, 512])
@pytest.mark.parametrize("samples", [1, 4])
def test_non_negative_unit_norm_is_an_embedding(n, samples):
    e = relu_embeddings(n, samples, n + samples)
    role = roles.infer_role("output_0", e)
    assert role.kind == "embedding", role
    other = relu_embeddings(n, samples, 1000 + n)
    bad = compare_output("output_0", e, other, Tolerances(), "agreement")
    assert bad.role == "embedding" and not bad.passed, bad.reason
    ok = compare_output("output_0", e, e + 1e-4, Tolerances(), "agreement")
    assert ok.passed, ok.reason


@pytest.mark.parametrize("n", [16, 64, 256])
def test_one_confident_label_is_no_embedding(n):
    p = np.full((4, 1, n), 0.001)
    p[np.arange(4), 0, np.arange(4) % n] = 0.999      # norm about 1, one label holds it
    assert np.allclose(np.linalg.norm(p, axis=-1), 1.0, atol=1e-2)
    assert roles.infer_role("output_0", p).kind in ("multilabel", "class")   # never an embedding


def test_scores_not_of_unit_norm_stay_multilabel():
    p = np.random.default_rng(3).uniform(0, 1, (4, 1, 64))
    assert roles.infer_role("output_0", p).kind == "multilabel"
