"""Property-based fuzzing of everything that parses untrusted bytes.

Targets: format detection (`converters.formats.detect_format`), the pure-python TFLite reader
and what is built on it (`edge.tflite_model.TFLiteModel`, `formats.tflite_kind`, the inspector
`converters.validation.inspect.describe` with its Edge TPU analysis), ONNX / ORT / zip header
detection, label files (`edge.labels.read_labels`) and image loading
(`edge.preprocess.load_image` then the preprocessing hot path).

Inputs are mutations of real files: the committed tiny models in tests/data (plus the small
Coral fixtures when ../shared is present), a tiny ONNX model and its ORT form, a Keras-like
zip, and small PNG/JPEG/BMP/GIF/TIFF images made here. Mutations: bit flips, byte and
32-bit word overwrites with boundary values (flatbuffer offsets), truncations, insertions,
deletions and splices of two seeds.

The property: every input ends in a valid result or an `edge.errors.EdgeportError`; any
other exception is a crash and fails the test. Hypothesis runs derandomized (the same
inputs every run, so CI is reproducible) with bounded `max_examples`; the number of inputs
per target is `FUZZ_EXAMPLES` (environment variable EDGEPORT_FUZZ_EXAMPLES overrides it for
longer local runs). scripts/fuzz_atheris.py is the coverage-guided harness over the same
targets.
"""

import io
import os
import struct
import warnings
import zipfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edge.errors import EdgeportError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
CORAL = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "coral"

FUZZ_EXAMPLES = int(os.environ.get("EDGEPORT_FUZZ_EXAMPLES", "1000"))
# EDGEPORT_FUZZ_RANDOM=1 explores new inputs (local runs); CI replays the same ones.
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("EDGEPORT_FUZZ_RANDOM"),
                suppress_health_check=list(HealthCheck), print_blob=True)

# Small Coral models worth mutating (the big ones make each example slow, not more useful).
CORAL_SEEDS = ("split_concat.tflite", "split_concat_edgetpu.tflite", "keras_lstm_mnist_ptq.tflite")

TRIED = {}  # target -> inputs tried (printed by the last test, for the report)


def _count(target):
    TRIED[target] = TRIED.get(target, 0) + 1


# -- seeds ---------------------------------------------------------------------------------
def tflite_seeds():
    seeds = [(DATA / f"color_{n}.tflite").read_bytes() for n in ("float", "uint8", "int8", "nchw")]
    for name in CORAL_SEEDS:
        if (CORAL / name).is_file():
            seeds.append((CORAL / name).read_bytes())
    return seeds


def _onnx_bytes():
    try:
        import onnx  # noqa: F401 (only whether it imports)
        from onnx import TensorProto, helper
    except ImportError:
        return None
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 4], [1.0, 2.0, 3.0, 4.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["s"]),
                               helper.make_node("Relu", ["s"], ["y"])], "tiny", [x], [y], [w])
    model = helper.make_model(graph, producer_name="edgeport-fuzz",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _ort_bytes(onnx_bytes, folder):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    src = folder / "tiny.onnx"
    src.write_bytes(onnx_bytes)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(folder / "tiny.ort")
    opts.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    return (folder / "tiny.ort").read_bytes()


def _zip_bytes(names):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in names:
            z.writestr(name, b"{}" if name.endswith(".json") else b"\x00" * 16)
    return buf.getvalue()


def _zip_from_the_future():
    """A zip whose central directory asks for extractor version 12.7 (zipfile raises
    NotImplementedError, which detect_format once let through)."""
    data = bytearray(_zip_bytes(["config.json", "model.weights.h5"]))
    at = data.find(b"PK\x01\x02")
    data[at + 6] = 0x7F  # 'version needed to extract'
    return bytes(data)


@pytest.fixture(scope="session")
def model_seeds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_seeds")
    seeds = list(tflite_seeds())
    onnx_bytes = _onnx_bytes()
    if onnx_bytes:
        seeds.append(onnx_bytes)
        ort_bytes = _ort_bytes(onnx_bytes, folder)
        if ort_bytes:
            seeds.append(ort_bytes)
    seeds.append(_zip_bytes(["config.json", "metadata.json", "model.weights.h5"]))   # Keras 3
    seeds.append(_zip_bytes(["m/archive_format", "m/serialized_exported_program.json"]))  # .pt2
    seeds.append(_zip_bytes(["m/code/m.py", "m/constants.pkl", "m/data.pkl"]))  # TorchScript
    seeds.append(b"\x89HDF\r\n\x1a\n" + b"\x00" * 56)  # HDF5 (Keras .h5) signature
    return seeds


def _image_seeds():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), "RGB")
    out = []
    for fmt, im, kw in [
        ("PNG", rgb, {}),
        ("PNG", rgb.convert("RGBA"), {}),
        ("PNG", rgb.convert("P"), {}),
        ("PNG", Image.fromarray(rng.integers(0, 65536, (9, 7), dtype=np.uint16)), {}),  # 16-bit
        ("JPEG", rgb, {"quality": 80}),
        ("JPEG", rgb.convert("CMYK"), {}),
        ("BMP", rgb, {}),
        ("BMP", rgb.convert("L"), {}),
        ("GIF", rgb.convert("P"), {}),
        ("TIFF", rgb, {}),
        ("WEBP", rgb, {}),
    ]:
        buf = io.BytesIO()
        try:
            im.save(buf, fmt, **kw)
        except (KeyError, OSError):  # a Pillow built without that codec
            continue
        out.append(buf.getvalue())
    # A JPEG that EXIF says is rotated (orientation 6).
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", exif=exif.tobytes())
    out.append(buf.getvalue())
    return out


IMAGE_SEEDS = None


def image_seeds():
    global IMAGE_SEEDS
    if IMAGE_SEEDS is None:
        IMAGE_SEEDS = _image_seeds()
    return IMAGE_SEEDS


# -- mutations -----------------------------------------------------------------------------
_WORDS = (0, 1, 4, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFC)


@st.composite
def mutated(draw, seeds, max_edits=4):
    """One seed (or a splice of two) with a few random edits."""
    data = bytearray(draw(st.sampled_from(seeds)))
    if draw(st.integers(0, 9)) == 0:  # splice: head of one seed, tail of another
        other = draw(st.sampled_from(seeds))
        cut_a = draw(st.integers(0, len(data)))
        cut_b = draw(st.integers(0, len(other)))
        data = data[:cut_a] + bytearray(other[cut_b:])
    for _ in range(draw(st.integers(1, max_edits))):
        kind = draw(st.sampled_from(["flip", "byte", "word", "truncate", "insert", "delete"]))
        n = len(data)
        if kind == "truncate":
            data = data[:draw(st.integers(0, n))]
        elif n == 0:
            data = bytearray(draw(st.binary(max_size=16)))
        elif kind == "flip":
            i = draw(st.integers(0, n - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[draw(st.integers(0, n - 1))] = draw(st.integers(0, 255))
        elif kind == "word" and n >= 4:
            i = draw(st.integers(0, (n - 4) // 4)) * 4  # flatbuffer offsets are 4-aligned
            struct.pack_into("<I", data, i, draw(st.sampled_from(_WORDS)))
        elif kind == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            i = draw(st.integers(0, n - 1))
            del data[i:i + draw(st.integers(1, 16))]
    return bytes(data)


def _lazy(seeds_fn):
    return st.deferred(lambda: mutated(seeds_fn()))


def _run(target, func, *args):
    """Call func: a result or an EdgeportError is fine; anything else propagates (a crash)."""
    _count(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return func(*args)
        except EdgeportError as e:
            assert str(e).strip(), f"{target}: an EdgeportError without a message"
            assert "\n" not in str(e).strip(), f"{target}: a multi-line error message: {e!r}"
            return None


# -- targets -------------------------------------------------------------------------------
def _tflite_everything(data):
    """Parse, then touch every query the CLI commands make on a model."""
    from converters.formats import tflite_kind
    from edge.tflite_model import TFLiteModel

    m = TFLiteModel(data, "fuzz.tflite")
    m.inputs()
    m.outputs()
    m.op_names()
    m.custom_ops()
    tflite_kind(m)
    for t in m.main.tensors[:64]:
        m.buffer_data(t.buffer)
    for name in list(m.metadata)[:8]:
        m.metadata_bytes(name)
    return m


def _inspect(path):
    from converters.validation.inspect import describe, format_text

    d = describe(str(path), edgetpu=True)
    return format_text(d)


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_fuzz_tflite_reader_and_inspector(tmp_path):
    path = tmp_path / "model.tflite"

    @FUZZ
    @given(data=_lazy(tflite_seeds))
    def check(data):
        if _run("TFLiteModel", _tflite_everything, data) is not None:
            path.write_bytes(data)
            _run("inspect --edgetpu", _inspect, path)

    check()


def test_fuzz_detect_and_inspect(tmp_path, model_seeds):
    from converters.formats import detect_format

    path = tmp_path / "model.bin"

    @FUZZ
    @given(data=mutated(model_seeds))
    @hypothesis.example(data=_zip_from_the_future())  # found by this fuzzer: NotImplementedError
    def check(data):
        path.write_bytes(data)
        fmt = _run("detect_format", detect_format, path)
        if data[4:8] == b"TFL3":
            _run("inspect", _inspect, path)
        if fmt is not None:
            assert isinstance(fmt, str)

    check()


def test_fuzz_headers(tmp_path):
    """Arbitrary short files (random headers), not mutations: ONNX / Core ML / ORT / zip sniffing."""
    from converters.formats import detect_format

    path = tmp_path / "model"
    prefixes = st.sampled_from([b"", b"\x08", b"\x08\x07\x12", b"\x08\x03\x1a", b"PK\x03\x04",
                                b"\x89HDF\r\n\x1a\n", b"\x00\x00\x00\x00ORTM", b"\x00\x00\x00\x00TFL3"])

    @FUZZ
    @given(prefix=prefixes, rest=st.binary(max_size=96))
    def check(prefix, rest):
        path.write_bytes(prefix + rest)
        _run("detect_format(headers)", detect_format, path)

    check()


def _label_text():
    line = st.one_of(st.text(max_size=20), st.from_regex(r"\d{1,4}[:\s]{1,3}\w{0,8}", fullmatch=True))
    return st.lists(line, max_size=12).map(lambda ls: "\n".join(ls).encode("utf-8"))


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_fuzz_labels(tmp_path):
    from edge.labels import check_labels, read_labels

    path = tmp_path / "labels.txt"

    @FUZZ
    @given(data=st.one_of(_label_text(), st.binary(max_size=200)), classes=st.integers(0, 2000))
    def check(data, classes):
        path.write_bytes(data)
        labels = _run("read_labels", read_labels, path)
        if labels is not None:
            assert isinstance(labels, dict)
            assert all(isinstance(k, int) and k >= 0 and isinstance(v, str) for k, v in labels.items())
            warning = check_labels(labels, classes)
            assert warning is None or isinstance(warning, str)

    check()


def test_fuzz_images(tmp_path):
    import numpy as np

    from edge.preprocess import InputSpec, Preprocessor, load_image

    path = tmp_path / "image"
    specs = [InputSpec(0, "x", (1, 8, 8, 3), np.dtype(np.uint8), "NHWC", 8, 8, 3, 1 / 128, 128),
             InputSpec(0, "x", (1, 1, 8, 8), np.dtype(np.float32), "NCHW", 8, 8, 1, 0.0, 0)]
    pre = [Preprocessor(s, 127.5, 127.5) for s in specs]

    def load_and_preprocess(p, channels):
        im = load_image(p, channels)
        assert im.mode == ("L" if channels == 1 else "RGB")
        proc = pre[0] if channels == 3 else pre[1]
        x = proc(proc.array(im))
        assert x.shape == proc.spec.shape
        return x

    @FUZZ
    @given(data=_lazy(image_seeds), channels=st.sampled_from([1, 3]))
    def check(data, channels):
        path.write_bytes(data)
        _run("load_image", load_and_preprocess, path, channels)

    check()


def test_fuzz_seeds_are_valid(model_seeds):
    """The unmutated seeds parse: the fuzzer starts from real, working inputs."""
    import tempfile

    from converters.formats import detect_format
    from edge.preprocess import load_image

    with tempfile.TemporaryDirectory() as d:
        kinds = set()
        for i, data in enumerate(model_seeds):
            p = Path(d) / f"seed{i}"
            p.write_bytes(data)
            kinds.add(detect_format(p))
        assert {"tflite", "tflite-int8"} <= kinds
        for i, data in enumerate(image_seeds()):
            p = Path(d) / f"img{i}"
            p.write_bytes(data)
            assert load_image(p).mode == "RGB"
    print("\nfuzz inputs tried per target:", TRIED)


REGRESSIONS = sorted((DATA / "fuzz_regressions").glob("*")) if (DATA / "fuzz_regressions").is_dir() else []


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_fuzz_regressions(path, tmp_path):
    """Inputs that once crashed a parser (found by this file or scripts/fuzz_atheris.py)."""
    from converters.formats import detect_format
    from edge.labels import read_labels
    from edge.preprocess import load_image

    data = path.read_bytes()
    copy = tmp_path / path.name
    copy.write_bytes(data)
    _run("regression:detect", detect_format, copy)
    if data[4:8] == b"TFL3":
        _run("regression:tflite", _tflite_everything, data)
        _run("regression:inspect", _inspect, copy)
    _run("regression:labels", read_labels, copy)
    _run("regression:image", load_image, copy)


def test_pixel_bomb_between_one_and_two_limits_is_refused():
    """Found by scripts/fuzz_atheris.py: a GIF header claiming 2569 x 65529 pixels (1.7x the
    limit) only made Pillow warn, then decode it all (12 s, 500 MB). It must be refused."""
    from edge.errors import InputError
    from edge.preprocess import load_image

    with pytest.raises(InputError, match="more than"):
        load_image(DATA / "fuzz_regressions" / "gif-168M-pixels-header.gif")


# -- scripts/fuzz_atheris.py (coverage-guided, libFuzzer) ------------------------------------
ATHERIS_SCRIPT = REPO / "scripts" / "fuzz_atheris.py"
ATHERIS_TARGETS = ("tflite", "detect", "labels", "image")
# Inputs per target: the run is bounded by this count, never by wall-clock time, so a loaded
# machine makes it slower, not different (EDGEPORT_ATHERIS_RUNS=N for longer local runs).
ATHERIS_RUNS = int(os.environ.get("EDGEPORT_ATHERIS_RUNS", "1000"))
ARTEFACT_PREFIXES = ("crash-", "timeout-", "slow-", "oom-", "leak-")


def _fuzz_script():
    """scripts/fuzz_atheris.py as a module (its `all` mode and clean-up need no atheris)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fuzz_atheris", ATHERIS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("target", ATHERIS_TARGETS)
def test_atheris_bounded_run(target, tmp_path):
    """A short coverage-guided run of one target of scripts/fuzz_atheris.py: same seed, same
    hash seed, the same ATHERIS_RUNS inputs on every machine; generous per-input limits so
    only a real hang or memory blow-up (not load) can fail it."""
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris: Linux x86-64 "
                                          "wheels, Python < 3.12; the 'dev' extra pins it)")
    import signal
    import subprocess
    import sys

    work = tmp_path / "work"  # libFuzzer's working folder and artefact folder
    temp = tmp_path / "temp"  # the script's TMPDIR: its edgeport-* folders must be gone after
    work.mkdir()
    temp.mkdir()
    env = {**os.environ, "PYTHONHASHSEED": "0", "TMPDIR": str(temp)}
    cmd = [sys.executable, str(ATHERIS_SCRIPT), target, f"-runs={ATHERIS_RUNS}", "-seed=1",
           f"-artifact_prefix={work}{os.sep}", "-timeout=120", "-report_slow_units=120",
           "-rss_limit_mb=2048", "-malloc_limit_mb=2048", "-reload=0"]
    p = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=600)  # a backstop far above the ~10 s a run takes
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the script and its fuzzing child
        out, _ = p.communicate()
        pytest.fail(f"{target}: no result after 600 s\n{out[-3000:]}")
    tail = out[-3000:]
    if p.returncode < 0:
        pytest.fail(f"{target}: fuzz_atheris.py was killed by signal {-p.returncode}\n{tail}")
    assert p.returncode == 0, f"{target}: fuzz_atheris.py exited with {p.returncode}\n{tail}"
    found = sorted(x.name for x in work.iterdir() if x.name.startswith(ARTEFACT_PREFIXES))
    assert not found, f"{target}: libFuzzer wrote {found} to {work}\n{tail}"
    assert f"#{ATHERIS_RUNS}\tDONE" in out, f"{target}: the run did not reach {ATHERIS_RUNS} inputs\n{tail}"
    left = sorted(x.name for x in temp.iterdir() if x.name.startswith("edgeport-"))
    assert not left, f"{target}: the script left {left} in its temp folder (TMPDIR)"


def test_atheris_all_fails_when_any_target_fails(monkeypatch):
    """`fuzz_atheris.py all` succeeds only when every target does: a child killed by a signal
    (a negative code) or exiting with a positive one is a failure, whatever the others did."""
    fuzz = _fuzz_script()
    for codes, ok in [({}, True), ({"detect": -9}, False), ({"image": -11}, False),
                      ({"labels": 77}, False), ({"tflite": 1, "image": -6}, False)]:
        calls = []
        monkeypatch.setattr(fuzz, "run_target", lambda name, args: calls.append(name) or codes.get(name, 0))  # noqa: B023 (used within this iteration)
        assert (fuzz.run_all(["-runs=10"]) == 0) is ok, codes
        assert calls == list(ATHERIS_TARGETS)


@pytest.mark.parametrize("child", ["import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                                   "raise SystemExit(3)", "pass"])
def test_atheris_run_target_reports_and_cleans_up(child, tmp_path, monkeypatch):
    """One target: a killed or failing child is a non-zero result, an artefact file fails a
    run that exited 0, and the temporary corpus and scratch file are removed in every case."""
    import sys

    fuzz = _fuzz_script()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(fuzz.tempfile, "tempdir", None)  # take TMPDIR into account
    seen = []

    def command(name, scratch, flags, corpus):
        seen.append((scratch, corpus))
        assert Path(corpus[0]).is_dir() and any(Path(corpus[0]).iterdir())  # the seeds
        return [sys.executable, "-c", child]

    monkeypatch.setattr(fuzz, "child_command", command)
    code = fuzz.run_target("labels", ["-runs=10", f"-artifact_prefix={work}{os.sep}"])
    assert code == {"pass": 0, "raise SystemExit(3)": 3}.get(child, 128 + 9)
    scratch, corpus = seen[0]
    assert Path(scratch).parent.parent == tmp_path  # made under TMPDIR, then removed
    assert not Path(corpus[0]).exists() and not Path(scratch).parent.exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["work"]
    if child == "pass":  # a child that exits 0 but leaves an artefact (libFuzzer's slow-unit-)
        artefact = work / "slow-unit-4567"
        monkeypatch.setattr(fuzz, "child_command", lambda name, scratch, flags, corpus: [
            sys.executable, "-c", f"open({str(artefact)!r}, 'w').close()"])
        assert fuzz.run_target("labels", [f"-artifact_prefix={work}{os.sep}"]) != 0
        assert artefact.exists()


def test_make_target_removes_its_temp_file(tmp_path):
    """make_target without a path makes a temporary file and removes it at interpreter exit."""
    import subprocess
    import sys

    code = ("import os, sys, runpy; m = runpy.run_path(sys.argv[1]); one = m['make_target']('detect'); "
            "one(b'PK\\x03\\x04'); one(b''); print(*os.listdir(sys.argv[2]))")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    p = subprocess.run([sys.executable, "-c", code, str(ATHERIS_SCRIPT), str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith("edgeport-fuzz-"), p.stdout  # it was there while in use
    assert list(tmp_path.iterdir()) == []
