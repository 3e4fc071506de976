"""Split functions stay split, and the shared pieces keep one copy each.

`validate` composes a run step and a compare step; the functions that were split along their
jobs stay short; the `classify` command parses and prints while edge/classify.py does the work. Each rule here is checked on the source (its AST), so a long function or a
second copy coming back fails with its file and line.
"""
import ast

import numpy as np
import pytest

from tests.conftest import REPO

MAX_LINES = 60
# the modules whose functions were split along their jobs: none may grow past MAX_LINES again
SPLIT_MODULES = ("converters/validation/validate.py", "converters/validation/signature.py",
                 "edgeport/cli/classify.py", "edge/classify.py", "converters/validation/roles.py",
                 "converters/validation/comparator.py")


def functions(path):
    tree = ast.parse((REPO / path).read_text())
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def calls_in(fn):
    return {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", None)
            for n in ast.walk(fn) if isinstance(n, ast.Call)}


@pytest.mark.parametrize("path", SPLIT_MODULES)
def test_split_functions_stay_short(path):
    long = [f"{path}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)"
            for f in functions(path) if f.end_lineno - f.lineno + 1 > MAX_LINES]
    assert not long, f"over {MAX_LINES} lines, split along its jobs: {long}"


def test_validate_composes_a_run_step_and_a_compare_step():
    fns = {f.name: f for f in functions("converters/validation/validate.py")}
    assert {"run_models", "compare_models"} <= calls_in(fns["validate"])
    # the run step judges nothing, the compare step runs nothing
    run_side = set().union(*(calls_in(fns[n]) for n in ("run_models", "_run_model", "_inputs")))
    assert not run_side & {"compare_runs", "_judge", "compare_models"}
    judge_side = calls_in(fns["compare_models"]) | calls_in(fns["_judge"])
    assert not judge_side & {"_run_all", "infer", "activate", "run_models"}


# the library work of classify: what the command must leave to edge/ (edge.classify)
CLASSIFY_WORK = {"make_interpreter", "decode_ahead", "read_labels", "check_labels",
                 "resize_tensor_input", "allocate_tensors", "set_input", "invoke", "classes",
                 "top_k", "Classifier", "preprocess", "load"}


def test_classify_command_only_parses_and_prints():
    called = set().union(*(calls_in(f) for f in functions("edgeport/cli/classify.py")))
    assert not called & CLASSIFY_WORK, f"library work in the command: {called & CLASSIFY_WORK}"
    edge_side = set().union(*(calls_in(f) for f in functions("edge/classify.py")))
    assert {"make_interpreter", "decode_ahead", "read_labels", "resize_tensor_input"} <= edge_side


# -- one ONNX Runtime session factory and one ONNX/NumPy dtype table (edge/ort.py) ----------
CODE_ROOTS = ("converters", "edge", "edgeport", "scripts")
ORT_COPIES = ("InferenceSession(", "SessionOptions(", "GraphOptimizationLevel",
              "tensor_dtype_to_np_dtype", '"tensor(float', '"tensor(int', '"tensor(uint')


def code_files():
    for root in CODE_ROOTS:
        yield from sorted((REPO / root).rglob("*.py"))


def test_one_session_factory_and_one_dtype_table():
    found = [f"{p.relative_to(REPO)}:{n}: {what}"
             for p in code_files() if p != REPO / "edge" / "ort.py"
             for n, line in enumerate(p.read_text().splitlines(), 1)
             for what in ORT_COPIES if what in line]
    assert not found, f"make sessions with edge.ort.ort_session, map types with its table: {found}"


def test_the_dtype_table_agrees_with_onnx_and_onnxruntime():
    onnx = pytest.importorskip("onnx")
    from edge.ort import ONNX_TO_NUMPY, ORT_TO_NUMPY, ort_dtype

    for elem, dtype in ONNX_TO_NUMPY.items():
        assert onnx.helper.tensor_dtype_to_np_dtype(elem) == dtype, onnx.TensorProto.DataType.Name(elem)
    assert ort_dtype("tensor(float16)") == np.float16 and ort_dtype("tensor(bfloat16)") == np.float32
    assert len(ORT_TO_NUMPY) == len(ONNX_TO_NUMPY)


def test_the_session_factory_sets_what_it_is_asked(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from edge.ort import ort_session
    from tests import tiny_onnx

    path = tmp_path / "m.onnx"
    tiny_onnx.build(str(path))
    plain = ort_session(path).get_session_options()
    assert plain.graph_optimization_level != ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert plain.log_severity_level == 4
    s = ort_session(path, threads=1, inter_threads=1, optimize=False, log_level=3)
    so = s.get_session_options()
    assert (so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level) == (1, 1, 3)
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert s.get_providers() == ["CPUExecutionProvider"]


# -- one random-input generator (edge/random_inputs.py) --------------------------------------
RANDOM_COPIES = ("default_rng(", "np.random.seed", "rng.integers(", "rng.uniform(",
                 "rng.standard_normal(", "rng.normal(", "rng.random(")


def test_one_random_input_generator():
    found = [f"{p.relative_to(REPO)}:{n}: {what}"
             for root in ("converters", "edge", "edgeport") for p in sorted((REPO / root).rglob("*.py"))
             if p != REPO / "edge" / "random_inputs.py"
             for n, line in enumerate(p.read_text().splitlines(), 1)
             for what in RANDOM_COPIES if what in line]
    assert not found, f"synthesise inputs with edge.random_inputs: {found}"


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "uint8", "int32", "int64", "bool"])
@pytest.mark.parametrize("value_range", [None, (-3.5, 7.2), (0, 0), (-1000, 1000)])
def test_random_values_keep_the_val_range_contract(dtype, value_range):
    from edge.random_inputs import generator, random_values

    lo, hi = value_range or (None, None)
    a, b = random_values(generator(7), (4, 50), dtype, lo, hi), random_values(generator(7), (4, 50), dtype, lo, hi)
    assert a.dtype == np.dtype(dtype) and a.shape == (4, 50) and np.array_equal(a, b)   # seeded
    if dtype == "bool":
        assert set(np.unique(a)) <= {False, True}
    elif np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        first = 0 if lo is None else max(info.min, int(np.floor(lo)))
        last = 9 if hi is None else min(info.max, int(np.floor(hi)))
        assert first <= a.min() and a.max() <= last   # inclusive, clipped to the dtype
    else:
        assert (0.0 if lo is None else lo) <= a.min() and a.max() <= (1.0 if hi is None else hi)


def test_validation_inputs_per_seed_are_the_draws_saved_outputs_were_matched_on():
    """Outputs saved with --save-outputs are matched to this run's inputs by fingerprint, so the
    generator must keep drawing exactly these values for a seed (written here as the plain
    NumPy calls they were before there was one generator)."""
    from converters.validation.data import DataSource
    from converters.validation.runners.base import tensor_meta
    from converters.validation.signature import InputOverrides

    metas = [tensor_meta("f", [1, 7], np.float32), tensor_meta("i", [1, 5], np.int64),
             tensor_meta("b", [1, 4], np.bool_), tensor_meta("q", [1, 6], np.int8, 0.05, 3),
             tensor_meta("s", [1, 3], np.int32)]
    lo_q, hi_q = 0.05 * (-128 - 3), 0.05 * (127 - 3)
    for ranges, draws in (
            (None, lambda r: [r.uniform(0.0, 1.0, (1, 7)).astype(np.float32),
                              r.integers(0, 10, (1, 5)).astype(np.int64),
                              r.integers(0, 2, (1, 4)).astype(bool),
                              r.uniform(lo_q, hi_q, (1, 6)).astype(np.float32),
                              r.integers(0, 10, (1, 3)).astype(np.int32)]),
            (["f:[-2,3]", "i:[-3.5,7.2]", "q:[-1,1]"],
             lambda r: [r.uniform(-2, 3, (1, 7)).astype(np.float32),
                        r.integers(-4, 8, (1, 5)).astype(np.int64),
                        r.integers(0, 2, (1, 4)).astype(bool),
                        r.uniform(-1, 1, (1, 6)).astype(np.float32),
                        r.integers(0, 10, (1, 3)).astype(np.int32)])):
        ov = InputOverrides.parse(ranges=ranges) if ranges else None
        got = DataSource(metas, (), None, None, 3, 11, overrides=ov).samples()
        rng = np.random.default_rng(11)
        for sample in got:
            for c, want in zip(sample, draws(rng)):
                assert c.array.dtype == want.dtype and np.array_equal(c.array, want)
    pixels = DataSource([tensor_meta("img", [1, 16, 16, 3], np.float32)], (), {"size": [16, 16]},
                        None, 2, 11).samples()
    rng = np.random.default_rng(11)
    for (c,) in pixels:
        assert np.array_equal(c.array, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
