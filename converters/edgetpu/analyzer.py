"""Predict the Edge TPU compiler's mapping of a TFLite model; describe a compiled one.

The prediction applies the per-op table of `ops` (converters/edgetpu/ops.py) and then the one-partition rule
of Coral's "TensorFlow models on the Edge TPU" (section "Compiling"): the compiler makes
one Edge TPU custom op; an unsupported op splits the graph, and every op that depends on
it runs on the CPU too, even when supported (the log then says "More than one subgraph is
not supported"). Unsupported ops that only read model inputs (e.g. a float QUANTIZE) form a
CPU prefix before the segment. "Depends on" follows the data flow (tensor producers and
consumers), not the order of ops in the file: a supported branch that never reads an
unsupported op's output stays on the Edge TPU.
"""

from collections import Counter

from converters.edgetpu import ops as ops_table
from edge.errors import InputError
from edge.tflite_model import EDGETPU_CUSTOM_OP, TFLiteModel


def _load(model):
    return model if isinstance(model, TFLiteModel) else TFLiteModel.load(model)


def _op_name(op):
    return op.custom_code if op.opcode == "CUSTOM" else op.opcode


def _dataflow(model, graph):
    """(producers, consumers, order): op -> producing ops of its non-constant inputs, etc."""
    producer = {}
    for op in graph.operators:
        for t in op.outputs:
            producer[t] = op.index
    preds = {op.index: set() for op in graph.operators}
    succs = {op.index: set() for op in graph.operators}
    for op in graph.operators:
        for t in op.inputs:
            if t >= 0 and t in producer:
                preds[op.index].add(producer[t])
                succs[producer[t]].add(op.index)
    # Kahn's order (TFLite files are already topologically sorted; this does not rely on it).
    indeg = {i: len(p) for i, p in preds.items()}
    ready = sorted(i for i, d in indeg.items() if d == 0)
    order = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for s in sorted(succs[i]):
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    if len(order) != len(graph.operators):
        raise InputError(f"{model.name}: the op graph has a cycle")
    return preds, succs, order


def predict_mapping(model, min_runtime_version=None):
    """Which ops the compiler would map to the Edge TPU, which would stay on the CPU, and why.

    Returns a JSON-ready dict: per-op rows (placement, segment, status, details), counts,
    and a table grouped like the compiler's log (op, count, status).
    """
    model = _load(model)
    if model.is_edgetpu_compiled():
        raise InputError(f"{model.name} is already compiled for the Edge TPU",
                         "predict on the source model; `edgeport inspect` describes compiled ones")
    g = model.main
    preds, _, order = _dataflow(model, g)
    problems = {op.index: ops_table.check_op(model, g, op, min_runtime_version) for op in g.operators}
    prefix, suffix = set(), set()
    for i in order:
        if problems[i] and all(p in prefix for p in preds[i]):
            prefix.add(i)
    for i in order:
        if i in prefix:
            continue
        if problems[i] or any(p in suffix for p in preds[i]):
            suffix.add(i)
    rows = []
    for op in g.operators:
        i = op.index
        if i in prefix or i in suffix:
            status, details = (problems[i][0][0], [d for _, d in problems[i]]) if problems[i] else (
                ops_table.MORE_THAN_ONE_SUBGRAPH,
                ["depends on an op that runs on the CPU, and the compiler makes only one Edge TPU segment"])
            rows.append({"index": i, "op": _op_name(op), "version": op.version, "placement": "cpu",
                         "segment": "prefix" if i in prefix else "suffix", "status": status,
                         "details": details})
        else:
            rows.append({"index": i, "op": _op_name(op), "version": op.version, "placement": "edgetpu",
                         "segment": "edgetpu", "status": ops_table.MAPPED, "details": []})
    mapped = sum(r["placement"] == "edgetpu" for r in rows)
    return {
        "model": model.name,
        "total": len(rows),
        "mapped": mapped,
        "edgetpu_subgraphs": 1 if mapped else 0,
        "cpu_ops": [r["op"] for r in rows if r["placement"] == "cpu"],
        "operators": _group(rows),
        "ops": rows,
    }


def _group(rows):
    counts = Counter((r["op"], r["status"]) for r in rows)
    return [{"op": op, "count": n, "status": status} for (op, status), n in counts.items()]


def analyze_compiled(model):
    """A compiled model: its Edge TPU subgraphs, the ops outside them, the boundary tensors."""
    model = _load(model)
    g = model.main
    tpu = [op for op in g.operators if op.opcode == "CUSTOM" and op.custom_code == EDGETPU_CUSTOM_OP]
    if not tpu:
        raise InputError(f"{model.name} holds no {EDGETPU_CUSTOM_OP}: it is not compiled for the Edge TPU")
    producer = {t: op for op in g.operators for t in op.outputs}
    consumers = {}
    for op in g.operators:
        for t in op.inputs:
            if t >= 0:
                consumers.setdefault(t, []).append(op)
    boundary = []
    for k, op in enumerate(tpu):
        for t in op.inputs:
            if t < 0 or model.buffer_data(g.tensors[t].buffer):
                continue
            src = producer.get(t)
            peer = ("model input" if t in g.inputs else
                    f"CPU op {src.index} {_op_name(src)}" if src is not None else "state/variable tensor")
            boundary.append(_boundary_row(g.tensors[t], k, "in", peer))
        for t in op.outputs:
            peers = [f"CPU op {c.index} {_op_name(c)}" for c in consumers.get(t, [])]
            if t in g.outputs:
                peers.append("model output")
            boundary.append(_boundary_row(g.tensors[t], k, "out", ", ".join(peers) or "unused"))
    outside = [{"index": op.index, "op": _op_name(op), "version": op.version}
               for op in g.operators if op not in tpu]
    return {"model": model.name, "edgetpu_subgraphs": len(tpu), "ops_outside": outside,
            "boundary": boundary, "subgraphs_in_file": len(model.subgraphs)}


def _boundary_row(t, segment, direction, peer):
    q = t.quantization
    return {"segment": segment, "direction": direction, "tensor": t.name, "shape": list(t.shape),
            "dtype": t.dtype, "peer": peer,
            "quantization": {"scale": q.scale[0], "zero_point": q.zero_point[0]} if q and q.scale and q.zero_point else None}


def compare_with_compiled(source, compiled, min_runtime_version=None):
    """Predicted vs actual for a (source, compiled) pair: ops left on the CPU, as multisets."""
    pred = predict_mapping(source, min_runtime_version)
    actual = analyze_compiled(compiled)
    predicted_cpu = sorted(pred["cpu_ops"])
    actual_cpu = sorted(o["op"] for o in actual["ops_outside"])
    return {
        "model": pred["model"],
        "predicted_cpu_ops": predicted_cpu,
        "actual_cpu_ops": actual_cpu,
        "predicted_mapped": pred["mapped"],
        "actual_mapped": pred["total"] - len(actual_cpu),
        "total": pred["total"],
        "predicted_edgetpu_subgraphs": pred["edgetpu_subgraphs"],
        "actual_edgetpu_subgraphs": actual["edgetpu_subgraphs"],
        "agree": predicted_cpu == actual_cpu and pred["edgetpu_subgraphs"] == actual["edgetpu_subgraphs"],
    }


# -- text -------------------------------------------------------------------------------

def format_prediction(pred):
    lines = [f"Edge TPU prediction (from Coral's op table, no compiler run): "
             f"{pred['mapped']} of {pred['total']} ops would map to the Edge TPU, "
             f"{pred['edgetpu_subgraphs']} Edge TPU subgraph(s)"]
    width = max([len(r["op"]) for r in pred["operators"]] + [8]) + 2
    lines.append(f"  {'Operator':<{width}}{'Count':<7}Status")
    for r in pred["operators"]:
        lines.append(f"  {r['op']:<{width}}{r['count']:<7}{r['status']}")
    cpu = [r for r in pred["ops"] if r["placement"] == "cpu"]
    if cpu:
        lines.append("  on the CPU:")
        for r in cpu:
            why = "; ".join(r["details"])
            lines.append(f"    #{r['index']} {r['op']} ({r['segment']}): {r['status']}" + (f" - {why}" if why else ""))
    return "\n".join(lines)


def format_compiled(analysis):
    lines = [f"Edge TPU compiled model: {analysis['edgetpu_subgraphs']} Edge TPU subgraph(s), "
             f"{len(analysis['ops_outside'])} op(s) outside them"]
    for o in analysis["ops_outside"]:
        lines.append(f"  CPU op #{o['index']} {o['op']}")
    lines.append("  boundary tensors:")
    for b in analysis["boundary"]:
        arrow = "<-" if b["direction"] == "in" else "->"
        lines.append(f"    segment {b['segment']} {arrow} {b['tensor']} {b['dtype']}{b['shape']}  ({b['peer']})")
    return "\n".join(lines)
