"""Coverage-guided fuzzing (atheris / libFuzzer) of edgeport's parsers of untrusted bytes.

    python scripts/fuzz_atheris.py TARGET [-runs=N] [-max_len=M] [-seed=S] [CORPUS_DIR ...]
    python scripts/fuzz_atheris.py all -runs=20000     # every target, N inputs each

Targets: tflite (edge.tflite_model.TFLiteModel + every query the commands make + the Edge TPU
inspector), detect (converters.formats.detect_format on a file), labels
(edge.labels.read_labels), image (edge.preprocess.load_image + preprocessing).

The same property as tests/test_fuzz.py: an input may give a result or an EdgeportError;
any other exception is a crash (libFuzzer writes the input to crash-<sha1> and stops).
Seeds: tests/data/*.tflite, the small Coral fixtures when ../shared is present, small
generated images and label files; libFuzzer mutates them guided by coverage of edge/ and
converters/. Needs `pip install atheris` (Linux x86-64 wheels; the 'dev' extra pins it).
"""

import io
import os
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORAL = REPO.parent / "shared" / "fixtures" / "coral"
sys.path.insert(0, str(REPO))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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


def make_target(name):
    """A function of one bytes input that raises only on a crash."""
    from edge.errors import EdgeportError

    tmp = tempfile.NamedTemporaryFile(prefix="edgeport-fuzz-", delete=False)
    tmp.close()
    path = tmp.name

    if name == "tflite":
        from converters.validation.inspect import describe, format_text
        from converters.formats import tflite_kind
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
    else:
        raise SystemExit(f"unknown target {name!r}: tflite, detect, labels, image or all")

    def one(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                run(bytes(data))
            except EdgeportError:
                pass

    return one


def main(argv):
    import atheris

    if len(argv) < 2 or argv[1].startswith("-"):
        raise SystemExit(__doc__)
    name, rest = argv[1], argv[2:]
    if name == "all":
        import subprocess

        codes = [subprocess.call([sys.executable, __file__, t, *rest]) for t in ("tflite", "detect", "labels", "image")]
        return max(codes)
    corpus = [a for a in rest if not a.startswith("-")]
    flags = [a for a in rest if a.startswith("-")]
    if not any(f.startswith("-max_len") for f in flags):
        flags.append("-max_len=70000")
    if not any(f.startswith("-timeout") for f in flags):
        flags.append("-timeout=10")  # an input taking > 10 s is a bug too (e.g. a pixel bomb)
    # Pillow's decoders are Python plugins: instrument them too, so image coverage guides.
    include = ["edge", "converters"] + (["PIL"] if name == "image" else [])
    with atheris.instrument_imports(include=include):
        target = make_target(name)
        if not corpus:  # write the seeds to a fresh corpus folder (imports PIL: inside the block)
            corpus = [tempfile.mkdtemp(prefix=f"edgeport-corpus-{name}-")]
            for i, data in enumerate(_seed_files(name)):
                Path(corpus[0], f"seed{i}").write_bytes(data)
    atheris.Setup([argv[0], *flags, *corpus], target)
    atheris.Fuzz()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
