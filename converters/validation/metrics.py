"""The measures the judges share: cosine per sample, magnitude ratio, top-k agreement, and
output names as runtimes mangle them. Used by the comparator and by the per-role judges
(roles.py), which import them from here, so neither imports the other for them."""

import numpy as np


def cosine_per_sample(reference, converted):
    """Cosine similarity of each sample (first axis) flattened; 1.0 when both are all zero."""
    a = reference.reshape(len(reference), -1).astype(np.float64)
    b = converted.reshape(len(converted), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = np.sum(a * b, axis=1)
    out = np.where((na == 0) & (nb == 0), 1.0, dot / np.maximum(na * nb, 1e-300))
    return out


def norm_ratio(reference, converted):
    """Mean over samples of ||converted|| / ||reference||: 1.0 when magnitudes agree (cosine
    cannot see a model whose outputs are all scaled down)."""
    a = np.linalg.norm(reference.reshape(len(reference), -1).astype(np.float64), axis=1)
    b = np.linalg.norm(converted.reshape(len(converted), -1).astype(np.float64), axis=1)
    ratio = np.where(a == 0, np.where(b == 0, 1.0, np.inf), b / np.maximum(a, 1e-300))
    return float(np.mean(ratio))


def topk_agreement(reference, converted, k):
    """(top-1 agreements, mean top-k overlap in 0..1) over samples of class scores."""
    a = reference.reshape(len(reference), -1)
    b = converted.reshape(len(converted), -1)
    k = max(1, min(int(k), a.shape[1]))
    top1 = int(np.sum(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
    ta = np.argsort(-a, axis=1, kind="stable")[:, :k]
    tb = np.argsort(-b, axis=1, kind="stable")[:, :k]
    overlap = np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb)])
    return top1, float(overlap)


def normalize_name(name):
    """Names as runtimes mangle them: 'serving_default_x:0' -> 'x', 'StatefulPartitionedCall:1'."""
    n = str(name).lower()
    for prefix in ("serving_default_",):
        if n.startswith(prefix):
            n = n[len(prefix):]
    if n.endswith(":0"):
        n = n[:-2]
    return n.replace("/", "_")
