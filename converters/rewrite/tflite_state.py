"""TFLite rewrite: streaming state (resource variables) made explicit inputs and outputs.

Imports: edge, converters

A streaming model (pymicro-wakeword's) keeps state between calls in resource variables:
CALL_ONCE runs an init subgraph that ASSIGN_VARIABLEs each variable its initial constant, and
the main graph READ_VARIABLEs the state and ASSIGN_VARIABLEs the new one. tf2onnx refuses all
four ops. The rewrite removes CALL_ONCE and the init subgraph's work; each variable becomes an
input `state_<var>` (what READ_VARIABLE gave) and an output `state_<var>_out` (what
ASSIGN_VARIABLE stored), of the same dtype, shape and quantization. The initial values are
the init subgraph's constants, returned in `info["state"]` (the sidecar's `state` record):
the caller starts from them and passes each `state_<var>_out` as `state_<var>` on the next
call. READ_VARIABLE and ASSIGN_VARIABLE copy raw bytes, so fed back that way the stateless
model computes exactly what the stateful one does.
"""

from converters.rewrite import rewrite
from converters.rewrite.tflite import builtin_names
from converters.tflite_objects import drop_unused_opcodes, state_name
from edge.errors import InputError, require

STATE_OPS = ("CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE")
# Both a float and a full-integer TFLite go through tf2onnx.
TF2ONNX = ("tflite -> onnx", "tflite-int8 -> onnx")
# The stateless TFLite itself (`--to tflite` of a stateful TFLite, stateless_route below): a
# copy of the source in its own format, which this rewrite is applied before.
STATELESS = ("tflite -> tflite", "tflite-int8 -> tflite-int8")
_NP_OF_TYPE = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool",
               7: "int16", 9: "int8", 10: "float64", 12: "uint64", 15: "uint32", 16: "uint16"}


def _schema():
    return require("tensorflow.lite.tools.flatbuffer_utils", "convert", "rewriting a TFLite model")


def _code_names(model, schema):
    names = builtin_names(schema)
    return [names.get(max(oc.builtinCode, oc.deprecatedBuiltinCode)) for oc in model.operatorCodes]


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def _handles(graph, ops, kinds):
    """{handle tensor index: variable shared name} of the graph's VAR_HANDLE ops."""
    return {op.outputs[0]: _text(op.builtinOptions.sharedName or op.builtinOptions.container)
            for op, k in zip(graph.operators, kinds) if k == "VAR_HANDLE"}


def _initial_values(model, index, codes):
    """{variable: numpy array} assigned by the init subgraph `index` (constants only)."""
    import numpy as np

    g = model.subgraphs[index]
    kinds = [codes[op.opcodeIndex] for op in g.operators]
    other = sorted({k for k in kinds if k not in ("VAR_HANDLE", "ASSIGN_VARIABLE")})
    if other:
        raise InputError(f"the streaming state's init subgraph also runs {', '.join(map(str, other))}: "
                         "only constant initial values can be made explicit")
    handles = _handles(g, g.operators, kinds)
    values = {}
    for op, k in zip(g.operators, kinds):
        if k != "ASSIGN_VARIABLE":
            continue
        t = g.tensors[op.inputs[1]]
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        if data is None or not len(data):
            raise InputError(f"the initial value of variable {handles[op.inputs[0]]!r} is computed, "
                             "not a constant: its state cannot be made explicit")
        values[handles[op.inputs[0]]] = np.frombuffer(bytes(np.asarray(data, np.uint8)),
                                                      _NP_OF_TYPE[t.type]).reshape(
            [int(d) for d in t.shape])
    return values


def _main_uses(graph, kinds, handles):
    """({variable: {"read": tensor, "assign": tensor}} in first-use order, {tensor: tensor}):
    the first read of a variable before any assign is its state input, its last assign its
    state output; a later read is the value last read or assigned (an alias)."""
    found, alias = {}, {}
    for op, k in zip(graph.operators, kinds):
        if k not in ("READ_VARIABLE", "ASSIGN_VARIABLE"):
            continue
        var = handles.get(op.inputs[0])
        if var is None:
            raise InputError("a variable op reads a handle no VAR_HANDLE of the main graph makes")
        use = found.setdefault(var, {})
        if k == "READ_VARIABLE":
            current = use.get("assign", use.get("read"))
            if current is None:
                use["read"] = op.outputs[0]
            else:
                alias[op.outputs[0]] = current
        else:
            use["assign"] = alias.get(op.inputs[1], op.inputs[1])
    return found, alias


def _apply_aliases(graph, alias):
    for op in graph.operators:
        op.inputs = [alias.get(int(t), t) for t in op.inputs]
    graph.outputs = [alias.get(int(t), t) for t in graph.outputs]


def _add_to_signature(model, schema, inputs, outputs):
    for sig in model.signatureDefs or ():
        if sig.subgraphIndex != 0:
            continue
        for attr, pairs in (("inputs", inputs), ("outputs", outputs)):
            maps = list(getattr(sig, attr) or [])
            for name, index in pairs:
                m = schema.TensorMapT()
                m.name, m.tensorIndex = name, index
                maps.append(m)
            setattr(sig, attr, maps)


def _record(var, graph, use, initial):
    """One variable's entry in the sidecar's `state` record."""
    import numpy as np

    t = graph.tensors[use.get("read", use.get("assign"))]
    q = t.quantization
    scale = float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) == 1 else 0.0
    zp = int(q.zeroPoint[0]) if scale and q.zeroPoint is not None and len(q.zeroPoint) else 0
    shape = [int(d) for d in t.shape]
    dtype = _NP_OF_TYPE[t.type]
    init = initial.get(var)
    if init is None and "read" in use:
        raise InputError(f"variable {var!r} is read but no init subgraph gives it a value: no "
                         "initial state to record")
    if init is None:   # only ever assigned: its value is an output, never read back
        init = np.zeros(shape, dtype)
    inp = state_name(var) if "read" in use else None
    out = state_name(var) + "_out" if "assign" in use else None
    feed = (f"first call: {inp} = initial; then pass {out} as {inp} on the next call" if inp and out
            else f"every call: {inp} = initial" if inp else f"{out}: the new value, not read back")
    return {"variable": var, "input": inp, "output": out, "feed": feed,
            "dtype": dtype, "shape": shape, "scale": scale, "zero_point": zp,
            "initial": np.asarray(init, dtype).reshape(shape).tolist()}


@rewrite("tflite", "explicit_state", needed_by=TF2ONNX + STATELESS)
class ExplicitState:
    """Resource variables (CALL_ONCE / VAR_HANDLE / READ_VARIABLE / ASSIGN_VARIABLE) become
    explicit state inputs and outputs, initial values recorded (see the module docstring)."""

    pattern = "streaming-state variables (CALL_ONCE/VAR_HANDLE)"   # named when --no-rewrite refuses
    describe = ("made {n} streaming state variables explicit inputs/outputs ({names}); "
                "start from the sidecar's initial values and pass each state_X_out as state_X "
                "on the next call")

    @staticmethod
    def matches(model_bytes, options=None):
        """How many variables the main graph holds (edge's reader: no TensorFlow to import
        for the models without any)."""
        from edge.tflite_model import TFLiteModel

        return TFLiteModel(bytes(model_bytes)).op_names().count("VAR_HANDLE")

    @staticmethod
    def apply(model_bytes, options=None):
        fu = _schema()
        schema = fu.schema_fb
        model = fu.convert_bytearray_to_object(bytearray(model_bytes))
        made, info = explicit_state(model, schema)
        if not made:
            return model_bytes, 0
        return bytes(fu.convert_object_to_bytearray(model)), len(made), info


def explicit_state(model, schema):
    """Edit `model` (flatbuffer object tree) in place; ([variables], info for the sidecar)."""
    codes = _code_names(model, schema)
    g = model.subgraphs[0]
    kinds = [codes[op.opcodeIndex] for op in g.operators]
    handles = _handles(g, g.operators, kinds)
    if not handles:
        return [], {}
    inits = [op.builtinOptions.initSubgraphIndex for op, k in zip(g.operators, kinds) if k == "CALL_ONCE"]
    initial = {}
    for index in inits:
        initial.update(_initial_values(model, index, codes))
    uses, alias = _main_uses(g, kinds, handles)
    _apply_aliases(g, alias)
    records, new_in, new_out = [], [], []
    for var, use in uses.items():
        records.append(_record(var, g, use, initial))
        if "read" in use:
            if use["read"] in g.outputs:
                raise InputError(f"variable {var!r} is read straight into an output")
            g.tensors[use["read"]].name = records[-1]["input"]
            new_in.append((records[-1]["input"], use["read"]))
        if "assign" in use:
            if use["assign"] in list(g.inputs) + list(g.outputs) + [u.get("read") for u in uses.values()]:
                raise InputError(f"variable {var!r} is assigned an input or output unchanged")
            g.tensors[use["assign"]].name = records[-1]["output"]
            new_out.append((records[-1]["output"], use["assign"]))
    g.inputs = list(g.inputs) + [i for _, i in new_in]
    g.outputs = list(g.outputs) + [i for _, i in new_out]
    g.operators = [op for op, k in zip(g.operators, kinds) if k not in STATE_OPS]
    for index in sorted(set(inits), reverse=True):   # the init subgraph has no work left
        model.subgraphs[index].operators = []
        if index == len(model.subgraphs) - 1:
            model.subgraphs.pop()
    _add_to_signature(model, schema, new_in, new_out)
    drop_unused_opcodes(model)
    names = ", ".join(r["variable"] for r in records)
    return list(uses), {"state": records, "names": names}


def _copy(source, output_path, options):
    """The 'conversion' of the stateless route: the rewritten copy the pipeline hands it
    (rewrite.prepare applied ExplicitState before it), written as it is."""
    import shutil

    shutil.copyfile(source.path, output_path)
    return {}


def stateless_route(source, target, options):
    """[the one hop] that gives a stateful TFLite source's stateless rewrite as an artefact of
    its own (`--to tflite`: any TFLite interpreter runs it, fed its state back as the sidecar
    says; in the source's own precision, int8 for an int8 model), or None when this does not
    apply (another target or source, no variables, or --no-rewrite)."""
    from converters import formats
    from converters.registry import Conversion
    from converters.rewrite import off

    if target != formats.TFLITE or source.format not in (formats.TFLITE, formats.TFLITE_INT8) or off(options):
        return None
    with open(source.path, "rb") as f:
        if not ExplicitState.matches(f.read()):
            return None
    return [Conversion(source.format, source.format, _copy, extra="convert", cost=0)]
