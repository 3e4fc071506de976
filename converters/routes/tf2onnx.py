"""TF SavedModel, Keras 3 and TFLite (float and quantized) -> ONNX, through tf2onnx.

Keras 3 models go through `tf2onnx.convert.from_function` with an explicit input signature
(tf2onnx's `from_keras` guesses it from Keras 2 attributes Keras 3 no longer has). Works as
is with tf2onnx 1.17, NumPy 2.4 and protobuf 7: no patch is applied.
"""

import os

from converters import formats
from converters.registry import conversion
from edge.errors import EdgeportError, first_line, require

DEFAULT_OPSET = 17


def _tf2onnx():
    from converters.routes.tf_loading import import_tf

    import_tf()
    import logging

    tf2onnx = require("tf2onnx", "convert", "conversion to ONNX")
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return tf2onnx


def _versions():
    from converters.artefact import package_versions

    return package_versions("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx")


def clean_names(model, output_names=None):  # noqa: C901 (a named exception: to be split along its jobs)
    """Drop tf2onnx's ':0' and 'serving_default_' decorations from graph input/output names.

    The renames reach the nodes of nested graphs (If, Loop, Scan) that read the outer
    names, so a model with control flow stays valid; when a new name is taken anywhere, or
    two would collide, the names are kept as they are.
    """
    g = model.graph
    renames = {}
    for vi in list(g.input):
        new = vi.name.split(":")[0]
        new = new[len("serving_default_"):] if new.startswith("serving_default_") else new
        renames[vi.name] = new
    for i, vi in enumerate(g.output):
        new = output_names[i] if output_names and i < len(output_names) else vi.name.split(":")[0]
        renames[vi.name] = new
    graphs = list(formats.onnx_graphs(g))
    taken = set()
    for sg in graphs:
        taken |= {n.name for n in sg.initializer} | {o for n in sg.node for o in n.output}
        if sg is not g:
            taken |= {v.name for v in list(sg.input) + list(sg.output)}
    renames = {a: b for a, b in renames.items() if a != b and b not in taken and b}
    if len(set(renames.values())) != len(renames):
        return model
    for vi in list(g.input) + list(g.output):
        vi.name = renames.get(vi.name, vi.name)
    for sg in graphs:
        for node in sg.node:
            for i, n in enumerate(node.input):
                if n in renames:
                    node.input[i] = renames[n]
            for i, n in enumerate(node.output):
                if n in renames:
                    node.output[i] = renames[n]
        if sg is not g:
            for vi in sg.output:  # a branch may return an outer value as it is
                if vi.name in renames:
                    vi.name = renames[vi.name]
    return model


class _Collect:
    """A logging handler keeping tf2onnx's error lines (unsupported ops) instead of printing
    them with their tracebacks."""

    def __init__(self):
        import logging

        self.lines = []
        self.handler = logging.Handler(logging.WARNING)
        self.handler.emit = lambda rec: self.lines.append(rec.getMessage())

    def __enter__(self):
        import logging

        self.loggers = [logging.getLogger(n) for n in ("tf2onnx", "tf2onnx.tfonnx",
                                                       "tf2onnx.tflite_utils")]
        self.saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in self.loggers]
        for lg in self.loggers:
            lg.handlers[:] = [self.handler]
            lg.propagate = False
            lg.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc):
        for lg, (handlers, propagate, level) in zip(self.loggers, self.saved):
            lg.handlers[:] = handlers
            lg.propagate = propagate
            lg.setLevel(level)

    def unsupported(self):
        """[(op, node)] of the ops tf2onnx said it cannot convert."""
        import re

        found = []
        for line in self.lines:
            m = re.search(r"op \[(.+): ([^:\]]+)\] is not supported", line)
            if m:
                found.append((m.group(2).replace("TFL_", ""), m.group(1)))
        return found


def _unhandled_tflite_ops(path):
    """[(op, node)] of the TFLite model's ops for which tf2onnx registers no handler."""
    try:
        from tf2onnx.handler import tf_op

        from edge.tflite_model import TFLiteModel

        known = set()
        for handlers in tf_op.get_opsets().values():
            for d in handlers:
                known |= set(d)
        m = TFLiteModel.load(path)
    except Exception:
        return []
    out = []
    for sg in m.subgraphs:
        for op in sg.operators:
            if op.opcode != "CUSTOM" and f"TFL_{op.opcode}" not in known:
                node = sg.tensors[op.outputs[0]].name if op.outputs and op.outputs[0] >= 0 \
                    else f"operator {op.index}"
                out.append((op.opcode, node))
    return out


def _conversion_error(source, e, collected, tflite_path=None):
    """One line naming the op and node tf2onnx could not convert (else its own first line)."""
    bad = collected.unsupported() if collected is not None else []
    if not bad and tflite_path is not None:
        bad = _unhandled_tflite_ops(tflite_path)
    if bad:
        op, node = bad[0]
        more = f" (and {len(bad) - 1} more: {', '.join(sorted({o for o, _ in bad[1:]}))})" \
            if len(bad) > 1 else ""
        return EdgeportError(f"tf2onnx cannot convert op {op} (node '{node}') of {source.name}{more}",
                             "ONNX has no equivalent for it here; keep the model in its format "
                             "or replace the op in the original")
    return EdgeportError(f"tf2onnx could not convert {source.name}: {type(e).__name__}: "
                         f"{first_line(e)}", "run again with --debug for the tool's traceback")


def _sparse_refusal(source, model):
    """A sparse TFLite model (DENSIFY ops): tf2onnx reads sparse weights as dense ones."""
    g = model.main
    for op in g.operators:
        if op.opcode == "DENSIFY":
            out = g.tensors[op.outputs[0]].name if op.outputs else f"operator {op.index}"
            return EdgeportError(
                f"tf2onnx cannot convert op DENSIFY (node '{out}') of {source.name}: the model "
                f"stores {len(getattr(model, 'sparse', ())) or 'some'} weights sparse",
                "the TFLite runtime runs it as it is; for ONNX, convert a dense version of the model")
    return None


def _save(model, output_path, opset):
    import onnx

    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise EdgeportError(f"tf2onnx produced an invalid ONNX model: {first_line(e)}") from None
    onnx.save(model, os.fspath(output_path))
    return {"opset": opset, "versions": _versions(),
            "inputs": [i.name for i in model.graph.input],
            "outputs": [o.name for o in model.graph.output]}


@conversion((formats.KERAS, formats.SAVEDMODEL), formats.ONNX)
def tf_to_onnx(source, output_path, options):
    from converters.routes.tf_loading import load_tf_source

    tf2onnx = _tf2onnx()
    src = load_tf_source(source, options)
    opset = options.opset or DEFAULT_OPSET
    options.progress(f"tf2onnx: converting {source.name} (opset {opset})")
    collected = _Collect()
    try:
        with collected:
            model, _ = tf2onnx.convert.from_function(src.fn, input_signature=src.specs, opset=opset)
    except Exception as e:  # tf2onnx raises plain exceptions for unsupported ops
        raise _conversion_error(source, e, collected) from None
    if collected.unsupported():
        raise _conversion_error(source, None, collected)
    return _save(clean_names(model, src.output_names), output_path, opset)


@conversion(formats.TFLITE, formats.ONNX)
@conversion(formats.TFLITE_INT8, formats.ONNX, cost=2)
def tflite_to_onnx(source, output_path, options):
    from edge.tflite_model import TFLiteModel

    tf2onnx = _tf2onnx()
    opset = options.opset or DEFAULT_OPSET
    custom = TFLiteModel.load(source.path).custom_ops()
    if custom:
        raise EdgeportError(f"{source.name} uses custom ops ({', '.join(custom)}) that ONNX cannot express",
                            "convert the model's original (before compilation/custom ops) instead")
    sparse = _sparse_refusal(source, TFLiteModel.load(source.path))
    if sparse is not None:
        raise sparse
    options.progress(f"tf2onnx: converting {source.name} (opset {opset})")
    collected = _Collect()
    try:
        with collected:
            model, _ = tf2onnx.convert.from_tflite(os.fspath(source.path), opset=opset)
    except Exception as e:
        raise _conversion_error(source, e, collected, source.path) from None
    if collected.unsupported():  # tf2onnx left them in the graph as they were
        raise _conversion_error(source, None, collected)
    return _save(clean_names(model), output_path, opset)
