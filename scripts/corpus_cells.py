"""Corpus cells before and after the rewrites: what edgeport validates, fails or refuses, per target.

    python scripts/corpus_cells.py [--before REV] [--before-path PATH] [--after FILE]

A cell is one (corpus model, target). Each cell's expected outcome is read from the corpus
table (CASES in tests/corpus/test_corpus.py, read when this runs, so a re-run sees today's
rows) and, for "before", from that file at commit dedb9d2 (tests/test_corpus.py then: the
corpus before the rewrite room). Each cell counts as:

  validated      converted and validated against the source
  FAILED         converted, and validation rightly fails the artefact
  structure only converted, but nothing here can run it to compare (Core ML on Linux)
  refused: rewrite could   an upstream tool's limit (an op it has no lowering/kernel for,
                 a state it cannot carry): a graph rewrite could address it
  refused: no rewrite can  a reason no rewrite addresses (no Edge TPU compiler here, needs
                 calibration data, a quantized source, a custom op the source's own runtime lacks)
  n/a            the route table offers no such target (the source's own format)

Refusals are classified by their text with REASONS below, a reviewed table:
tests/project/test_corpus_cells.py fails when a refusal in CASES matches none of them, so a new
refusal must be classified here. Only models in both files count for the before/after
comparison; models added since are listed (and counted in "after, all models").
"""

import argparse
import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AFTER = REPO / "tests" / "corpus" / "test_corpus.py"
BEFORE_REV, BEFORE_PATH = "dedb9d2", "tests/test_corpus.py"
TARGETS = ["onnx", "ort", "tflite", "tflite-int8", "coreml", "edgetpu"]

VALIDATED, FAILED, STRUCTURE = "validated", "FAILED", "structure only"
REWRITE_COULD, NO_REWRITE, NA = "refused: rewrite could", "refused: no rewrite can", "n/a"
KINDS = [VALIDATED, FAILED, STRUCTURE, REWRITE_COULD, NO_REWRITE, NA]

# (words in the refusal, family, kind, why): first match wins; reviewed by hand. "" matches the
# empty reason the corpus table uses for the Edge TPU target (no compiler can run here).
REASONS = [
    ("needs --calibration", "needs calibration data", NO_REWRITE,
     "full-int8 needs representative data; no real data for this model here yet"),
    ("from a quantized model", "quantized source", NO_REWRITE,
     "the source is already int8: a float TFLite from it would only dequantize what was lost"),
    ("uses custom ops (Landmarks2TransformMatrix", "MediaPipe face-geometry custom ops", REWRITE_COULD,
     "matrix arithmetic, gathers, reductions and bilinear sampling: expressible in builtin ops "
     "(the source run with numpy references of MediaPipe's kernels)"),
    ("uses custom ops (Convolution2DTransposeBias", "MediaPipe custom op", REWRITE_COULD,
     "a transposed convolution plus a bias: expressible in standard ops"),
    ("cannot convert op CALL_ONCE", "streaming state (tf2onnx)", REWRITE_COULD,
     "resource-variable state made explicit inputs/outputs"),
    ("no Core ML lowering in onnx2coreml", "op onnx2coreml cannot lower", REWRITE_COULD,
     "fold or express the op (rewrite/onnx_coreml.py: constants folded, Q/DQ, If on data, ReverseSequence)"),
    ("no int8 kernel for op DIV", "DIV in TFLite's quantizer", REWRITE_COULD,
     "a division written as a MUL by the divisor's reciprocal (a constant, or computed with RSQRT) "
     "has int8 kernels"),
    ("no int8 kernel for op FLOOR_DIV", "shape arithmetic in TFLite's quantizer", REWRITE_COULD,
     "tf.signal.frame's arithmetic on the input's shape folds into constants, the open batch fixed "
     "to 1 (rewrite/tflite_fold.py; its RFFT2D as float32 MatMuls, POW as EXP(c * LOG))"),
    ("no int8 kernel for op SQRT", "SQRT in TFLite's quantizer", REWRITE_COULD,
     "an L2 normalisation written as SQRT and DIV: TFLite's L2_NORMALIZATION has an int8 kernel"),
    ("quantizer has no int8 kernel for op IF", "op TFLite's quantizer cannot take", REWRITE_COULD,
     "inline the IF's branches before quantizing"),
    ("Expected bias tensor to be a vector", "TFLite quantizer's bias shape", REWRITE_COULD,
     "reshape the bias to a vector before quantizing"),
    ("onnx2tf cannot convert", "op onnx2tf cannot convert", REWRITE_COULD,
     "rewrite the ops onnx2tf stops at (an STFT's Add here)"),
    ("ONNX export does NOT support", "op torch.onnx.export cannot export", REWRITE_COULD,
     "replace the op (bitwise Not) in the traced graph"),
    ("prim::SetAttr", "TorchScript state (converter)", REWRITE_COULD,
     "attributes set in forward made explicit state"),
    ("keeps state between calls", "TorchScript state (Core ML)", REWRITE_COULD,
     "attributes set in forward made explicit state"),
    ("the TFLite runtime crashed", "TFLite runtime crash on the int8 model", REWRITE_COULD,
     "a kernel of the runtime dies; which op is not measured: a rewrite might avoid it"),
    ("", "no Edge TPU compiler here", NO_REWRITE,
     "edgetpu_compiler runs on x86-64 Linux (local, docker or podman); none here"),
]


def classify(outcome):
    """(kind, family) of one expected outcome; family None when not a refusal; raises
    LookupError for a refusal REASONS does not cover."""
    if outcome in ("validated", "ok"):
        return VALIDATED, None
    if outcome.startswith("FAILED"):
        return FAILED, None
    if outcome.startswith("not validated"):
        return STRUCTURE, None
    if outcome.startswith("refused: "):
        reason = outcome[len("refused: "):]
        for words, family, kind, _ in REASONS:
            if (words and words in reason) or (not words and not reason.strip()):
                return kind, family
    raise LookupError(f"unclassified corpus outcome: {outcome!r}")


def load_cases(source, name="corpus_table"):
    """CASES from the text of a corpus test file: run its module-level code in a fresh namespace
    with its test functions and fixtures left out (only assignments, imports and CASES.update)."""
    tree = ast.parse(source)
    keep = [n for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign, ast.Import, ast.ImportFrom))
            or (isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
                and ast.unparse(n.value.func) == "CASES.update")]
    namespace = {"__name__": name, "__file__": str(AFTER)}
    exec(compile(ast.Module(body=keep, type_ignores=[]), name, "exec"), namespace)  # our own test file, read as text
    return namespace["CASES"]


def cells(cases):
    """{(model, target): (kind, family)}; a target absent from a model's row is n/a."""
    out = {}
    for model, row in cases.items():
        targets = row[4]
        for target in TARGETS:
            out[model, target] = classify(targets[target]) if target in targets else (NA, None)
    return out


def counts(table, models):
    """{target or 'total': Counter of kinds} over `models`."""
    per = {t: Counter() for t in [*TARGETS, "total"]}
    for (model, target), (kind, _) in table.items():
        if model in models:
            per[target][kind] += 1
            per["total"][kind] += 1
    return per


def families(table, models):
    return Counter((fam, kind) for (m, _), (kind, fam) in table.items() if m in models and fam)


def report(before_cases, after_cases):
    before, after = cells(before_cases), cells(after_cases)
    common = sorted(set(before_cases) & set(after_cases))
    added = sorted(set(after_cases) - set(before_cases))
    gone = sorted(set(before_cases) - set(after_cases))
    b, a, a_all = counts(before, common), counts(after, common), counts(after, set(after_cases))
    lines = [f"Corpus cells (model x target), {len(common)} models in both tables; "
             "each cell: before -> after.", "",
             "| target | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 1) + "|"]
    for t in [*TARGETS, "total"]:
        row = [f"{b[t][k]} -> {a[t][k]}" if b[t][k] != a[t][k] else str(a[t][k]) for k in KINDS]
        lines.append(f"| {'**total**' if t == 'total' else t} | " + " | ".join(row) + " |")
    lines += ["", f"After, all {len(after_cases)} models ({len(added)} added: {', '.join(added) or 'none'}"
              + (f"; gone: {', '.join(gone)}" if gone else "") + "): "
              + ", ".join(f"{k} {a_all['total'][k]}" for k in KINDS), "",
              "Refusals by reason (cells, models in both tables: before -> after):", "",
              "| reason | kind | before | after | why |", "|---|---|---|---|---|"]
    fb, fa = families(before, common), families(after, common)
    for _, family, kind, why in REASONS:
        if fb[family, kind] or fa[family, kind]:
            lines.append(f"| {family} | {kind[len('refused: '):]} | {fb[family, kind]} | {fa[family, kind]} | {why} |")
    return "\n".join(lines)


def before_source(rev=BEFORE_REV, path=BEFORE_PATH):
    return subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE_REV, help="git revision of the 'before' table")
    ap.add_argument("--before-path", default=BEFORE_PATH, help="its path at that revision")
    ap.add_argument("--after", default=str(AFTER), help="the 'after' corpus test file")
    args = ap.parse_args(argv)
    before = load_cases(before_source(args.before, args.before_path), "before")
    after = load_cases(Path(args.after).read_text(encoding="utf-8"), "after")
    print(report(before, after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
