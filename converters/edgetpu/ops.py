"""The Edge TPU's supported-operations table as data, one registered check per op.

Sources (read 2026-11, see also log.py for the status strings):
- Coral, "TensorFlow models on the Edge TPU", sections "Model requirements" and
  "Supported operations" (https://coral.ai/docs/edgetpu/models-intro/): 8-bit tensors,
  sizes constant at compile time, tensors of rank <= 3 (or only the 3 innermost
  dimensions > 1), and the per-op "known limitations" column, with the minimum runtime
  version each op needs (compiler 16 / runtime 14 is the last release).
- The status strings real compiler logs print for ops it leaves on the CPU, e.g.
  "Operation is working on an unsupported data type", "Tensor has unsupported rank (up to 3
  innermost dimensions mapped)", "Operation version not supported" (logs quoted in
  google-coral/edgetpu issues #187, #659 and maxbbraun/thermal-face#2).

Ground truth corrects the old tables: the Coral test model keras_lstm_mnist_ptq.tflite
(UNIDIRECTIONAL_SEQUENCE_LSTM, two QUANTIZE ops, int16 LSTM cell state) is mapped whole by
compiler 16 (its `_edgetpu` twin holds one edgetpu-custom-op and nothing else), although
early versions of the docs list neither LSTM nor Quantize. So both are supported here,
int16 is allowed for an LSTM's state tensors, and QUANTIZE between 8-bit types is mapped.

Where the compiler departs from Coral's table, the compiler wins: `KNOWN_DEPARTURES` lists
each departure with its evidence, and the checks below implement them.

Adding an op never touches a central switch: decorate its check with `@edgetpu_op`.
A check gets an `OpContext` and returns a list of (status, detail) pairs; empty = mapped.
"""

import struct
from dataclasses import dataclass, field

# Status strings exactly as the compiler writes them in `<stem>_edgetpu.log`.
MAPPED = "Mapped to Edge TPU"
NOT_SUPPORTED = "Operation not supported"
UNSUPPORTED_TYPE = "Operation is working on an unsupported data type"
UNSUPPORTED_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
VERSION_NOT_SUPPORTED = "Operation version not supported"
MORE_THAN_ONE_SUBGRAPH = "More than one subgraph is not supported"
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
# Not a compiler string: the compiler refuses a dynamic-shape model as a whole.
DYNAMIC_SHAPE = "Tensor has a dynamic shape (sizes must be constant at compile time)"

EIGHT_BIT = ("INT8", "UINT8")
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"


@dataclass(frozen=True)
class OpSpec:
    """One row of Coral's supported-operations table."""

    opcodes: tuple
    name: str                    # the name in Coral's table
    runtime: int = 10            # lowest Edge TPU runtime version the op needs ("All" = 10)
    limitations: str = ""        # Coral's "known limitations" text
    max_version: int = None      # highest TFLite op version known to map (None: not known)
    check: object = field(default=None, compare=False)


SUPPORTED_OPS = {}


def edgetpu_op(opcodes, name, runtime=10, limitations="", max_version=None):
    """Decorator: register `check(ctx) -> [(status, detail)]` for the TFLite `opcodes`."""

    def register(check):
        spec = OpSpec(tuple(opcodes), name, runtime, limitations, max_version, check)
        for code in opcodes:
            if code in SUPPORTED_OPS:
                raise RuntimeError(f"two Edge TPU entries for {code}")
            SUPPORTED_OPS[code] = spec
        return check

    return register


# ---------------------------------------------------------------------------------------
# Reading what the op checks need from the flatbuffer: builtin options and constant data.

# Builtin options fields used by the checks: {opcode: {field name: (slot, struct code)}}.
# Slots from tensorflow/lite/schema/schema.fbs.
_OPTION_FIELDS = {
    "CONV_2D": {"stride_w": (1, "<i"), "stride_h": (2, "<i"), "fused_activation": (3, "<b"),
                "dilation_w": (4, "<i"), "dilation_h": (5, "<i")},
    "DEPTHWISE_CONV_2D": {"stride_w": (1, "<i"), "stride_h": (2, "<i"),
                          "fused_activation": (4, "<b"), "dilation_w": (5, "<i"),
                          "dilation_h": (6, "<i")},
    "AVERAGE_POOL_2D": {"fused_activation": (5, "<b")},
    "MAX_POOL_2D": {"fused_activation": (5, "<b")},
    "CONCATENATION": {"axis": (0, "<i"), "fused_activation": (1, "<b")},
    "FULLY_CONNECTED": {"fused_activation": (0, "<b"), "weights_format": (1, "<b"),
                        "keep_num_dims": (2, "<?")},
    "STRIDED_SLICE": {"begin_mask": (0, "<i"), "end_mask": (1, "<i"), "ellipsis_mask": (2, "<i"),
                      "new_axis_mask": (3, "<i"), "shrink_axis_mask": (4, "<i")},
    "SPLIT": {"num_splits": (0, "<i")},
    "PACK": {"values_count": (0, "<i"), "axis": (1, "<i")},
    "UNIDIRECTIONAL_SEQUENCE_LSTM": {"time_major": (3, "<?")},
    "RESIZE_BILINEAR": {"align_corners": (2, "<?"), "half_pixel_centers": (3, "<?")},
    "RESIZE_NEAREST_NEIGHBOR": {"align_corners": (0, "<?"), "half_pixel_centers": (1, "<?")},
}
_OPTION_DEFAULTS = {"dilation_w": 1, "dilation_h": 1}


def read_options(model, subgraph_index, op_index, opcode):
    """The builtin options of one op that the checks use, as a dict (defaults filled in)."""
    fields = _OPTION_FIELDS.get(opcode)
    if not fields:
        return {}
    return model.operator_options(subgraph_index, op_index, fields, _OPTION_DEFAULTS)


@dataclass
class OpContext:
    model: object        # edge.tflite_model.TFLiteModel
    graph: object        # its SubGraph
    op: object           # the Operator

    @property
    def opcode(self):
        return self.op.opcode

    @property
    def options(self):
        return read_options(self.model, self.graph.index, self.op.index, self.op.opcode)

    def tensor(self, i):
        return self.graph.tensors[i]

    def is_constant(self, i):
        return bool(self.model.buffer_data(self.graph.tensors[i].buffer))

    def constant_ints(self, i):
        """The values of a constant INT32/INT64 tensor, or None."""
        t = self.graph.tensors[i]
        data = self.model.buffer_data(t.buffer)
        if not data or t.dtype not in ("INT32", "INT64"):
            return None
        code = "i" if t.dtype == "INT32" else "q"
        return list(struct.unpack(f"<{len(data) // struct.calcsize(code)}{code}", data))

    def inputs(self):
        return [i for i in self.op.inputs if i >= 0]

    def activations(self):
        """Non-constant input and output tensor indices (what flows through the TPU)."""
        return [i for i in self.inputs() + list(self.op.outputs) if i >= 0 and not self.is_constant(i)]

    def first_input(self):
        return self.tensor(self.op.inputs[0])


# ---------------------------------------------------------------------------------------
# Where compiler 16.0 departs from (or makes precise) Coral's published table, with the
# evidence. The table is documentation; the compiler is the truth.

KNOWN_DEPARTURES = [
    {"op": "TILE", "table": "not listed (so: not supported)", "compiler": "mapped by 16.0",
     "evidence": "a Coral model compiled by edgetpu_compiler 16.0 (the set of ten compiled "
                 "pairs) holds TILE inside its edgetpu-custom-op"},
    {"op": "UNIDIRECTIONAL_SEQUENCE_LSTM, QUANTIZE", "table": "absent from early versions",
     "compiler": "mapped by 16.0, with int16 LSTM state tensors",
     "evidence": "Coral's keras_lstm_mnist_ptq.tflite and its _edgetpu twin (one edgetpu-custom-op)"},
    {"op": "RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR",
     "table": "'Depending on input/output size, this operation may not be mapped' (no sizes given)",
     "compiler": "16.0 left on the CPU: 1x1 -> 33x33 and 33x33 -> 513x513, both align_corners "
                 "(DeepLab v3 image pooling and final upsampling); mapped: 2x upsampling "
                 "(e.g. YOLOv7-tiny's RESIZE_NEAREST_NEIGHBOR, log in WongKinYiu/yolov7 PR 1672; "
                 "UpSampling2D 64 -> 128 in google-coral/edgetpu issue 31)",
     "evidence": "Coral's compiled pairs; google-coral/edgetpu issue 31 (the compiler refuses "
                 "when the interpolation would lose precision)",
     "rule": "CPU when align_corners and an input side is 1 (nothing to align: the compiler "
             "refuses), or when a side grows more than RESIZE_MAX_FACTOR times (16x refused, 2x "
             "mapped; the exact limit between is not published: 8 is the assumed one). The refusals "
             "were observed on RESIZE_BILINEAR; RESIZE_NEAREST_NEIGHBOR, which has the same limitation "
             "text in the table, is given the same rule without a refusal observed"},
    {"op": "FULLY_CONNECTED", "table": "'Output tensor is one-dimensional'",
     "compiler": "an output with more than one row (keep_num_dims on a [1, N, K] input, or a "
                 "[N, K] result with N > 1) is not mapped",
     "evidence": "Coral's table (the rule was read but not checked before the compiled pairs were read)"},
    {"op": "CUSTOM (float)", "table": "custom ops run on the CPU",
     "compiler": "'Operation is working on an unsupported data type' for a float custom op",
     "evidence": "the compiled pairs; the same status for a float custom op in maxbbraun/thermal-face#2"},
]

RESIZE_MAX_FACTOR = 8


# ---------------------------------------------------------------------------------------
# Checks every op goes through (the "model requirements" section).

def effective_rank_ok(shape):
    """Rank <= 3, or only the 3 innermost dimensions larger than 1 (Coral's rule)."""
    return all(d <= 1 for d in shape[:-3])


def common_checks(ctx, spec, min_runtime_version=None):
    problems = []
    allowed = set(EIGHT_BIT)
    if ctx.opcode in ("UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM"):
        allowed.add("INT16")       # the cell state (ground truth: keras_lstm_mnist_ptq)
    for i in ctx.activations():
        t = ctx.tensor(i)
        if t.dtype not in allowed:
            problems.append((UNSUPPORTED_TYPE, f"tensor '{t.name}' is {t.dtype}"))
            break
    for i in ctx.activations():
        t = ctx.tensor(i)
        if t.shape_signature and any(d < 0 for d in t.shape_signature):
            problems.append((DYNAMIC_SHAPE, f"tensor '{t.name}' has shape {list(t.shape_signature)}"))
            break
    for i in ctx.activations():
        t = ctx.tensor(i)
        if not effective_rank_ok(t.shape):
            problems.append((UNSUPPORTED_RANK, f"tensor '{t.name}' has shape {list(t.shape)}: "
                                               "only the 3 innermost dimensions may be > 1"))
            break
    if spec.max_version is not None and ctx.op.version > spec.max_version:
        problems.append((VERSION_NOT_SUPPORTED,
                         f"{ctx.opcode} version {ctx.op.version} (known to map up to {spec.max_version})"))
    if min_runtime_version is not None and spec.runtime > min_runtime_version:
        problems.append((NOT_SUPPORTED, f"{spec.name} needs Edge TPU runtime >= {spec.runtime}, "
                                        f"--min-runtime-version is {min_runtime_version}"))
    return problems


def check_op(model, graph, op, min_runtime_version=None):
    """[(status, detail)] for one op: empty when the tables say it maps to the Edge TPU."""
    ctx = OpContext(model, graph, op)
    if op.opcode == "CUSTOM":
        floats = [ctx.tensor(i) for i in ctx.inputs() + list(op.outputs)
                  if i >= 0 and ctx.tensor(i).dtype in ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")]
        if floats:   # the compiler's status for a float custom op (KNOWN_DEPARTURES)
            return [(UNSUPPORTED_TYPE, f"custom op '{op.custom_code}' works on {floats[0].dtype} "
                                       f"tensor '{floats[0].name}'")]
        return [(NOT_SUPPORTED, f"custom op '{op.custom_code}' runs on the CPU")]
    if op.opcode == "DEQUANTIZE":
        # Real compiler 15 logs report DEQUANTIZE with this status rather than "not supported"
        # (log quoted in system-software-lab/nrf20 convert/quantize/README.md).
        return [(UNSUPPORTED_TYPE, "DEQUANTIZE writes float output")]
    spec = SUPPORTED_OPS.get(op.opcode)
    if spec is None:
        return [(NOT_SUPPORTED, f"{op.opcode} is not in the Edge TPU's supported-operations table")]
    problems = common_checks(ctx, spec, min_runtime_version)
    if not problems and spec.check is not None:
        try:
            problems = list(spec.check(ctx) or [])
        except (IndexError, KeyError, ValueError, TypeError, struct.error):
            # A damaged model (e.g. an op with fewer inputs than its kind has): fuzzing found it.
            from edge.errors import ModelFormatError

            raise ModelFormatError(f"{model.name}: op #{op.index} {op.opcode} has missing or "
                                   "malformed inputs or options", "the model file is damaged") from None
    return problems


def _no_fused_activation(ctx):
    if ctx.options.get("fused_activation", 0) != 0:
        return [(UNSPECIFIED, "no fused activation function is supported on this op")]
    return []


def _not_batch_axis(axes, rank, what):
    axes = [a + rank if a < 0 else a for a in axes]
    if rank >= 4 and 0 in axes:
        return [(UNSPECIFIED, f"no {what} in the batch dimension")]
    return []


# ---------------------------------------------------------------------------------------
# The table. runtime = Coral's "minimum runtime version" column ("All" written as 10).

@edgetpu_op(["ADD"], "Add")
@edgetpu_op(["LOGISTIC"], "Logistic")
@edgetpu_op(["MAXIMUM"], "Maximum")
@edgetpu_op(["MINIMUM"], "Minimum")
@edgetpu_op(["MUL"], "Mul")
@edgetpu_op(["SUB"], "Sub")
@edgetpu_op(["RELU"], "ReLU")
@edgetpu_op(["RELU6"], "ReLU6")
@edgetpu_op(["RELU_N1_TO_1"], "ReLUN1To1")
@edgetpu_op(["TANH"], "Tanh")
@edgetpu_op(["L2_NORMALIZATION"], "L2Normalization")
@edgetpu_op(["SLICE"], "Slice")
@edgetpu_op(["SPACE_TO_DEPTH"], "SpaceToDepth")
@edgetpu_op(["EXPAND_DIMS"], "ExpandDims", runtime=13)
@edgetpu_op(["SQUEEZE"], "Squeeze", runtime=13)
@edgetpu_op(["RSQRT"], "Rsqrt", runtime=14)
@edgetpu_op(["SQUARED_DIFFERENCE"], "SquaredDifference", runtime=14)
@edgetpu_op(["TRANSPOSE"], "Transpose", runtime=14)
@edgetpu_op(["TRANSPOSE_CONV"], "TransposeConv", runtime=13)
@edgetpu_op(["RESHAPE"], "Reshape", limitations="Certain reshapes might not be mapped for "
            "large tensor sizes.")
def _no_limitation(ctx):
    return []


@edgetpu_op(["QUANTIZE"], "Quantize", runtime=13)
def _quantize(ctx):
    # Only a requantization between 8-bit types maps (float input fails the type check above).
    return []


@edgetpu_op(["AVERAGE_POOL_2D"], "AveragePool2d", limitations="No fused activation function.")
@edgetpu_op(["MAX_POOL_2D"], "MaxPool2d", limitations="No fused activation function.")
def _pool(ctx):
    return _no_fused_activation(ctx)


@edgetpu_op(["CONCATENATION"], "Concatenation",
            limitations="No fused activation function. If any input is a compile-time constant "
                        "tensor, there must be only 2 inputs, and this constant tensor must be "
                        "all zeroes (effectively, a zero-padding op).")
def _concatenation(ctx):
    problems = _no_fused_activation(ctx)
    for i in ctx.inputs():
        if ctx.is_constant(i):
            data = ctx.model.buffer_data(ctx.tensor(i).buffer)
            zero_point = (ctx.tensor(i).quantization.zero_point[0]
                          if ctx.tensor(i).quantization and ctx.tensor(i).quantization.zero_point else 0)
            zeros = all((b if ctx.tensor(i).dtype == "UINT8" else (b - 256 if b > 127 else b)) == zero_point
                        for b in data)
            if len(ctx.inputs()) != 2 or not zeros:
                problems.append((UNSPECIFIED, "a constant input must be all zeroes with only 2 inputs"))
            break
    return problems


@edgetpu_op(["CONV_2D"], "Conv2d", limitations="Must use the same dilation in x and y dimensions.")
@edgetpu_op(["DEPTHWISE_CONV_2D"], "DepthwiseConv2d",
            limitations="Must use the same dilation in x and y dimensions.")
def _conv(ctx):
    o = ctx.options
    if o.get("dilation_w", 1) != o.get("dilation_h", 1):
        return [(UNSPECIFIED, f"dilation differs in x and y ({o['dilation_w']} vs {o['dilation_h']})")]
    return []


@edgetpu_op(["FULLY_CONNECTED"], "FullyConnected",
            limitations="Only the default format is supported for fully-connected weights. "
                        "Output tensor is one-dimensional.")
def _fully_connected(ctx):
    o = ctx.options
    problems = []
    if o.get("weights_format", 0) != 0:
        problems.append((UNSPECIFIED, "only the default weights format is supported"))
    out = ctx.tensor(ctx.op.outputs[0]).shape
    if any(d > 1 for d in list(out)[:-1]):
        how = ("keep_num_dims keeps the input's outer dimensions" if o.get("keep_num_dims")
               else "the input flattens to more than one row")
        problems.append((UNSPECIFIED, f"output shape {list(out)} is not one-dimensional ({how})"))
    return problems


@edgetpu_op(["UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM"], "LSTM", runtime=14,
            limitations="Unidirectional LSTM only.")
def _lstm(ctx):
    return []     # BIDIRECTIONAL_SEQUENCE_LSTM is not in the table, so it is "not supported"


@edgetpu_op(["MEAN"], "Mean", limitations="No reduction in batch dimension. If a z-reduction, "
            "the z-dimension must be multiple of 4.")
@edgetpu_op(["SUM"], "Sum", runtime=13, limitations="Cannot operate on the batch dimension.")
@edgetpu_op(["REDUCE_MAX"], "ReduceMax", runtime=14, limitations="Cannot operate on the batch dimension.")
@edgetpu_op(["REDUCE_MIN"], "ReduceMin", runtime=14, limitations="Cannot operate on the batch dimension.")
def _reduce(ctx):
    x = ctx.first_input()
    axes = ctx.constant_ints(ctx.op.inputs[1]) if len(ctx.op.inputs) > 1 else None
    if axes is None:
        return [(UNSPECIFIED, "reduction axes are not a compile-time constant")]
    rank = len(x.shape)
    problems = _not_batch_axis(axes, rank, "reduction")
    if ctx.opcode == "MEAN" and rank and (rank - 1) in [a + rank if a < 0 else a for a in axes]:
        if x.shape[-1] % 4:
            problems.append((UNSPECIFIED, "a z-reduction needs a z-dimension that is a multiple of 4"))
    return problems


@edgetpu_op(["PAD"], "Pad", limitations="No padding in batch dimension.")
def _pad(ctx):
    pads = ctx.constant_ints(ctx.op.inputs[1]) if len(ctx.op.inputs) > 1 else None
    if pads is None:
        return [(UNSPECIFIED, "paddings are not a compile-time constant")]
    if len(ctx.first_input().shape) >= 4 and any(pads[:2]):
        return [(UNSPECIFIED, "no padding in the batch dimension")]
    return []


@edgetpu_op(["PACK"], "Pack", runtime=13, limitations="No packing in batch dimension.")
def _pack(ctx):
    rank = len(ctx.tensor(ctx.op.outputs[0]).shape)
    return _not_batch_axis([ctx.options.get("axis", 0)], rank, "packing")


@edgetpu_op(["SPLIT"], "Split", limitations="No splitting in batch dimension.")
def _split(ctx):
    axis = ctx.constant_ints(ctx.op.inputs[0])
    if axis is None:
        return [(UNSPECIFIED, "split axis is not a compile-time constant")]
    return _not_batch_axis(axis, len(ctx.tensor(ctx.op.inputs[1]).shape), "splitting")


@edgetpu_op(["PRELU"], "PReLU", runtime=13, limitations="Alpha must be 1-dimensional (only the "
            "innermost dimension can be >1 size).")
def _prelu(ctx):
    alpha = ctx.tensor(ctx.op.inputs[1])
    if any(d > 1 for d in alpha.shape[:-1]):
        return [(UNSPECIFIED, f"alpha has shape {list(alpha.shape)}: only the innermost dimension may be > 1")]
    return []


@edgetpu_op(["RESIZE_BILINEAR"], "ResizeBilinear", limitations="Input/output is a 3-dimensional "
            "tensor. Depending on input/output size, this operation may not be mapped to the Edge "
            "TPU to avoid loss in precision.")
@edgetpu_op(["RESIZE_NEAREST_NEIGHBOR"], "ResizeNearestNeighbor", limitations="Input/output is a "
            "3-dimensional tensor. Depending on input/output size, this operation may not be "
            "mapped to the Edge TPU to avoid loss in precision.")
def _resize(ctx):
    # Sizes from the tensors (NHWC); the refusals are those observed (KNOWN_DEPARTURES).
    src, dst = ctx.first_input().shape, ctx.tensor(ctx.op.outputs[0]).shape
    if len(src) != 4 or len(dst) != 4:
        return []
    align = bool(ctx.options.get("align_corners"))
    problems = []
    for axis, name in ((1, "height"), (2, "width")):
        a, b = src[axis], dst[axis]
        if b <= a:
            continue                        # downscaling or same size: no refusal observed
        if align and a == 1:
            problems.append((UNSPECIFIED, f"align_corners with input {name} 1 ({a} -> {b}): "
                                          "compiler 16.0 leaves this resize on the CPU"))
            break
        factor = (b - 1) / (a - 1) if align and a > 1 else b / a
        if factor > RESIZE_MAX_FACTOR:
            problems.append((UNSPECIFIED, f"{name} grows {factor:g}x ({a} -> {b}"
                                          f"{', align_corners' if align else ''}); more than "
                                          f"{RESIZE_MAX_FACTOR}x is left on the CPU by compiler 16.0"))
            break
    return problems


@edgetpu_op(["TILE"], "Tile (not in Coral's table; mapped by compiler 16.0)", runtime=14)
def _tile(ctx):
    return []      # KNOWN_DEPARTURES: the compiler maps it although the table does not list it


@edgetpu_op(["SOFTMAX"], "Softmax", limitations="Supports only 1-D input tensor with a max of "
            "16,000 elements.")
def _softmax(ctx):
    shape = ctx.first_input().shape
    n = 1
    for d in shape:
        n *= d
    if any(d > 1 for d in shape[:-1]):
        return [(UNSPECIFIED, f"input shape {list(shape)} is not 1-D")]
    if n > 16000:
        return [(UNSPECIFIED, f"{n} elements (at most 16,000)")]
    return []


@edgetpu_op(["STRIDED_SLICE"], "StridedSlice", limitations="Supported only when all strides are "
            "equal to 1 (that is, effectively a Stride op), and with ellipsis-axis-mask == 0, and "
            "new-axis-max == 0.")
def _strided_slice(ctx):
    o = ctx.options
    strides = ctx.constant_ints(ctx.op.inputs[3]) if len(ctx.op.inputs) > 3 else None
    problems = []
    if strides is None or any(s != 1 for s in strides):
        problems.append((UNSPECIFIED, f"strides {strides} are not all 1"))
    if o.get("ellipsis_mask") or o.get("new_axis_mask"):
        problems.append((UNSPECIFIED, "ellipsis_mask and new_axis_mask must be 0"))
    return problems
