"""Full-integer TFLite from a float TFLite: bias correction and TensorFlow's calibrator.

The engine behind TFLiteConverter's `representative_dataset` with the classic quantizer
(`tensorflow.lite.python.optimize.calibrator`): int8 weights (per channel) and activations,
uint8 or int8 I/O through one QUANTIZE at each end -- the layout the Edge TPU compiler takes.
"""

import collections

from converters.tflite_objects import drop_unused_opcodes
from edge import console
from edge.errors import EdgeportError, MissingDependency, require


def fold_float16_weights(float_bytes):
    """Float16 weights (FLOAT16 constants behind DEQUANTIZE ops, as MediaPipe and TFLite's
    float16 quantization ship them) turned into float32 constants, the DEQUANTIZE ops removed.

    The calibrator quantizes float32 weights; a DEQUANTIZE of a float16 constant in front of a
    conv would otherwise stay float. Returns (new bytes, number of DEQUANTIZE ops folded).
    """
    import numpy as np

    try:
        from tensorflow.lite.tools import flatbuffer_utils as fu
    except ImportError:
        raise MissingDependency("tensorflow", "convert", "full-integer TFLite quantization") from None

    model = fu.convert_bytearray_to_object(bytearray(float_bytes))
    schema = fu.schema_fb
    codes = [max(oc.builtinCode, oc.deprecatedBuiltinCode) for oc in model.operatorCodes]
    folded = 0
    for g in model.subgraphs:
        keep = []
        for op in g.operators:
            if codes[op.opcodeIndex] == schema.BuiltinOperator.DEQUANTIZE and len(op.inputs) == 1:
                src, dst = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
                data = model.buffers[src.buffer].data if 0 < src.buffer < len(model.buffers) else None
                if (src.type == schema.TensorType.FLOAT16 and data is not None and len(data)
                        and dst.type == schema.TensorType.FLOAT32 and op.outputs[0] not in g.outputs):
                    values = np.frombuffer(bytes(data), np.float16).astype(np.float32)
                    buf = schema.BufferT()
                    buf.data = np.frombuffer(values.tobytes(), np.uint8)
                    model.buffers.append(buf)
                    dst.buffer = len(model.buffers) - 1
                    folded += 1
                    continue
            keep.append(op)
        g.operators = keep
    if not folded:
        return float_bytes, 0
    # drop operator codes no op uses any more (a DEQUANTIZE v2 entry alone fails the calibrator)
    drop_unused_opcodes(model)
    return bytes(fu.convert_object_to_bytearray(model)), folded




def split_relu_0_to_1(float_bytes):
    """RELU_0_TO_1 (what onnx2tf makes of Clip(0, 1) and HardSigmoid's clamp) rewritten as
    RELU then MINIMUM with 1: the same function, in ops TFLite's post-training quantizer
    takes ("Quantization not yet supported for op: 'RELU_0_TO_1'"). Returns (bytes, count)."""
    import numpy as np

    fu = require("tensorflow.lite.tools.flatbuffer_utils", "convert", "full-integer TFLite quantization")
    schema = fu.schema_fb
    model = fu.convert_bytearray_to_object(bytearray(float_bytes))
    codes = [max(oc.builtinCode, oc.deprecatedBuiltinCode) for oc in model.operatorCodes]
    if schema.BuiltinOperator.RELU_0_TO_1 not in codes:
        return float_bytes, 0

    def opcode(builtin):
        if builtin not in codes:
            oc = schema.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = builtin, min(builtin, 127), 1
            model.operatorCodes.append(oc)
            codes.append(builtin)
        return codes.index(builtin)

    relu, minimum = opcode(schema.BuiltinOperator.RELU), opcode(schema.BuiltinOperator.MINIMUM)
    split = 0
    for g in model.subgraphs:
        ops = []
        for op in g.operators:
            if codes[op.opcodeIndex] != schema.BuiltinOperator.RELU_0_TO_1:
                ops.append(op)
                continue
            out = g.tensors[op.outputs[0]]
            mid = schema.TensorT()
            mid.name, mid.type, mid.buffer = (out.name or b"") + b"/relu", out.type, 0
            mid.shape = None if out.shape is None else np.array(out.shape, np.int32)
            mid.shapeSignature = out.shapeSignature
            buf = schema.BufferT()
            buf.data = np.frombuffer(np.float32(1.0).tobytes(), np.uint8)
            model.buffers.append(buf)
            one = schema.TensorT()
            one.name, one.type, one.buffer = (out.name or b"") + b"/one", schema.TensorType.FLOAT32, len(model.buffers) - 1
            one.shape = np.array([1], np.int32)
            g.tensors.extend([mid, one])
            first = schema.OperatorT()
            first.opcodeIndex, first.inputs, first.outputs = relu, list(op.inputs), [len(g.tensors) - 2]
            second = schema.OperatorT()
            second.opcodeIndex, second.inputs, second.outputs = minimum, [len(g.tensors) - 2, len(g.tensors) - 1], list(op.outputs)
            second.builtinOptionsType = schema.BuiltinOptions.MaximumMinimumOptions
            second.builtinOptions = schema.MaximumMinimumOptionsT()
            ops += [first, second]
            split += 1
        g.operators = ops
    drop_unused_opcodes(model)
    return bytes(fu.convert_object_to_bytearray(model)), split


def freeze_open_shapes(float_bytes, cal):
    """Open input dimensions (a [-1, -1] signature) fixed to the calibration samples' shapes.

    Every tensor of the main graph gets the shape it has when the float model runs on the
    first sample, and loses its open signature: a static model, as the Edge TPU compiler
    needs, and one the int8 kernels can allocate (ai-edge-litert crashes allocating some
    quantized models resized from a [1, 1] default). Returns (new bytes, {input: [old
    signature, new shape]}), or the bytes unchanged and {} when no input is open, or when the
    model has control flow (several subgraphs), which is left as it is.
    """
    import numpy as np

    fu = require("tensorflow.lite.tools.flatbuffer_utils", "convert", "full-integer TFLite quantization")
    model = fu.convert_bytearray_to_object(bytearray(float_bytes))
    g = model.subgraphs[0]
    sample = next(iter(cal.representative_dataset()))
    opened = {}
    for ti, x in zip(g.inputs, sample):
        t = g.tensors[ti]
        sig = list(t.shapeSignature) if t.shapeSignature is not None else list(t.shape)
        if any(d < 0 for d in sig):
            opened[t.name.decode() if isinstance(t.name, bytes) else t.name] = [
                [int(d) for d in sig], [int(d) for d in x.shape]]
    if not opened or len(model.subgraphs) > 1:
        return float_bytes, {}
    interp = _interpreter(float_bytes)
    for d, x in zip(interp.get_input_details(), sample):
        interp.resize_tensor_input(d["index"], x.shape)
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), sample):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    for d in interp.get_tensor_details():
        i = d["index"]
        if i < len(g.tensors):
            g.tensors[i].shape = np.asarray(d["shape"], np.int32)
            g.tensors[i].shapeSignature = None
    return bytes(fu.convert_object_to_bytearray(model)), opened


def _interpreter(model_bytes):
    """A float TFLite interpreter that keeps every intermediate tensor (not yet allocated)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tensorflow.lite.python.interpreter import Interpreter
    import warnings

    with warnings.catch_warnings():   # "preserve_all_tensors is for debugging": it is what we need
        warnings.simplefilter("ignore")
        return Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True)


def bias_correct(float_bytes, cal):  # noqa: C901 (a named exception: to be split along its jobs)
    """Weight-rounding bias correction of a float TFLite before int8 quantization.

    Rounding weights to int8 (symmetric, per output channel, scale = max|w| / 127, as the
    TFLite quantizer does) shifts each conv/FC output channel by sum(dW * E[x]) on average
    (Nagel et al. 2019, "Data-Free Quantization", bias correction). E[x] is the per-channel
    mean of the op's input over the calibration samples (images or --data arrays); the shift is subtracted from the
    float bias, so the quantized model's expected outputs match the float ones. Ops without
    a bias tensor are left alone. Returns (new float bytes, number of ops corrected).
    """
    import numpy as np

    fu = require("tensorflow.lite.tools.flatbuffer_utils", "convert", "full-integer TFLite quantization")

    model = fu.convert_bytearray_to_object(bytearray(float_bytes))
    g = model.subgraphs[0]
    ops = fu.schema_fb.BuiltinOperator
    codes = [max(oc.builtinCode, oc.deprecatedBuiltinCode) for oc in model.operatorCodes]
    kinds = (ops.CONV_2D, ops.DEPTHWISE_CONV_2D, ops.FULLY_CONNECTED)

    def const(ti):
        t = g.tensors[ti]
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        if data is None or t.type != fu.schema_fb.TensorType.FLOAT32:
            return None, None
        return np.frombuffer(bytes(data), np.float32).reshape(t.shape), t.buffer

    targets = []
    for op in g.operators:
        code = codes[op.opcodeIndex]
        if code in kinds and len(op.inputs) > 2 and op.inputs[2] >= 0:
            w, _ = const(op.inputs[1])
            b, bbuf = const(op.inputs[2])
            if w is not None and b is not None:
                targets.append((code, op.inputs[0], w, b, bbuf))
    if not targets:
        return float_bytes, 0
    interp = _interpreter(float_bytes)
    details = interp.get_input_details()
    sums, n, allocated = {}, 0, None
    for sample in cal.representative_dataset():   # one array per input, in the model's order
        shapes = [x.shape for x in sample]
        if shapes != allocated:   # open dimensions ([-1, -1]) take the samples' shapes, set
            for d, x in zip(details, sample):      # before allocating (XNNPack cannot reshape)
                if tuple(d["shape"]) != x.shape:
                    interp.resize_tensor_input(d["index"], x.shape)
            interp.allocate_tensors()
            details, allocated = interp.get_input_details(), shapes
        for d, x in zip(details, sample):
            interp.set_tensor(d["index"], x)
        interp.invoke()
        n += 1
        for _, xi, _, _, _ in targets:
            v = interp.get_tensor(xi)
            sums[xi] = sums.get(xi, 0) + v.reshape(-1, v.shape[-1]).astype(np.float64).mean(0)
    for code, xi, w, b, bbuf in targets:
        ex = sums[xi] / n
        axis = 3 if code == ops.DEPTHWISE_CONV_2D else 0
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        scale = np.abs(w).max(axis=reduce, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        dw = np.clip(np.round(w / scale), -127, 127) * scale - w
        if code == ops.DEPTHWISE_CONV_2D:      # (1, kh, kw, C)
            shift = dw.sum((0, 1, 2)) * ex
        elif code == ops.CONV_2D:              # (O, kh, kw, I)
            shift = (dw.sum((1, 2)) * ex[None, :]).sum(1)
        else:                                  # FULLY_CONNECTED (O, I)
            shift = (dw * ex[None, :]).sum(1)
        model.buffers[bbuf].data = np.frombuffer((b - shift).astype(np.float32).tobytes(), np.uint8)
    return bytes(fu.convert_object_to_bytearray(model)), len(targets)


def quantize_tflite(float_bytes, cal, io_dtype, progress):
    """Calibrate a float TFLite on `cal` and fully quantize it (int8, per-channel weights)."""
    tf = require("tensorflow", "convert", "full-integer TFLite quantization")
    tfl_calibrator = require("tensorflow.lite.python.optimize.calibrator", "convert",
                             "full-integer TFLite quantization")
    io = tf.uint8 if io_dtype == "uint8" else tf.int8
    try:
        calib = tfl_calibrator.Calibrator(tfl_calibrator.add_intermediate_tensors(float_bytes))
        progress(f"quantizing: calibrating on {len(cal)} {cal.unit}")
        with console.progress(len(cal), "quantizing: calibrating", cal.unit.rstrip("s"),
                              enabled=console.shows_progress(progress)) as bar:
            def counted():
                for sample in cal.representative_dataset():
                    yield sample
                    bar.step()

            return calib.calibrate_and_quantize(counted, io, io, False,
                                                activations_type=tf.int8, bias_type=tf.int32)
    except Exception as e:
        what, hint = quantizer_failure(e)
        raise EdgeportError(f"TFLite full-integer quantization failed: {what}", hint) from None


def quantizer_failure(error):
    """(what failed, hint or None) for an exception of TFLite's calibrator/quantizer, naming the
    real cause: a node that failed to prepare or run on the calibration samples (a RESHAPE whose
    shape does not fit them), a bias that does not fit its layer, control flow, or an op the
    quantizer has no int8 kernel for. Only the last is "an op without an int8 kernel"."""
    import re

    try:
        text = " ".join(str(error).split())
    except Exception:
        text = ""
    text = text or type(error).__name__
    kind = type(error).__name__
    unsupported = re.search(r"Quantization (?:to 16x8-bit )?not yet supported for op: '?([\w.]+)'?", text)
    if unsupported:
        return (f"TFLite's quantizer has no int8 kernel for op {unsupported.group(1)}",
                "an op without an int8 kernel cannot be fully quantized: quantize a model without it, "
                "or keep the float TFLite")
    if "dynamic tensors" in text:
        return (f"{kind}: {text[:300]}",
                "the model has control flow (IF/WHILE subgraphs), whose tensors TFLite's calibrator does "
                "not record; quantize its original, or a float model without control flow")
    node = re.search(r"Node number (\d+) \((\w+)\) failed to (prepare|invoke)", text)
    detail = re.sub(r"Node number \d+ \(\w+\) failed to (prepare|invoke)\.?", "", text)
    detail = re.sub(r"\S*tensorflow/lite/\S+:\d+\s*", "", detail).strip(" .;") or text
    op = node.group(2) if node else None
    if re.search(r"\bbias\b", text, re.I) and re.search(r"mismatch|match|size|shape|dims|vector|expected", text, re.I):
        where = f" (node {node.group(1)}, {op})" if node else ""
        return (f"a bias does not fit its layer{where}: {detail[:240]}",
                "the float model's bias and weight shapes disagree; re-export the float model")
    if node:
        what = (f"op {op} (node {node.group(1)}) failed to {node.group(3)} on the calibration samples: "
                f"{detail[:240]}")
        if op == "RESHAPE" or "num_input_elements" in text:
            return what, ("its fixed target shape does not fit the samples' shapes: give samples of the "
                          "shape the model was exported for (--input-shapes, --data), or export it with "
                          "that shape")
        return what, "check the calibration samples' shapes against the model's inputs"
    return f"{kind}: {text[:300]}", None


def op_histogram(path):
    from edge.tflite_model import TFLiteModel

    return dict(sorted(collections.Counter(TFLiteModel.load(path).op_names()).items()))


_PROBE = """
import sys
import numpy as np
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    from tensorflow.lite.python.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1])
it.allocate_tensors()
for d in it.get_input_details():
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
it.invoke()
"""


def crash_probe(path, timeout=300):
    """None when the TFLite runtime loads and runs `path` in a child process, else why not.

    An int8 model can crash the runtime outright (ai-edge-litert's XNNPack delegate dies with
    SIGSEGV allocating openWakeWord's quantized melspectrogram model): tried in a child first,
    so that the process validating it next is not killed without a word.
    """
    import signal
    import subprocess
    import sys

    try:
        r = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True,
                           timeout=timeout, env=dict(__import__("os").environ, TF_CPP_MIN_LOG_LEVEL="3"))
    except subprocess.TimeoutExpired:
        return f"the TFLite runtime did not finish one inference in {timeout} s"
    if r.returncode < 0:
        try:
            name = signal.Signals(-r.returncode).name
        except ValueError:
            name = f"signal {-r.returncode}"
        return f"the TFLite runtime crashed ({name}) loading and running it"
    return None
