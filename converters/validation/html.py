"""The workstation's HTML reports (convert, validate, inspect): pictures made with matplotlib
and Pillow, on edge/html.py's page, tables and escaping (bench's page is there too).
"""

import io

from edge.files import printable
from edge.html import esc, human_size, page, para, png_img, provenance, section, status_cell, table, write_html

__all__ = ["write_html", "convert_page", "inspect_page", "validate_page", "edgetpu_section"]

# -- pictures -----------------------------------------------------------------------------
def _figure_png(draw, size=(5.0, 2.6)):
    """PNG bytes of a matplotlib figure drawn by `draw(ax)` (Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=96)
    ax = fig.add_subplot(1, 1, 1)
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def histogram_png(values, title, xlabel):
    """A histogram of absolute errors (log-scaled x when they span decades)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]

    def draw(ax):
        if v.size == 0:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center")
            return
        pos = v[v > 0]
        if pos.size and pos.max() / max(pos.min(), 1e-300) > 1e3:
            lo = max(pos.min(), pos.max() * 1e-12)
            bins = np.logspace(np.log10(lo), np.log10(pos.max()) + 1e-9, 40)
            ax.hist(np.clip(v, lo, None), bins=bins, color="#3b6ea5")
            ax.set_xscale("log")
        else:
            ax.hist(v, bins=40, color="#3b6ea5")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("elements", fontsize=9)
        ax.tick_params(labelsize=8)

    return _figure_png(draw)


def _fit(im, side):
    """`im` scaled so its longer side is `side`: down with LANCZOS, up (a tiny test image) with
    NEAREST so its pixels stay visible."""
    from PIL import Image

    scale = side / max(im.size)
    size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
    return im.resize(size, Image.LANCZOS if scale < 1 else Image.NEAREST)


def _as_seen(image_path, input_hw):
    """The photo as the model saw it: through edge.preprocess.load_pixels at the model's input
    size (the same pixels validation fed, draft decode and EXIF included)."""
    from edge.preprocess import load_pixels

    h, w = input_hw or (224, 224)
    return load_pixels(image_path, (w, h)).convert("RGB")


def boxes_png(image_path, source_boxes, artefact_boxes, max_side=360, input_hw=None):
    """The photo as the model saw it with the source's boxes (green) and the artefact's
    (magenta, thinner) drawn over each other. Boxes are (x1, y1, x2, y2) in 0..1 of the input."""
    from PIL import ImageDraw

    im = _fit(_as_seen(image_path, input_hw), max_side)
    w, h = im.size
    d = ImageDraw.Draw(im)
    for boxes, colour, width in ((source_boxes, (20, 200, 60), 3), (artefact_boxes, (230, 0, 200), 1)):
        for b in boxes:
            x1, y1, x2, y2 = (float(b[0]) * w, float(b[1]) * h, float(b[2]) * w, float(b[3]) * h)
            d.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=colour, width=width)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def thumbnail_png(image_path, max_side=240, input_hw=None):
    """The photo as the model saw it, scaled for a page."""
    im = _fit(_as_seen(image_path, input_hw), max_side)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# -- Edge TPU op strip ----------------------------------------------------------------------
PLACEMENT_COLOURS = {"edgetpu": "#2e9e5b", "cpu": "#d1495b", "unknown": "#9aa5b1"}

# What would keep an op on the Edge TPU, by the compiler's reason.
ADVICE = {
    "Operation not supported": "replace it with ops the Edge TPU supports, or move it to the end "
                               "of the model so only the tail runs on the CPU",
    "Operation is working on an unsupported data type": "quantize the model fully to int8/uint8 "
                                                        "(convert --to tflite-int8 with calibration data)",
    "Tensor has unsupported rank (up to 3 innermost dimensions mapped)": "reshape so that at most "
                                                                         "3 innermost dimensions are > 1",
    "Operation version not supported": "compile for a newer Edge TPU runtime (--min-runtime-version) "
                                       "or convert with an older TFLite op version",
    "More than one subgraph is not supported": "it depends on an op on the CPU: fix that op and this "
                                               "one follows it back onto the Edge TPU",
    "Tensor has a dynamic shape (sizes must be constant at compile time)": "fix the input shape "
                                                                          "(--input-shapes) before converting",
}


def op_strip_svg(ops, actual_cpu=None, width=1100):
    """The op sequence as a strip of cells coloured by predicted placement; with `actual_cpu`
    (indices the compiler left on the CPU) a second strip shows the compiler's placement."""
    n = max(1, len(ops))
    cell = max(3.0, min(22.0, (width - 90) / n))
    rows = [("predicted", {o["index"]: o["placement"] for o in ops})]
    if actual_cpu is not None:
        rows.append(("compiler", {o["index"]: ("cpu" if o["index"] in actual_cpu else "edgetpu") for o in ops}))
    height = 26 * len(rows) + 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{90 + cell * n:.0f}" height="{height}" '
             f'role="img" aria-label="op placement strip">']
    for r, (label, placement) in enumerate(rows):
        y = 4 + 26 * r
        parts.append(f'<text x="0" y="{y + 15}">{esc(label)}</text>')
        for k, o in enumerate(ops):
            where = placement.get(o["index"], "unknown")
            colour = PLACEMENT_COLOURS.get(where, PLACEMENT_COLOURS["unknown"])
            tip = f'op {o["index"]} {o["op"]}: {where}' + (f' ({o.get("status")})' if where == "cpu" else "")
            parts.append(f'<rect x="{90 + k * cell:.1f}" y="{y}" width="{max(cell - 1, 1):.1f}" height="20" '
                         f'fill="{colour}"><title>{esc(tip)}</title></rect>')
    parts.append("</svg>")
    legend = ('<p class="legend"><span><i class="sw" style="background:#2e9e5b"></i>Edge TPU</span>'
              '<span><i class="sw" style="background:#d1495b"></i>CPU</span></p>')
    return "".join(parts) + legend


def edgetpu_section(prediction, compiled=None, title="Edge TPU mapping"):
    """The strip, the first op that falls to the CPU with its reason and what would keep it on
    the Edge TPU, and the grouped table. `compiled`: analyze_compiled() of the compiler's model."""
    ops = prediction.get("ops") or []
    actual_cpu = None
    parts = [para(f'{prediction.get("mapped")} of {prediction.get("total")} ops predicted on the Edge TPU')]
    if compiled is not None:
        outside = compiled.get("ops_outside") or []
        # the compiled model's ops outside the custom op keep their kinds; match them in order
        remaining = [o["op"] for o in outside]
        actual_cpu = set()
        for o in reversed(ops):
            if o["op"] in remaining:
                remaining.remove(o["op"])
                actual_cpu.add(o["index"])
        parts.append(para(f"the compiler left {len(outside)} op(s) on the CPU in "
                          f"{compiled.get('edgetpu_subgraphs')} Edge TPU subgraph(s)"))
    parts.append(op_strip_svg(ops, actual_cpu))
    first = next((o for o in ops if o.get("placement") == "cpu"), None)
    if first is None:
        parts.append(para("every op is predicted on the Edge TPU", "pass"))
    else:
        reason = first.get("status") or ""
        details = "; ".join(first.get("details") or [])
        parts.append("<h3>First op on the CPU</h3>" + table(
            ["op", "index", "reason", "details", "what would keep it on the Edge TPU"],
            [(first.get("op"), first.get("index"), reason, details,
              ADVICE.get(reason, "see the compiler's documentation of this reason"))]))
    parts.append("<h3>Ops by placement</h3>" + table(
        ["op", "count", "status"], [(g["op"], g["count"], g["status"]) for g in prediction.get("operators") or []],
        numeric=(1,)))
    return section(title, *parts)


# -- one builder per command ------------------------------------------------------------------
def inspect_page(d):
    io_rows = [(direction, t["name"], "x".join(str(s) for s in t["shape"]), t["dtype"],
                "" if not t.get("quantization") else
                f'scale {t["quantization"]["scale"]}, zero point {t["quantization"]["zero_point"]}')
               for direction, ts in (("input", d.get("inputs") or []), ("output", d.get("outputs") or []))
               for t in ts]
    summary = section("Model", table(["what", "value"], [
        ("file", d.get("model")), ("format", d.get("format")), ("size", human_size(d.get("size_bytes"))),
        ("operators", d.get("operators")), ("custom ops", ", ".join(d.get("custom_ops") or []) or "none")]),
        table(["", "name", "shape", "dtype", "quantization"], io_rows))
    parts = [summary]
    if d.get("edgetpu_prediction"):
        parts.append(edgetpu_section(d["edgetpu_prediction"], d.get("edgetpu_compiled")))
    elif d.get("edgetpu_compiled"):
        c = d["edgetpu_compiled"]
        outside = c.get("ops_outside") or []
        parts.append(section(
            "Compiled for the Edge TPU",
            para(f"{c.get('edgetpu_subgraphs')} Edge TPU subgraph(s); {len(outside)} op(s) run on the CPU"),
            table(["op outside the Edge TPU", "index"], [(o["op"], o["index"]) for o in outside]) if outside else "",
            "<h3>Tensors at the boundary</h3>" + table(
                ["segment", "direction", "tensor", "shape", "peer"],
                [(b.get("segment"), b.get("direction"), b.get("tensor"), "x".join(map(str, b.get("shape") or [])),
                  b.get("peer")) for b in c.get("boundary") or []])))
    ops = d.get("op_counts") or {}
    parts.append(section("Op counts", table(["op", "count"], list(ops.items()), numeric=(1,))))
    return page("edgeport inspect", parts, str(d.get("edgetpu_verdict") or ""), provenance("inspect"))


# Columns of a per-output validation row, in this order, where present (roles, floors and
# the comparator's statistics: whichever the validation recorded).
OUTPUT_COLUMNS = ("name", "role", "role_evidence", "metric", "value", "threshold", "passed", "max_abs",
                  "mean_abs", "floor", "floor_multiple", "tolerance", "atol", "cosine", "top1_agree",
                  "samples", "reason")


def outputs_table(outputs):
    """The validation table of one artefact: one row per output."""
    if not outputs:
        return para("no per-output numbers were recorded", "muted")
    cols = [c for c in OUTPUT_COLUMNS if any(c in o and o[c] not in (None, "", []) for o in outputs)]
    rows = []
    for o in outputs:
        row = []
        for c in cols:
            v = o.get(c)
            if c == "passed":
                row.append(("html", status_cell("passed" if v else "failed" if v is not None else "-")))
            elif isinstance(v, (list, dict)):
                row.append(str(v))
            else:
                row.append(v)
        rows.append(row)
    return table([c.replace("_", " ") for c in cols], rows,
                 numeric=tuple(i for i, c in enumerate(cols) if c not in ("name", "role", "role_evidence",
                                                                          "metric", "reason", "passed")))


def verdict_of(validation):
    if not validation:
        return "not validated"
    p = validation.get("passed")
    status = validation.get("status")
    if status:
        return status
    return {True: "passed", False: "failed", None: "not validated"}[p]


def convert_page(models):
    """convert's report: each artefact with its verdict, size and time, then per artefact its
    validation table and, for Edge TPU models, the op strip."""
    rows, details = [], []
    for m in models:
        for a in m.get("artefacts") or []:
            v = a.get("validation") or {}
            rows.append((a.get("model"), a.get("format"), ("html", status_cell(verdict_of(v) if v else a.get("status"))),
                         human_size(a.get("size_bytes")), a.get("time_ms"), v.get("summary") or ""))
            parts = [para(v.get("summary") or a.get("status") or "")]
            if v.get("inputs"):
                parts.append(para(f"inputs: {v['inputs']}", "muted"))
            if v.get("outputs"):
                parts.append(outputs_table(v["outputs"]))
            details.append(section(f"{a.get('format')}: {a.get('model')}", *parts))
            if a.get("format") == "edgetpu" and a.get("status") == "converted" and m.get("model"):
                details.append(_edgetpu_of_artefact(a["model"], m.get("model")))
        for target, why in (m.get("refused") or {}).items():
            rows.append((f"--to {target}", target, ("html", status_cell("failed")), "-", None, f"not made: {why}"))
        if m.get("error"):
            rows.append((m.get("model"), "-", ("html", status_cell("failed")), "-", None, m["error"]))
    summary = section("Summary", table(["artefact", "format", "verdict", "size", "time ms", "validation"],
                                       rows, numeric=(4,)))
    sources = ", ".join(str(m.get("model")) for m in models)
    return page("edgeport convert", [summary] + [d for d in details if d], sources, provenance("convert"))


def _edgetpu_of_artefact(path, source=None):
    """The op strip of a compiled artefact: predicted on its int8 source, and the compiler's."""
    import os

    from converters.artefact import Artefact

    try:
        art = Artefact.open(path)
        md = art.metadata or {}
        made_from = md.get("made_from") or (md.get("provenance") or {}).get("made_from") or {}
        name = os.path.basename(made_from.get("file") or "") if isinstance(made_from, dict) else ""
        # the int8 model it was compiled from: a hop beside it, or the user's source itself
        candidates = [os.path.join(os.path.dirname(path), name)] if name else []
        if source and name and os.path.basename(source) == name:
            candidates.append(source)
        source_path = next((c for c in candidates if os.path.isfile(c)), None)
        from converters.edgetpu.analyzer import analyze_compiled, predict_mapping

        compiled = analyze_compiled(path)
        if source_path and os.path.isfile(source_path):
            return edgetpu_section(predict_mapping(source_path), compiled, "Edge TPU mapping: " + os.path.basename(path))
        return section("Edge TPU mapping: " + os.path.basename(path),
                       para(f"{len(compiled['ops_outside'])} op(s) outside the Edge TPU subgraph(s): "
                            + ", ".join(o["op"] for o in compiled["ops_outside"]) or "none"))
    except Exception as e:  # the report must not fail a finished conversion
        return section("Edge TPU mapping", para(f"not drawn: {type(e).__name__}: {e}", "warn"))


# -- validate ---------------------------------------------------------------------------------
MAX_PICTURES = 8


def _labels_of(artefact):
    labels = getattr(artefact, "labels", None)
    if isinstance(labels, dict):
        return {int(k): str(v) for k, v in labels.items()}
    if isinstance(labels, (list, tuple)):
        return dict(enumerate(str(x) for x in labels))
    return {}


def _top3(scores, labels):
    import numpy as np

    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-flat, kind="stable")[:3]
    return ", ".join(f"{labels.get(int(i), int(i))} {flat[i]:.3g}" for i in order)


def _classifier_figures(files, ref, conv, labels, input_hw=None):
    """The photos on which the top-1 differs, with both top-3 lists."""
    import numpy as np

    figs = []
    a = np.asarray(ref).reshape(len(ref), -1)
    b = np.asarray(conv).reshape(len(conv), -1)
    differ = [k for k in range(min(len(a), len(b))) if int(np.argmax(a[k])) != int(np.argmax(b[k]))]
    for k in differ[:MAX_PICTURES]:
        img = png_img(thumbnail_png(files[k], input_hw=input_hw), f"sample {k}") if files and k < len(files) else ""
        name = files[k].rsplit("/", 1)[-1] if files and k < len(files) else f"sample {k}"
        figs.append(f'<div class="fig">{img}<p><b>{esc(name)}</b></p><p>source: {esc(_top3(a[k], labels))}</p>'
                    f'<p>artefact: {esc(_top3(b[k], labels))}</p></div>')
    head = para(f"top-1 differs on {len(differ)} of {len(a)} samples"
                + (f" (the first {MAX_PICTURES} shown)" if len(differ) > MAX_PICTURES else ""),
                "pass" if not differ else "warn")
    return head + (f'<div class="figs">{"".join(figs)}</div>' if figs else "")


def _detection_figures(files, ref, conv, metrics, input_hw):
    """Photos with the source's boxes (green) and the artefact's (magenta) over each other."""
    import numpy as np

    from converters.validation import detection as det

    thr = metrics.get("score_threshold", 0.25)
    iou = metrics.get("iou", 0.5)
    act = metrics.get("activation", "none")
    figs = []
    for k in range(min(len(ref), len(conv), MAX_PICTURES)):
        dets = []
        for out in (ref[k], conv[k]):
            shape = tuple(d for d in np.shape(out) if d != 1) or np.shape(out)
            coords, scores = det.split_packed(np.asarray(out).reshape(shape))
            d = det.detect(det.to_xyxy(coords[:, :4], "cxcywh"), scores, thr, iou, act)
            boxes = np.asarray(d.boxes, dtype=np.float64)
            if boxes.size and boxes.max() > 1.5 and input_hw:   # pixels of the model's input
                h, w = input_hw
                boxes = boxes / np.array([w, h, w, h], dtype=np.float64)
            dets.append(boxes)
        if files and k < len(files):
            pic = png_img(boxes_png(files[k], dets[0], dets[1], input_hw=input_hw), f"detections on sample {k}")
            name = files[k].rsplit("/", 1)[-1]
        else:
            pic, name = "", f"sample {k}"
        figs.append(f'<div class="fig">{pic}<p><b>{esc(name)}</b>: source {len(dets[0])}, '
                    f'artefact {len(dets[1])} detections</p></div>')
    legend = ('<p class="legend"><span><i class="sw" style="background:#14c83c"></i>source</span>'
              '<span><i class="sw" style="background:#e600c8"></i>artefact</span></p>')
    return legend + f'<div class="figs">{"".join(figs)}</div>'


def _error_histogram(ref, conv, name):
    import numpy as np

    try:
        diff = np.abs(np.asarray(conv, dtype=np.float64) - np.asarray(ref, dtype=np.float64).reshape(np.shape(conv)))
    except ValueError:
        return para(f"{name}: shapes differ, no histogram", "muted")
    return png_img(histogram_png(diff, f"{printable(name)}: |artefact - source|", "absolute error"),
                   f"error histogram of {name}")


def validate_page(report, report_dict):
    """validate's report: a summary, then per artefact the table per output (role, metric,
    error, floor), error histograms, and pictures for classifiers and detectors."""
    import numpy as np

    src_path = report.source.get("path")
    rows = []
    for m in report_dict.get("models") or []:
        rows.append((m.get("model"), m.get("format"), ("html", status_cell(m.get("status"))),
                     human_size(_size(m.get("model"))), m.get("mean_ms"), m.get("summary")))
    summary = section("Summary", para(f"source: {src_path} ({report.source.get('format')}); inputs: "
                                      f"{report.inputs}"),
                      table(["artefact", "format", "verdict", "size", "ms / inference", "summary"], rows,
                            numeric=(4,)))
    parts = [summary]
    src_entry = report.outputs.get(src_path)
    ref_out = src_entry[1] if src_entry else {}
    labels = _labels_of(src_entry[0]) if src_entry else {}
    hw = None
    if report.signature is not None and report.signature.metas:
        shape = list(report.signature.metas[0].shape)
        if len(shape) == 4:
            hw = (shape[1], shape[2]) if shape[3] in (1, 3, 4) else (shape[2], shape[3])
    for m, res in zip(report_dict.get("models") or [], report.results):
        body = [para(m.get("summary") or "")]
        body.append(outputs_table(m.get("outputs") or []))
        entry = report.outputs.get(res.path)
        if entry is not None and res.comparison is not None:
            _, out = entry
            labels = labels or _labels_of(entry[0])
            for o in res.comparison.outputs:
                ref = ref_out.get(o.name)
                conv = out.get(o.converted_name or o.name)
                if ref is None or conv is None:
                    continue
                body.append(f"<h3>{esc(o.name)} ({esc(o.role or 'raw')})</h3>")
                body.append(_error_histogram(ref, conv, o.name))
                if o.role == "class":
                    body.append(_classifier_figures(report.sample_files, ref, conv, labels, hw))
                elif o.role == "detection" and o.metrics:
                    body.append(_detection_figures(report.sample_files, np.asarray(ref), np.asarray(conv),
                                                   o.metrics, hw))
        parts.append(section(f"{m.get('format')}: {m.get('model')}", *body))
    return page("edgeport validate", parts, f"{src_path}", provenance("validate"))


def _size(path):
    import os

    try:
        return os.path.getsize(path) if path and os.path.isfile(path) else None
    except OSError:
        return None
