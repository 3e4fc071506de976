"""What a TFLite model holds, and what the Edge TPU would make of it (`edgeport inspect`)."""

import os
from collections import Counter

from edge.files import printable


def _tensor(t):
    q = t.quantization
    return {"name": t.name, "shape": list(t.shape),
            "shape_signature": list(t.shape_signature) if t.shape_signature else None,
            "dtype": t.dtype,
            "quantization": ({"scale": q.scale[0] if len(q.scale) == 1 else q.scale,
                              "zero_point": q.zero_point[0] if len(q.zero_point) == 1 else q.zero_point}
                             if q else None)}


def convert_hint(path, fmt):
    """How to get a TFLite model from a `fmt` model at `path`: a command only when one plans."""
    from converters.registry import plan_route, reachable_from
    from edge.errors import InputError

    try:
        plan_route(fmt, "tflite")
    except InputError:
        reach = ", ".join(sorted(reachable_from(fmt))) or "nothing"
        return f"edgeport has no route from {fmt} to TFLite (from {fmt} it reaches: {reach})"
    return f"convert it first: edgeport convert {path} --to tflite"


def describe(path, edgetpu=False, min_runtime_version=None):
    """The summary dict `inspect` prints."""
    from converters.edgetpu.analyzer import analyze_compiled, predict_mapping
    from converters.formats import detect_format
    from edge.errors import InputError
    from edge.tflite_model import TFLiteModel, is_tflite

    if not os.path.isfile(path):
        raise InputError(f"{path} does not exist or is not a file")
    with open(path, "rb") as f:
        if not is_tflite(f.read(8)):
            fmt = detect_format(path)
            hint = (f"`edgeport check {path} --graph` lists its inputs, outputs and nodes; or "
                    + convert_hint(path, fmt))
            raise InputError(f"{path} is a {fmt} model; inspect reads TFLite models", hint)
    model = TFLiteModel.load(path)
    fmt = detect_format(path)
    ops = Counter(model.op_names())
    out = {
        "model": path, "format": fmt, "size_bytes": os.path.getsize(path),
        "subgraphs": len(model.subgraphs),
        "inputs": [_tensor(t) for t in model.inputs()],
        "outputs": [_tensor(t) for t in model.outputs()],
        "op_counts": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "operators": len(model.main.operators),
        "custom_ops": model.custom_ops(),
    }
    if "min_runtime_version" in model.metadata:
        raw = model.metadata_bytes("min_runtime_version") or b""
        out["min_tflite_runtime"] = raw.split(b"\0")[0].decode("ascii", "replace") or None
    if model.is_edgetpu_compiled():
        out["edgetpu_compiled"] = analyze_compiled(model)
        if edgetpu:
            out["edgetpu_verdict"] = "already compiled for the Edge TPU"
    elif edgetpu:
        pred = predict_mapping(model, min_runtime_version)
        out["edgetpu_prediction"] = pred
        if not _quantized(model):
            out["edgetpu_verdict"] = (
                "not quantized: the Edge TPU runs only full-integer (int8/uint8) models; make "
                "one from the original with --to tflite-int8 --calibration DIR")
        else:
            out["edgetpu_verdict"] = (f"{pred.get('mapped', 0)} of {pred.get('total', 0)} ops "
                                      f"predicted on the Edge TPU")
    return out


def _quantized(model):
    """True when some operator computes in integers (an int8/uint8 non-constant output)."""
    g = model.main
    for op in g.operators:
        for o in op.outputs:
            if o >= 0 and g.tensors[o].dtype in ("INT8", "UINT8") and op.opcode != "DEQUANTIZE":
                return True
    return False


def _fold(text, shown=4):
    """Fold the per-op rows of a prediction that repeat the same op, segment and status."""
    import re

    rows, order, out = {}, [], []
    pat = re.compile(r"^(\s+)#(\d+) (\S+) \(([^)]*)\): (.*?)(?: - (.*))?$")
    for line in text.splitlines():
        m = pat.match(line)
        if not m:
            if order:  # flush the rows gathered so far, keeping the block where it was
                out += [_fold_row(k, rows[k], shown) for k in order]
                rows, order = {}, []
            out.append(line)
            continue
        key = (m.group(1), m.group(3), m.group(4), m.group(5))
        if key not in rows:
            rows[key] = []
            order.append(key)
        rows[key].append((m.group(2), m.group(6)))
    out += [_fold_row(k, rows[k], shown) for k in order]
    return "\n".join(out)


def _fold_row(key, items, shown):
    indent, op, segment, status = key
    idx = ", ".join("#" + i for i, _ in items[:shown]) + (", ..." if len(items) > shown else "")
    detail = next((d for _, d in items if d), None)
    more = f" x{len(items)}" if len(items) > 1 else ""
    return (f"{indent}{idx} {op}{more} ({segment}): {status}"
            + (f" - {detail}" + (" (first of them)" if len(items) > 1 else "") if detail else ""))


def _fmt_tensor(t):
    q = t["quantization"]
    qs = f"  q(scale={q['scale']}, zero_point={q['zero_point']})" if q and not isinstance(q["scale"], list) else (
        "  q(per-channel)" if q else "")
    sig = t["shape_signature"]
    dyn = f" (signature {sig})" if sig and sig != t["shape"] else ""
    return f"  {printable(t['name'])}: {t['dtype']}{t['shape']}{dyn}{qs}"


def format_text(d):
    from converters.edgetpu.analyzer import format_compiled, format_prediction

    lines = [f"{printable(d['model'])}: {d['format']}, {d['size_bytes']:,} bytes, {d['operators']} ops"
             + (f", {d['subgraphs']} subgraphs" if d["subgraphs"] > 1 else "")]
    if d.get("edgetpu_verdict"):
        lines.append(f"Edge TPU: {d['edgetpu_verdict']}")
    lines.append("inputs:")
    lines += [_fmt_tensor(t) for t in d["inputs"]]
    lines.append("outputs:")
    lines += [_fmt_tensor(t) for t in d["outputs"]]
    lines.append("ops: " + ", ".join(f"{k} x{v}" for k, v in d["op_counts"].items()))
    if "edgetpu_compiled" in d:
        lines.append(format_compiled(d["edgetpu_compiled"]))
    if "edgetpu_prediction" in d:
        lines.append(_fold(format_prediction(d["edgetpu_prediction"])))
    return "\n".join(lines)
