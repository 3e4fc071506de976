"""Coverage-guided fuzzing (atheris / libFuzzer) of edgeport's parsers of untrusted bytes.

    python scripts/fuzz_atheris.py TARGET [-runs=N] [-max_len=M] [-seed=S] [-FLAG=V ...] [CORPUS_DIR ...]
    python scripts/fuzz_atheris.py all -runs=20000     # every target, N inputs each

Targets: tflite (edge.tflite_model.TFLiteModel + every query the commands make + the Edge TPU
inspector), detect (converters.formats.detect_format on a file), labels
(edge.labels.read_labels), image (edge.preprocess.load_image + preprocessing).

The same property as tests/project/test_fuzz.py: an input may give a result or an EdgeportError;
any other exception is a crash (libFuzzer writes the input to crash-<sha1> and stops).
Seeds: tests/data/*.tflite, the small Coral fixtures when ../shared is present, small
generated images and label files; libFuzzer mutates them guided by coverage of edge/ and
converters/. Needs `pip install atheris` (Linux x86-64 wheels; the 'dev' extra pins it).

Reproducible by default: each target is fuzzed in a child process with PYTHONHASHSEED=0 (unless
already set) and these libFuzzer flags unless given: -seed=1, -max_len=70000, -timeout=120 and
-report_slow_units=120 (per input: only a real hang trips them, never a loaded machine),
-rss_limit_mb=2048 and -malloc_limit_mb=2048, -reload=0 (no corpus re-reads on a wall-clock
timer). Bound a run with -runs=N (a count of inputs, the same on any machine) rather than
-max_total_time. Without a CORPUS_DIR the seeds go to a temporary folder, removed at the end
with the scratch file the target writes its inputs to, however the child ends.

Exit status: 0 when every child exited 0 and left no crash-/timeout-/slow-unit-/oom-/leak-
artefact (where -artifact_prefix points, else the current folder); otherwise non-zero (1, or
the child's own exit code for a single target; 128+N for a child killed by signal N).
"""

import atexit
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORAL = REPO.parent / "shared" / "fixtures" / "coral"
sys.path.insert(0, str(REPO))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGETS = ("tflite", "detect", "labels", "image")
# libFuzzer's artefact file prefixes (slow-unit-: an input slower than -report_slow_units).
ARTEFACTS = ("crash-", "timeout-", "slow-unit-", "oom-", "leak-")
HASH_SEED = "0"
DEFAULT_FLAGS = {
    "-seed": "1",
    "-max_len": "70000",
    # A hang (e.g. a pixel bomb) is a bug, but the limit must not depend on machine load: an
    # input takes well under a second here, so only a real hang reaches 120 s.
    "-timeout": "120",
    "-report_slow_units": "120",
    "-rss_limit_mb": "2048",
    "-malloc_limit_mb": "2048",  # enforced only where libFuzzer has malloc hooks (sanitizer builds)
    "-reload": "0",
}
CHILD = "--child"  # internal: `fuzz_atheris.py --child TARGET SCRATCH_FILE FLAGS... CORPUS...`


def _seed_files(target):
    seeds = []
    if target in ("tflite", "detect"):
        seeds += [p.read_bytes() for p in sorted((REPO / "tests" / "data").glob("*.tflite"))]
        for name in ("split_concat.tflite", "split_concat_edgetpu.tflite", "keras_lstm_mnist_ptq.tflite"):
            if (CORAL / name).is_file():
                seeds.append((CORAL / name).read_bytes())
    if target == "detect":
        seeds += [b"\x08\x08\x12\x0eedgeport-fuzz:\x00", b"PK\x03\x04", b"\x89HDF\r\n\x1a\n",
                  b"\x00\x00\x00\x00ORTM"]
    if target == "labels":
        seeds += [b"background\ncat\ndog\n", b"0 cat\n1: dog\n5 bird\n", b"\xef\xbb\xbfa\r\nb\r\n"]
    if target == "image":
        from PIL import Image

        im = Image.new("RGB", (9, 7), (200, 30, 30))
        for fmt, mode in (("PNG", "RGB"), ("PNG", "P"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("BMP", "L"),
                          ("GIF", "P"), ("TIFF", "RGB")):
            buf = io.BytesIO()
            im.convert(mode).save(buf, fmt)
            seeds.append(buf.getvalue())
    return seeds


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def make_target(name, path=None):
    """A function of one bytes input that raises only on a crash.

    The targets that read a file write each input to `path`; without one, a temporary file
    is made and removed when the interpreter exits normally (libFuzzer ends the fuzzing
    process with C exit(), past Python's atexit: the fuzzing child gets a path inside the
    folder its parent removes)."""
    from edge.errors import EdgeportError

    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}: tflite, detect, labels, image or all")
    if path is None:
        tmp = tempfile.NamedTemporaryFile(prefix="edgeport-fuzz-", delete=False)
        tmp.close()
        path = tmp.name
        atexit.register(_remove, path)
    path = str(path)

    if name == "tflite":
        from converters.formats import tflite_kind
        from converters.validation.inspect import describe, format_text
        from edge.tflite_model import TFLiteModel

        def run(data):
            m = TFLiteModel(data, "fuzz.tflite")
            m.inputs(), m.outputs(), m.op_names(), m.custom_ops(), tflite_kind(m)
            for t in m.main.tensors[:64]:
                m.buffer_data(t.buffer)
            with open(path, "wb") as f:
                f.write(data)
            format_text(describe(path, edgetpu=True))
    elif name == "detect":
        from converters.formats import detect_format

        def run(data):
            with open(path, "wb") as f:
                f.write(data)
            detect_format(path)
    elif name == "labels":
        from edge.labels import check_labels, read_labels

        def run(data):
            with open(path, "wb") as f:
                f.write(data)
            labels = read_labels(path)
            check_labels(labels, 10)
    elif name == "image":
        import numpy as np

        from edge.preprocess import InputSpec, Preprocessor, load_image

        pre = Preprocessor(InputSpec(0, "x", (1, 8, 8, 3), np.dtype(np.uint8), "NHWC", 8, 8, 3, 1 / 128, 128))

        def run(data):
            with open(path, "wb") as f:
                f.write(data)
            pre(pre.array(load_image(path, 3)))

    def one(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                run(bytes(data))
            except EdgeportError:
                pass

    return one


def _flag_name(arg):
    return arg.split("=", 1)[0]


def _split(args):
    """(libFuzzer flags with the defaults added, corpus folders)."""
    flags = [a for a in args if a.startswith("-")]
    corpus = [a for a in args if not a.startswith("-")]
    given = {_flag_name(f) for f in flags}
    flags += [f"{k}={v}" for k, v in DEFAULT_FLAGS.items() if k not in given]
    return flags, corpus


def _artefact_prefix(flags):
    prefix = ""
    for f in flags:
        if _flag_name(f) == "-artifact_prefix":
            prefix = f.split("=", 1)[1] if "=" in f else ""
    return prefix


def artefacts(prefix=""):
    """libFuzzer's artefact files at `prefix` (the -artifact_prefix: a folder ending in /, or a
    file-name prefix; "" is the current folder)."""
    folder, start = os.path.split(prefix)
    folder = folder or "."
    if not os.path.isdir(folder):
        return set()
    return {os.path.join(folder, f) for f in os.listdir(folder)
            if f.startswith(start) and f[len(start):].startswith(ARTEFACTS)}


def child_command(name, scratch, flags, corpus):
    """The command that fuzzes one target (in a fresh interpreter: libFuzzer exits the process)."""
    return [sys.executable, str(Path(__file__).resolve()), CHILD, name, str(scratch), *flags, *corpus]


def _exit_code(name, code):
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = f"signal {-code}"
        print(f"fuzz_atheris: {name}: the fuzzing process was killed by {sig}", file=sys.stderr, flush=True)
        return 128 - code
    if code:
        print(f"fuzz_atheris: {name}: the fuzzing process exited with {code}", file=sys.stderr, flush=True)
    return code


def run_target(name, args):
    """Fuzz one target in a child process; returns 0, or non-zero for a failure of any kind.

    The seed corpus (when no CORPUS_DIR is given) and the scratch input file live in one
    temporary folder that is removed whatever happens to the child."""
    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}: tflite, detect, labels, image or all")
    flags, corpus = _split(args)
    prefix = _artefact_prefix(flags)
    before = artefacts(prefix)
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", HASH_SEED)
    work = tempfile.mkdtemp(prefix=f"edgeport-fuzz-{name}-")
    try:
        if not corpus:
            seeds = Path(work, "corpus")
            seeds.mkdir()
            for i, data in enumerate(_seed_files(name)):
                (seeds / f"seed{i}").write_bytes(data)
            corpus = [str(seeds)]
        proc = subprocess.Popen(child_command(name, Path(work, "input"), flags, corpus), env=env)
        try:
            code = proc.wait()
        except BaseException:  # Ctrl-C (the child got it too) or a kill of this process
            proc.kill()
            proc.wait()
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    code = _exit_code(name, code)
    found = sorted(artefacts(prefix) - before)
    if found:
        print(f"fuzz_atheris: {name}: artefacts written: {', '.join(found)}", file=sys.stderr, flush=True)
        code = code or 1
    return code


def run_all(args):
    """Every target in turn; 0 only when every one succeeded (a killed child is a failure)."""
    failed = {}
    for name in TARGETS:
        code = run_target(name, args)
        if code != 0:
            failed[name] = code
    if failed:
        print(f"fuzz_atheris: failed: {', '.join(f'{t} ({c})' for t, c in failed.items())}",
              file=sys.stderr, flush=True)
        return 1
    return 0


def fuzz_child(name, scratch, args):
    """In the child: instrument, then hand over to libFuzzer (which exits the process)."""
    import atheris

    # Pillow's decoders are Python plugins: instrument them too, so image coverage guides.
    include = ["edge", "converters"] + (["PIL"] if name == "image" else [])
    with atheris.instrument_imports(include=include):
        target = make_target(name, scratch)
    atheris.Setup([sys.argv[0], *args], target)
    atheris.Fuzz()


def main(argv):
    if len(argv) >= 4 and argv[1] == CHILD:
        return fuzz_child(argv[2], argv[3], argv[4:])
    if len(argv) < 2 or argv[1].startswith("-"):
        raise SystemExit(__doc__)
    name, rest = argv[1], argv[2:]
    if name != "all" and name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}: tflite, detect, labels, image or all")
    try:
        import atheris  # noqa: F401
    except ImportError:
        raise SystemExit("fuzz_atheris: needs atheris (pip install atheris; Linux x86-64 wheels)") from None
    # A terminated run (SIGTERM) still stops its child and removes its temporary folder.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if name == "all":
        return run_all(rest)
    return run_target(name, rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
