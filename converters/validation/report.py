"""Validation reports: a readable table, a JSON document, a JUnit XML file."""

import json
import math
from xml.etree import ElementTree as ET

from converters.atomic import write_text_atomic


def _num(x, fmt=".3g"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, fmt)


def _clean(x):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    return x


def report_dict(report):
    models = []
    for r in report.results:
        d = {"model": r.path, "format": r.format, "status": r.status, "passed": r.passed,
             "validated": r.validated,
             "summary": r.summary_line(), "runner": r.runner, "mean_ms": r.mean_ms,
             "outputs_from": r.outputs_from, "warnings": r.warnings, "message": r.message}
        if r.comparison is not None:
            d["mode"] = r.comparison.mode
            d["outputs"] = [o._asdict() for o in r.comparison.outputs]
        if getattr(r, "floor", None):
            d["noise_floor"] = r.floor
        if r.structure:
            d["numbers_compared"] = False
            d["structure"] = [{"check": c, "ok": ok, "detail": det} for c, ok, det in r.structure]
        models.append(d)
    source = {"model": report.source.get("path"),
              **{k: v for k, v in report.source.items() if k != "path"}}
    sig = getattr(report, "signature", None)
    return _clean({"passed": report.passed, "exit_code": report.exit_code,
                   "source": source, "inputs": report.inputs,
                   "input_signature": sig.to_dict() if sig is not None else None,
                   "placeholder_shapes": report.placeholders,
                   "verdict_note": report.placeholder_note() or None,
                   "data_note": getattr(report, "data_note", "") or None,
                   "warnings": report.warnings, "models": models})


def write_json(report, path):
    write_text_atomic(path, json.dumps(report_dict(report), indent=2) + "\n")


def table(report):  # noqa: C901 (a named exception: to be split along its jobs)
    """The human-readable report: one block per converted model, one row per output."""
    lines = [f"source: {report.source.get('path')} ({report.source.get('format')})"
             + (f", {report.source['mean_ms']} ms/inference" if report.source.get("mean_ms") else "")
             + (f" ({report.source['note']})" if report.source.get("note") else ""),
             f"inputs: {report.inputs}"]
    sig = getattr(report, "signature", None)
    if sig is not None:
        lines += [f"  input {s.describe()}" for s in sig.inputs]
    lines += [f"warning: {w}" for w in report.warnings]
    for r in report.results:
        lines.append("")
        head = f"{r.name} ({r.format})"
        if r.mean_ms is not None:
            head += f", {r.mean_ms} ms/inference"
        if r.outputs_from != "run":
            head += f", outputs {r.outputs_from}"
        lines.append(head)
        for w in r.warnings:
            lines.append(f"  warning: {w}")
        if r.comparison is not None and r.comparison.outputs:
            lines.append(f"  mode: {r.comparison.mode}")
            rows = [("output", "role", "result", "max abs", "mean abs", "max rel", "cosine",
                     "req. atol", "req. rtol")]
            for o in r.comparison.outputs:
                rows.append((o.name if o.converted_name in (None, o.name) else
                             f"{o.name}<->{o.converted_name}", o.role,
                             "pass" if o.passed else "FAIL", _num(o.max_abs), _num(o.mean_abs),
                             _num(o.max_rel), _num(o.cosine, ".5f"),
                             _num(o.required_atol), _num(o.required_rtol)))
            widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
            for o in r.comparison.outputs:
                lines += _role_lines(o)
                if o.note:
                    lines.append(f"  note: '{o.name}': {o.note}")
            lines += _floor_lines(getattr(r, "floor", None))
        for c, ok, det in r.structure:
            lines.append(f"  {'ok  ' if ok else 'FAIL'} {c}: {det}")
        lines.append(f"  => {r.summary_line()}")
    lines.append("")
    if not report.results:
        lines.append("outputs recorded only: no converted model to compare")
        return _one_per_line(lines)
    unvalidated = [r.name for r in report.results if r.status in ("structure-only", "error")]
    note = f" ({report.placeholder_note()})" if report.placeholder_note() else ""
    if report.passed:
        lines.append("PASSED" + note)
    elif report.exit_code == 2:
        lines.append(f"ERROR: {report.summary_line()}")
    elif unvalidated and all(r.passed or r.name in unvalidated for r in report.results):
        lines.append(f"NOT VALIDATED: numbers not compared for {', '.join(unvalidated)}"
                     + (" (accepted: --accept-unvalidated)" if report.exit_code == 0 else "")
                     + note)
    else:
        lines.append(f"FAILED: {report.summary_line()}")
    return _one_per_line(lines)


def _one_per_line(lines):
    """The table's text: each element one line, so a line break or a terminal escape inside
    one (a model's file, tensor or label name) is shown escaped and cannot fake a line."""
    from edge.files import printable

    return "\n".join(printable(x) for x in lines)


def _role_lines(o):
    """The output's role with its evidence, its role metric, its parts, and (detectors) a few
    matched detections."""
    out = [f"  role: '{o.name}': {o.role} ({o.role_evidence})" + (
        f": {o.headline}" if getattr(o, "headline", "") else "")]
    for p in o.parts or ():
        if "range" in p:
            out.append(f"    part {p['part']}: {'ok' if p['ok'] else 'FAIL'}, range "
                       f"{p['range'][0]:.3g}..{p['range'][1]:.3g} (source "
                       f"{p['source_range'][0]:.3g}..{p['source_range'][1]:.3g}), "
                       f"{p['levels'] if p['levels'] <= 64 else '>64'} levels"
                       + (f": {p['reason']}" if not p["ok"] else ""))
        else:
            out.append(f"    part {p['part']}: {'ok' if p['ok'] else 'FAIL'}: {p['reason']}")
    matches = (o.metrics or {}).get("matches") or []
    for m in matches[:5]:
        out.append(f"    matched: sample {m['sample']} class {m['class']} IoU {m['iou']:.3f}: source "
                   f"[{', '.join(f'{x:.1f}' for x in m['source_box'])}] -> "
                   f"[{', '.join(f'{x:.1f}' for x in m['box'])}]")
    if len(matches) > 5:
        out.append(f"    ... {len(matches) - 5} more matched detections in the JSON report")
    from edge.files import printable  # names come from the model

    return [printable(x) for x in out]


def _floor_lines(floor):
    """The noise floor block: how it was measured, then per output the floor, the tolerance
    it gave and the measured error."""
    if not floor:
        return []
    if not floor.get("measured"):
        return [f"  noise floor: {floor.get('method')}"]
    lines = [f"  noise floor: {floor.get('method')}; tolerance = max(atol, "
             f"{floor.get('multiple'):g} x floor)"]
    for name, f in (floor.get("outputs") or {}).items():
        times = f.get("error_in_floors")
        lines.append(f"    '{name}': floor {_num(f.get('floor'))}, tolerance {_num(f.get('tolerance'))}, "
                     f"error {_num(f.get('error'))}"
                     + (f" ({times:.2g} x floor)" if times is not None else ""))
    return lines


def junit_xml(report):
    """A JUnit document: one testsuite, one testcase per (converted model, output)."""
    cases = []
    for r in report.results:
        cls = f"edgeport.validate.{r.name}"
        if r.comparison is not None and r.comparison.outputs:
            for o in r.comparison.outputs:
                cases.append((cls, o.name, None if o.passed else "failure",
                              o.reason or "", _case_text(o)))
        elif r.structure:
            for c, ok, det in r.structure:
                cases.append((cls, c, None if ok else "failure", det, det))
            if r.status == "structure-only":
                cases.append((cls, "numbers", "skipped", r.message, r.message))
        else:
            cases.append((cls, "load", "error" if r.status == "error" else "failure",
                          r.message, r.message))
    suite = ET.Element("testsuite", name="edgeport validate", tests=str(len(cases)),
                       failures=str(sum(c[2] == "failure" for c in cases)),
                       errors=str(sum(c[2] == "error" for c in cases)),
                       skipped=str(sum(c[2] == "skipped" for c in cases)))
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="source", value=str(report.source.get("path")))
    ET.SubElement(props, "property", name="inputs", value=report.inputs)
    for cls, name, kind, message, text in cases:
        tc = ET.SubElement(suite, "testcase", classname=cls, name=name)
        if kind:
            el = ET.SubElement(tc, kind, message=message[:500])
            el.text = text
        elif text:
            ET.SubElement(tc, "system-out").text = text
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _case_text(o):
    parts = [f"max abs {_num(o.max_abs)}", f"mean abs {_num(o.mean_abs)}",
             f"max rel {_num(o.max_rel)}", f"cosine {_num(o.cosine, '.5f')}",
             f"magnitude ratio {_num(o.norm_ratio, '.4g')}",
             f"required atol {_num(o.required_atol)} or rtol {_num(o.required_rtol)} "
             f"({o.check_stat})"]
    if o.top1_agree is not None:
        parts.append(f"top-1 {o.top1_agree}/{o.samples}, top-{o.top_k} overlap {_num(o.top_k_overlap, '.2f')}")
    parts.append(f"role {o.role} ({o.role_evidence})" + (f": {o.headline}" if o.headline else ""))
    return ", ".join(parts)


def write_junit(report, path):
    write_text_atomic(path, junit_xml(report))
