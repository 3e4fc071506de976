"""Full-integer TFLite -> Edge TPU: check the model, run edgetpu_compiler, report the mapping.

The compiler runs through a backend of `backends` (local, docker, podman). Its
result counts only when it exited 0 within the timeout and wrote a non-empty TFLite model
holding an edgetpu-custom-op: a compiler that prints success but leaves a stub fails here.
Beside the final model go the compiler's operation log (`<name>.log`) and a report JSON
(`<name>.report.json`); `format_report` turns the report into the lines the CLI prints.
"""

import json
import os
import re
import shutil
import tempfile

from converters import formats
from converters.edgetpu.backends import CompilerFailed, compiler_flags, select_backend
from converters.edgetpu.log import format_report as _format_log_report
from converters.edgetpu.log import parse_compiler_output
from converters.registry import conversion
from edge.errors import InputError
from edge.tflite_model import TFLiteModel

FLOATS = ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")
INT8_HINT = ("the Edge TPU needs a full-integer model: make one with `edgeport convert SOURCE "
             "--to tflite-int8 --calibration IMAGES_DIR` (SOURCE = this float TFLite, or the Keras, "
             "SavedModel, ONNX or PyTorch model it came from), or go straight there with `edgeport "
             "convert SOURCE --to edgetpu --calibration IMAGES_DIR`")


def precheck(model):
    """Raise InputError unless `model` (a TFLiteModel) is what the compiler takes.

    Coral's model requirements: tensors quantized to 8 bits (int8/uint8; int32 biases),
    sizes constant at compile time, and batch 1 here (a batch > 1 cannot fit the rank rule).
    Custom ops are left out: they run on the CPU anyway, whatever their types.
    """
    name = os.path.basename(model.name)
    if model.is_edgetpu_compiled():
        raise InputError(f"{name} is already compiled for the Edge TPU", "pass the model before compilation")
    g = model.main
    for op in g.operators:
        if op.opcode in ("CUSTOM", "QUANTIZE", "DEQUANTIZE"):
            continue    # QUANTIZE/DEQUANTIZE at the edges convert float I/O, like tflite_kind
        for t in op.inputs + op.outputs:
            if t >= 0 and g.tensors[t].dtype in FLOATS:
                raise InputError(f"{name}: model not quantized (op #{op.index} {op.opcode} works on "
                                 f"{g.tensors[t].dtype} tensor '{g.tensors[t].name}')", INT8_HINT)
    for t in g.tensors:
        if t.shape_signature and any(d < 0 for d in t.shape_signature):
            raise InputError(f"{name}: tensor '{t.name}' has a dynamic shape {list(t.shape_signature)}; "
                             "the Edge TPU needs sizes fixed at compile time",
                             "convert the source again with a fixed input shape (e.g. --input-shape 1,...)")
    for t in model.inputs():
        if len(t.shape) >= 2 and t.shape[0] != 1:
            raise InputError(f"{name}: input '{t.name}' has batch {t.shape[0]} {list(t.shape)}; "
                             "the Edge TPU takes batch 1", "convert the source again with batch 1")


def _stem(path):
    base = os.path.basename(path)
    return base[:-len(".tflite")] if base.endswith(".tflite") else os.path.splitext(base)[0]


def companion_paths(model_path):
    """(log, report) paths written beside a compiled model."""
    stem = os.path.join(os.path.dirname(model_path), _stem(model_path))
    return stem + ".log", stem + ".report.json"


def _fail(message, report, hint=None):
    err = CompilerFailed(message, hint or f"the command was: {' '.join(report.get('command') or [])}")
    err.report = report       # the parsed output, for callers that want to show or keep it
    raise err


WORK_PREFIX = "edgeport-edgetpu-"


def sweep_stale_work_dirs(root=None):
    """Remove `edgeport-edgetpu-PID-*` work folders (in the temp folder) whose process is gone:
    a compile killed with SIGKILL cannot remove its own. Never fails."""
    from converters.atomic import orphans

    for path in orphans(root or tempfile.gettempdir(), WORK_PREFIX):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)


def compile_model(model_path, options, num_segments=None):
    """Run the compiler on `model_path`; returns (report, {file name: bytes}, operation log text).

    With num_segments > 1 the files are the N segments the compiler names
    `<stem>_segment_<i>_of_<N>_edgetpu.tflite`. Raises CompilerUnavailable / CompilerFailed /
    InputError. Never touches model_path.
    """
    model = TFLiteModel.load(model_path)
    precheck(model)
    from converters.edgetpu.analyzer import predict_mapping

    prediction = predict_mapping(model, options.min_runtime_version)
    backend = select_backend(options.compiler or "auto", options)
    flags = compiler_flags(options.min_runtime_version, num_segments if (num_segments or 1) > 1 else None,
                           options.search_delegate, options.timeout)
    sweep_stale_work_dirs()
    # The PID in the name lets a later run remove this folder if this process is SIGKILLed.
    with tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-") as work:
        # The compiler sees a copy with a plain name (safe in a mount spec; the input stays untouched).
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", _stem(model_path)) or "model"
        in_dir, tmp_out = os.path.join(work, "in"), os.path.join(work, "out")
        os.makedirs(in_dir)
        os.makedirs(tmp_out)
        staged = os.path.join(in_dir, f"{stem}.tflite")
        shutil.copyfile(model_path, staged)
        options.progress(f"compiling {os.path.basename(model_path)} for the Edge TPU with edgetpu_compiler "
                         f"via {backend.describe()} (timeout {options.timeout:g} s)")
        result = backend.compile(staged, tmp_out, flags, options.timeout, progress=options.progress)
        log_file = os.path.join(tmp_out, f"{stem}_edgetpu.log")
        log_text = open(log_file, encoding="utf-8", errors="replace").read() if os.path.exists(log_file) else ""
        report = parse_compiler_output(result.stdout, log_text)
        report.update({"backend": result.backend, "command": result.command, "returncode": result.returncode,
                       "seconds": round(result.seconds, 2), "timed_out": result.timed_out,
                       "prediction": {k: prediction[k] for k in ("mapped", "total", "cpu_ops")}})
        if result.container:
            report["container"] = result.container
        if result.timed_out:
            _fail(f"edgetpu_compiler did not finish within {options.timeout:g} s and was killed", report,
                  "raise --timeout, or try --search-delegate off / fewer --num-segments")
        if result.returncode != 0:
            said = report["errors"] or (result.stderr or result.stdout or "").strip().splitlines()[-3:]
            hint = INT8_HINT if any("not quantized" in e for e in said) else None
            _fail(f"edgetpu_compiler failed (exit {result.returncode}): {' / '.join(said) or 'no output'}",
                  report, hint)
        n = num_segments or 1
        names = ([f"{stem}_edgetpu.tflite"] if n <= 1 else
                 [f"{stem}_segment_{i}_of_{n}_edgetpu.tflite" for i in range(n)])
        compiled = {}
        for name in names:
            path = os.path.join(tmp_out, name)
            if not os.path.exists(path):
                _fail(f"edgetpu_compiler exited 0 but wrote no {name}", report)
            if os.path.getsize(path) == 0:
                _fail(f"edgetpu_compiler exited 0 but {name} is empty", report)
            try:
                out_model = TFLiteModel.load(path)
            except InputError as e:
                _fail(f"edgetpu_compiler wrote {name}, but it is not a valid TFLite model: {e.message}", report)
            if not out_model.is_edgetpu_compiled() and (report.get("mapped") or 0) > 0:
                _fail(f"edgetpu_compiler wrote {name} without an edgetpu-custom-op although it reports "
                      f"{report['mapped']} mapped ops", report)
            with open(path, "rb") as f:
                compiled[name] = f.read()
        if not report["operators"] and report.get("total") is None:
            _fail("edgetpu_compiler wrote a model but printed no operation table or counts", report)
        return report, compiled, log_text


@conversion(formats.TFLITE_INT8, formats.EDGETPU, extra="convert")
def tflite_int8_to_edgetpu(source, output_path, options):
    """Compile a full-integer TFLite for the Edge TPU; returns the compile report as metadata.

    Beside the model go `<name>.log` (the compiler's operation log) and `<name>.report.json`,
    written next to output_path and handed to the pipeline as "companions" (it renames them
    beside the final model). With --num-segments N > 1 the whole model is compiled as the
    artefact, then compiled again into N segments for pipelining, kept beside it as
    `<stem>_segment_<i>_of_<N>_edgetpu.tflite`.
    """
    report, compiled, log_text = compile_model(source.path, options)
    with open(output_path, "wb") as f:
        f.write(next(iter(compiled.values())))
    folder = os.path.dirname(os.path.abspath(output_path))
    companions = []
    n = options.num_segments or 1
    if n > 1:
        seg_report, segments, _ = compile_model(source.path, options, num_segments=n)
        stem = _stem(output_path)
        stem = stem[:-len("_edgetpu")] if stem.endswith("_edgetpu") else stem
        report["segments"] = []
        for i, data in enumerate(segments.values()):
            name = f"{stem}_segment_{i}_of_{n}_edgetpu.tflite"
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
            companions.append(name)
            report["segments"].append(name)
        report["segments_report"] = {k: seg_report.get(k) for k in ("edgetpu_subgraphs", "mapped", "total",
                                                                     "operators")}
    log_path, report_path = companion_paths(output_path)
    if log_text:
        with open(log_path, "w", encoding="utf-8") as f:
            f.write(log_text)
        companions.append(os.path.basename(log_path))
        report["operation_log_file"] = os.path.basename(log_path)
    with open(report_path, "w", encoding="utf-8") as f:
        f.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    companions.append(os.path.basename(report_path))
    return {"edgetpu": {k: report.get(k) for k in ("compiler_version", "mapped", "total", "edgetpu_subgraphs",
                                                     "backend", "container", "operators", "segments")
                        if report.get(k) is not None},
            "edgetpu_report": os.path.basename(report_path),
            "companions": companions}


def format_report(report):
    """"N of M ops mapped to the Edge TPU" and the ops left on the CPU, for the CLI to print."""
    report = report.get("edgetpu", report) if isinstance(report, dict) else report
    if "cpu_operators" not in report and "operators" in report:
        report = dict(report, cpu_operators=[r for r in report["operators"] if not r.get("mapped")])
    return _format_log_report(report)


def report_for_artefact(path):
    """The format_report text of a compiled artefact, from its sidecar (None when it has none)."""
    from edge.sidecar import read_sidecar

    block = (read_sidecar(path).get("conversion") or {}).get("edgetpu")
    return format_report(block) if block else None
