"""Is a model file well formed and loadable? Checks per format, used by `edgeport check`."""

from edge.errors import InputError, first_line


class Checks:
    def __init__(self):
        self.items = []       # (name, ok, detail)
        self.info = {}
        self.graph = []       # readable lines

    def add(self, name, ok, detail=""):
        self.items.append((name, bool(ok), str(detail)))
        return ok

    @property
    def passed(self):
        return all(ok for _, ok, _ in self.items)


def check_onnx(path, c):
    from edge.errors import require

    onnx = require("onnx", "convert", "checking ONNX models")
    from edge.errors import InputError

    try:
        model = onnx.load(path)
    except Exception as e:
        raise InputError(f"onnx cannot read {path}: {first_line(e)}") from None
    c.info.update(ir_version=model.ir_version, producer=f"{model.producer_name} {model.producer_version}".strip(),
                  opsets={o.domain or "ai.onnx": o.version for o in model.opset_import},
                  nodes=len(model.graph.node))
    try:
        onnx.checker.check_model(model, full_check=True)
        c.add("onnx.checker (full)", True, "passed")
    except Exception as e:
        c.add("onnx.checker (full)", False, first_line(e))
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        c.add("shape inference (strict)", True, f"{len(inferred.graph.value_info)} intermediate shapes")
    except Exception as e:
        inferred = model
        c.add("shape inference (strict)", False, first_line(e))
    c.add("inputs present", len(model.graph.input) > 0, ", ".join(_vi(v) for v in model.graph.input))
    c.add("outputs present", len(model.graph.output) > 0, ", ".join(_vi(v) for v in model.graph.output))
    _ort_session(path, c)
    shapes = {v.name: _vi(v) for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for i, n in enumerate(model.graph.node):
        outs = ", ".join(shapes.get(o, o) for o in n.output)
        c.graph.append(f"[{i}] {n.op_type}{' ' + n.name if n.name else ''}: "
                       f"{', '.join(n.input)} -> {outs}")


def _vi(v):
    t = v.type.tensor_type
    dims = [d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?") for d in t.shape.dim]
    from edge.ort import onnx_dtype

    try:
        dt = onnx_dtype(t.elem_type).name
    except KeyError:
        dt = str(t.elem_type)
    return f"{v.name} {dt}[{','.join(dims)}]"


def _ort_session(path, c):
    try:
        import onnxruntime as ort
    except ImportError:
        c.add("onnxruntime session", False, "onnxruntime is not installed (pip install 'edgeport[convert]')")
        return None
    from edge.ort import ort_session

    try:
        s = ort_session(path, log_level=3)
    except Exception as e:
        c.add("onnxruntime session", False, first_line(e))
        return None
    c.add("onnxruntime session", True, f"onnxruntime {ort.__version__}")
    return s


def check_ort(path, c):
    s = _ort_session(path, c)
    if s is None:
        return
    ins, outs = s.get_inputs(), s.get_outputs()
    c.add("inputs present", bool(ins), ", ".join(f"{i.name} {i.type}{i.shape}" for i in ins))
    c.add("outputs present", bool(outs), ", ".join(f"{o.name} {o.type}{o.shape}" for o in outs))
    c.graph.append("(an ORT flatbuffer's graph is not readable here; --graph on the .onnx it "
                   "came from shows it)")


def check_tflite(path, c, runtime=None):
    from edge.errors import EdgeportError, InputError
    from edge.tflite_model import TFLiteModel

    try:
        m = TFLiteModel.load(path)  # its parser checks tensor indices and opcode indices
    except EdgeportError as e:
        c.add("flatbuffer structure", False, e.message)
        return
    c.add("flatbuffer structure", True, f"schema version {m.version}, {len(m.subgraphs)} subgraph(s), "
          "tensor and opcode indices in range")
    unknown = sorted({op for op, _, _ in m.opcodes if op.startswith("UNKNOWN_")})
    c.add("opcodes known", not unknown, ", ".join(unknown) or f"{len(m.opcodes)} opcodes")
    g = m.main
    c.add("inputs present", bool(g.inputs), ", ".join(_tt(g.tensors[i]) for i in g.inputs))
    c.add("outputs present", bool(g.outputs), ", ".join(_tt(g.tensors[i]) for i in g.outputs))
    bad = []
    nbuf = m.buffer_count
    sparse = getattr(m, "sparse", set())
    for si, sg in enumerate(m.subgraphs):
        for t in sg.tensors:
            if t.buffer >= nbuf:
                bad.append(f"{t.name}: buffer {t.buffer} of {nbuf}")
                continue
            try:
                data = m.buffer_data(t.buffer)
            except EdgeportError as e:
                bad.append(f"{t.name}: {e.message}")
                continue
            if (si, t.index) in sparse:  # stored compressed: smaller than its dense shape
                continue
            if data and t.shape and all(d > 0 for d in t.shape):
                need = _itemsize(t.dtype) * _prod(t.shape)
                if need and len(data) < need:
                    bad.append(f"{t.name}: {len(data)} bytes for {need}")
    c.add("buffers in bounds", not bad, "; ".join(bad[:5]) or f"{nbuf} buffers"
          + (f" ({len(sparse)} sparse tensors stored compressed, densified at load)"
             if sparse else ""))
    custom = m.custom_ops()
    c.info["custom_ops"] = custom
    c.info["edgetpu_compiled"] = m.is_edgetpu_compiled()
    c.info["ops"] = len(g.operators)
    if custom:
        c.add("custom ops", True, ", ".join(custom) + " (need their kernels at run time)")
    try:
        from edge.interpreter import make_interpreter

        it, info = make_interpreter(path, device="auto", runtime=runtime)
        c.add("tensors allocated", True, f"{info['runtime']} on {info['device']}")
        del it
    except InputError as e:
        if "no TFLite interpreter" in e.message:
            c.add("tensors allocated", True, "skipped: no TFLite interpreter installed")
        else:
            c.add("tensors allocated", False, e.message)
    except EdgeportError as e:
        if m.is_edgetpu_compiled():
            c.info["allocation"] = f"skipped: {e.message}"
        else:
            c.add("tensors allocated", False, e.message)
    for op in g.operators:
        name = op.custom_code if op.opcode == "CUSTOM" else op.opcode
        ins = ", ".join(g.tensors[i].name if i >= 0 else "-" for i in op.inputs)
        outs = ", ".join(_tt(g.tensors[i]) for i in op.outputs if i >= 0)
        c.graph.append(f"[{op.index}] {name}: {ins} -> {outs}")


def _tt(t):
    q = f" q(scale={t.quantization.scale[0]:.4g}, zp={t.quantization.zero_point[0]})" \
        if t.quantization and len(t.quantization.scale) == 1 and t.quantization.zero_point else \
        (f" q(scale={t.quantization.scale[0]:.4g})" if t.quantization and len(t.quantization.scale) == 1 else "")
    return f"{t.name} {t.dtype.lower()}{list(t.shape)}{q}"


def _itemsize(dtype):
    return {"FLOAT32": 4, "FLOAT16": 2, "FLOAT64": 8, "INT8": 1, "UINT8": 1, "INT16": 2,
            "INT32": 4, "INT64": 8, "BOOL": 1}.get(dtype, 0)


def _prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def check_coreml(path, c):
    from converters.validation.runners.coreml import CoreMLRunner

    _check_active(CoreMLRunner(path), c, "spec readable", _check_coreml_runner)


def _check_active(r, c, loads_item, checks):
    """Activate runner `r` (a failure is check `loads_item`, failed), run `checks(r, c)`, and
    always deactivate: a Core ML runner's private copy of the package goes with it."""
    try:
        r.activate()
    except Exception as e:
        c.add(loads_item, False, first_line(e))
        return
    try:
        checks(r, c)
    finally:
        r.deactivate()


def _check_coreml_runner(r, c):
    c.add("spec readable", True, r.info.get("runtime", ""))
    ins, outs = r.input_metadata(), r.output_metadata()
    c.add("inputs present", bool(ins), ", ".join(f"{m.name} {m.dtype.name}{list(m.shape)}" for m in ins))
    c.add("outputs present", bool(outs), ", ".join(f"{m.name}{list(m.shape)}" for m in outs))
    labels = r.class_labels()
    if labels is not None:
        c.add("classifier labels", len(labels) > 0, f"{len(labels)} labels")
    c.info["metadata"] = r.model_metadata()
    c.info["type"] = r.spec.WhichOneof("Type")
    if not r.numbers:
        c.info["note"] = r.structure_reason or "structure checked only"
    elif r.info.get("note"):
        c.info["note"] = r.info["note"]   # the Core ML reference executor, off macOS
    if r.spec.WhichOneof("Type") == "mlProgram":
        for _fname, fn in r.spec.mlProgram.functions.items():
            for _spec_name, block in fn.block_specializations.items():
                for i, op in enumerate(block.operations):
                    outs_ = ", ".join(o.name for o in op.outputs)
                    c.graph.append(f"[{i}] {op.type}: -> {outs_}")
    elif r.spec.WhichOneof("Type") in ("neuralNetwork", "neuralNetworkClassifier"):
        nn = getattr(r.spec, r.spec.WhichOneof("Type"))
        for i, layer in enumerate(nn.layers):
            c.graph.append(f"[{i}] {layer.WhichOneof('layer')} {layer.name}: "
                           f"{', '.join(layer.input)} -> {', '.join(layer.output)}")


def check_with_runner(path, fmt, c, trust_pickle=False, keras_unsafe=False, input_shape=None):
    from converters.artefact import Artefact
    from converters.validation.runners import runner_for

    r = runner_for(Artefact.open(path, fmt), trust_pickle=trust_pickle, keras_unsafe=keras_unsafe,
                   input_shape=tuple(input_shape) if input_shape else None)
    _check_active(r, c, "loads", lambda r, c: _check_runner(r, fmt, c))


def _check_runner(r, fmt, c):
    try:
        ins = r.input_metadata()
    except InputError as e:
        schema = r.forward_schema() if hasattr(r, "forward_schema") else None
        if schema is None:
            c.add("loads", False, first_line(e))
            return
        # TorchScript records no shapes: list the forward signature, the loaded module is fine
        c.add("loads", True, r.info.get("runtime", fmt))
        c.add("inputs present", True, f"forward{schema} (TorchScript records no shapes: give "
              "them to validate/convert with --input-shapes NAME:[..], other arguments with --arg)")
        return
    c.add("loads", True, r.info.get("runtime", fmt))
    c.add("inputs present", bool(ins), ", ".join(f"{m.name} {m.dtype.name}{list(m.shape)}" for m in ins))
    outs = r.output_metadata()
    if outs is not None:
        c.add("outputs present", bool(outs), ", ".join(f"{m.name}{list(m.shape)}" for m in outs))


def check(path, runtime=None, trust_pickle=False, keras_unsafe=False, input_shape=None):
    """Checks for the model at `path` (InputError when it is not a model at all)."""
    from converters import formats

    fmt = formats.detect_format(path)
    c = Checks()
    c.info["format"] = fmt
    if fmt == formats.ONNX:
        check_onnx(path, c)
    elif fmt == formats.ORT:
        check_ort(path, c)
    elif fmt in (formats.TFLITE, formats.TFLITE_INT8, formats.EDGETPU):
        check_tflite(path, c, runtime)
    elif fmt == formats.COREML:
        check_coreml(path, c)
    else:
        check_with_runner(path, fmt, c, trust_pickle, keras_unsafe, input_shape)
    return c
