"""ONNX -> TFLite float through onnx2tf, run in its own environment (converters/toolenv).

onnx2tf (PINTO0309, MIT; what Ultralytics exports TFLite with) rewrites an ONNX graph as
TensorFlow ops and converts that to TFLite. An NCHW image model comes out taking NHWC
images (onnx2tf moves the layout through the whole graph instead of adding a TRANSPOSE at
the input), so a device feeds it the TFLite way; the sidecar records the new layout. From
the float TFLite, `tflite -> tflite-int8 -> edgetpu` takes it on.

onnx2tf pins TensorFlow 2.19, NumPy 1.26 and onnx 1.19, which clash with edgeport's, so it
runs as a subprocess of the environment `converters.toolenv` builds from pinned
requirements on first use. Two things it needs that a plain `pip install` does not give:
`onnxsim` on PATH (the environment's bin folder goes first on PATH) and a file
`calibration_image_sample_data_20x128x128x3_float32.npy` in its working folder (test
images it otherwise downloads from GitHub): edgeport writes it from real photos (the
calibration folder, or the repository's images/) into the temporary working folder.
"""

import os
import re
import shutil
import tempfile
import time

from converters import formats
from converters.registry import conversion
from edge import console
from edge.errors import EdgeportError, InputError

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
SAMPLE_COUNT = 20
REPO_IMAGES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "images")
DEFAULT_TIMEOUT = 1800.0


def sample_images(folders, path, count=SAMPLE_COUNT):
    """Write onnx2tf's test-image file: `count` photos, 128x128 RGB, float32 in 0..1 (NHWC).

    Photos come from the first of `folders` holding images, cycled when there are fewer than
    `count`. Returns the list of files used. InputError when no folder holds an image.
    """
    import numpy as np

    from edge.preprocess import IMAGE_SUFFIXES, load_pixels

    files = []
    for folder in folders:
        if folder and os.path.isdir(folder):
            files = sorted(os.path.join(folder, n) for n in os.listdir(folder)
                           if n.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, n)))
            if files:
                break
    if not files:
        raise InputError("onnx2tf needs a few sample photos and none were found",
                         "pass --calibration DIR (a folder of images)")
    used = [files[i % len(files)] for i in range(count)]
    arrays = []
    for f in used:
        im = load_pixels(f, (128, 128), 3)
        arrays.append(np.asarray(im, dtype=np.float32) / 255.0)
    with open(path, "wb") as fh:
        np.save(fh, np.stack(arrays).astype(np.float32))
    return used


def failed_node(log_path, model):  # noqa: C901 (a named exception: to be split along its jobs)
    """'node NAME (OP): cause' from onnx2tf's log of a failed run, or None when the log names
    neither a node nor a cause.

    onnx2tf ends a failed conversion with `onnx_op_name: NAME`; the cause is the last
    exception in its trace (for a Keras layer, the line under "Exception encountered when
    calling layer", which says what TensorFlow refused). An internal error outside its per-node
    wrapper (`KeyError: 'val_0_2'`) names no node: the node is then the one that reads (else
    writes) the tensor the error names, else the op whose onnx2tf converter (onnx2tf/ops/OP.py)
    is the last frame of the trace."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", ln).strip() for ln in f]
    except OSError:
        return None
    names = [ln.split("onnx_op_name:", 1)[1].strip() for ln in lines if "onnx_op_name:" in ln]
    cause = None
    for k, ln in enumerate(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception): ", ln):
            cause = ln
            if "Exception encountered when calling layer" in ln:
                nxt = next((x for x in lines[k + 1:] if x), "")
                cause = f"{ln.split(':', 1)[0]}: {nxt}"
    frames = [m.group(1) for m in (re.search(r"onnx2tf/ops/(\w+)\.py", ln) for ln in lines) if m]
    if not names and cause is None:
        return None
    ops, readers, writers = {}, {}, {}

    for graph in formats.onnx_graphs(model.graph):
        for n in graph.node:
            ops.setdefault(n.name, n.op_type)
            for t in n.input:
                readers.setdefault(t, n.name)
            for t in n.output:
                writers.setdefault(t, n.name)
    cause = re.sub(r" for '\{\{node .*$", "", cause or "see the log")   # TensorFlow's node dump
    if names:
        node = names[-1]
    else:
        quoted = re.findall(r"'([^']+)'", cause)
        node = next((readers.get(t) or writers.get(t) or (t if t in ops else None)
                     for t in quoted if readers.get(t) or writers.get(t) or t in ops), None)
        if node is None and frames:
            same = [n for n, op in ops.items() if op == frames[-1]]
            if len(same) == 1:
                node = same[0]
            else:
                return f"onnx2tf's {frames[-1]} converter failed ({len(same)} {frames[-1]} nodes): {cause[:300]}"
        if node is None:
            return f"onnx2tf failed inside (no node named): {cause[:300]}"
        tensor = next((t for t in quoted if readers.get(t) == node or writers.get(t) == node), None)
        if tensor:
            cause = f"{cause} (onnx2tf lost its tensor '{tensor}')"
    op = f" ({ops[node]})" if node in ops else ""
    return f"node {node}{op}: {cause[:300]}"


_TF_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")


def tf_safe_names(model):
    """Rename the nodes and tensors whose names TensorFlow refuses as scope names (paddle2onnx
    writes 'Conv@0', 'Add@14'; onnx2tf then fails with "'Softmax@0' is not a valid scope name").
    Other characters become '_', keeping every name unique; names already valid are kept (graph
    inputs and outputs usually are). One mapping for every graph, subgraphs included, so a
    branch that reads an outer tensor still finds it. Returns {old name: new name}."""
    graphs = list(formats.onnx_graphs(model.graph))
    used = set()
    for g in graphs:
        used.update(n.name for n in g.node)
        used.update(x for n in g.node for x in list(n.input) + list(n.output))
        used.update(t.name for t in g.initializer)
    renames = {}

    def fix(name):
        if not name or _TF_NAME.match(name):
            return name
        if name not in renames:
            base = re.sub(r"[^A-Za-z0-9_.\\/>-]", "_", name)
            base = base if re.match(r"[A-Za-z0-9.]", base) else "t" + base
            new, i = base, 1
            while new in used:
                new, i = f"{base}_{i}", i + 1
            used.add(new)
            renames[name] = new
        return renames[name]

    for g in graphs:
        for n in g.node:
            n.name = fix(n.name)
            n.input[:] = [fix(x) for x in n.input]
            n.output[:] = [fix(x) for x in n.output]
        for coll in (g.input, g.output, g.value_info, g.initializer):
            for t in coll:
                t.name = fix(t.name)
    return renames


def _save_beside(model, files, path):
    """Save `model` (loaded without its external data) as `path`, with the external data files
    it names copied beside it. `files` is formats.external_data_files(): every location already
    checked to be inside the source's folder, so every copy lands inside the work folder."""
    import onnx

    work = os.path.realpath(os.path.dirname(path))
    for loc, src in files.items():
        dst = os.path.join(work, loc)
        if not os.path.realpath(dst).startswith(work + os.sep):
            raise InputError(f"external data {loc!r} would be written outside the work folder")
        if not os.path.exists(dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)
    onnx.save(model, path)


# ONNX ops onnx2tf would write as TensorFlow (Flex) ops, which plain LiteRT cannot run, and
# which its --replace_to_pseudo_operators (-rtpo) writes with builtin ops instead (Erf as a
# polynomial, GeLU from Tanh/Mul, ...): ONNX op type -> onnx2tf's name for it.
PSEUDO_OPERATORS = {"Erf": "Erf", "Gelu": "GeLU", "Asin": "Asin", "Acos": "Acos", "Atan": "Atan",
                    "MatMulInteger": "MatMulInteger"}


def pseudo_operator_args(model):
    """onnx2tf's -rtpo arguments for the ops of `model` (subgraphs included) that it would
    otherwise emit as Flex ops; [] when there are none."""
    present = {n.op_type for g in formats.onnx_graphs(model.graph) for n in g.node}
    names = sorted(PSEUDO_OPERATORS[t] for t in present if t in PSEUDO_OPERATORS)
    return ["-rtpo", *names] if names else []


def is_nchw_image(dims):
    return len(dims) == 4 and dims[1] in (1, 3) and dims[3] not in (1, 3)


def _tool_versions(env):
    keep = ("onnx2tf", "tensorflow", "onnx", "onnxruntime", "onnxsim", "numpy")
    out = {}
    for line in (env.manifest() or {}).get("packages") or []:
        name, _, version = line.partition("==")
        if name.lower() in keep:
            out[f"toolenv:{name.lower()}"] = version
    return out


@conversion(formats.ONNX, formats.TFLITE, extra="convert")
def onnx_to_tflite(source, output_path, options):
    from converters import toolenv
    from converters.routes.onnx_inputs import static_shapes
    from edge.tflite_model import TFLiteModel

    model = formats.load_onnx(source.path, load_external_data=False)
    external = formats.external_data_files(model, source.path)  # before any work
    fixed = static_shapes(model, options, source.name)
    inputs = [(n, dims) for n, dims, _ in fixed]
    args = []
    if any(how == "user" for _, _, how in fixed):
        args += ["-ois"] + [f"{n}:{','.join(map(str, dims))}" for n, dims in inputs if dims]
    elif any(how == "batch" for _, _, how in fixed):
        args += ["-b", "1"]            # a free batch becomes 1 (the Edge TPU needs it static)
    builtin_only = pseudo_operator_args(model)
    if builtin_only:
        options.progress(f"onnx2tf: {', '.join(builtin_only[1:])} written with builtin ops (plain LiteRT has no Flex ops)")
    args += builtin_only
    if options.dynamic_batch:
        options.progress("TFLite: --dynamic-batch is ignored, the batch stays static (Edge TPU needs it)")
    env = toolenv.ensure("onnx2tf", options.progress)
    t0 = time.monotonic()
    stem = os.path.splitext(os.path.basename(source.path))[0]
    logs = os.path.join(env.path, "logs")
    os.makedirs(logs, exist_ok=True)
    log_path = os.path.join(logs, f"{stem}.log")
    with tempfile.TemporaryDirectory(prefix="edgeport-onnx2tf-") as work:
        sample_images([options.calibration, REPO_IMAGES], os.path.join(work, SAMPLE_FILE))
        src = os.path.join(work, "model.onnx")
        # A copy, never a link: onnx2tf runs onnxsim with the same file as input and output,
        # which rewrites a hard-linked source in place.
        renamed = tf_safe_names(model)
        if renamed:
            options.progress(f"onnx2tf: {len(renamed)} node/tensor names TensorFlow refuses renamed (e.g. 'Conv@0')")
        if renamed or external:
            _save_beside(model, external, src)
        else:
            shutil.copyfile(source.path, src)
        out_dir = os.path.join(work, "out")
        options.progress(f"onnx2tf: {source.name} -> TFLite float (in {env.path})")
        try:
            with console.ticking(f"onnx2tf: converting {source.name}",
                                 enabled=console.shows_progress(options.progress)):
                toolenv.run(env, ["-i", src, "-o", out_dir, "-coion", "-n"] + args, cwd=work,
                            timeout=options.timeout if options.timeout and options.timeout > DEFAULT_TIMEOUT
                            else DEFAULT_TIMEOUT, log_path=log_path)
        except EdgeportError:
            where = failed_node(log_path, model)
            if where is None:
                raise
            for old, new in renamed.items():   # name the node as the user's model does
                if where.startswith(f"node {new} "):
                    where = f"node {old} " + where[len(f"node {new} "):]
                    break
            raise EdgeportError(f"onnx2tf cannot convert {source.name}: {where}",
                                f"the full output is in {log_path}") from None
        produced = os.path.join(out_dir, "model_float32.tflite")
        if not os.path.isfile(produced) or os.path.getsize(produced) == 0:
            raise EdgeportError(f"onnx2tf exited 0 but wrote no float32 TFLite model for {source.name}",
                                f"its output is in {log_path}")
        shutil.copyfile(produced, output_path)
    seconds = time.monotonic() - t0
    tfl = TFLiteModel.load(output_path)
    tfl_inputs = [list(t.shape) for t in tfl.inputs()]
    meta = {"route": "onnx2tf (ONNX -> TensorFlow -> TFLite float32), in its own environment",
            "toolenv": env.path, "input_shape": tfl_inputs[0] if len(tfl_inputs) == 1 else tfl_inputs,
            "onnx_input_shape": inputs[0][1] if len(inputs) == 1 else [d for _, d in inputs],
            "seconds_onnx2tf": round(seconds, 3), "versions": _tool_versions(env)}
    if builtin_only:
        meta["pseudo_operators"] = builtin_only[1:]
    if len(inputs) == 1 and is_nchw_image(inputs[0][1]):
        n, c, h, w = inputs[0][1]
        if tfl_inputs and tfl_inputs[0] == [n, h, w, c]:
            meta["input_layout"] = "NHWC (the ONNX NCHW input, channel-last for TFLite)"
            spec = dict(source.preprocessing or {})
            spec.update(options.preprocessing or {})
            spec["layout"] = "NHWC"
            meta["preprocessing"] = spec
    return meta
