"""Self-contained HTML pages (`--report FILE.html`): the house style and the escaping.

One file that opens offline: inline CSS, pictures as inline SVG or base64 PNG, no script and
no link to anything outside. Every string that came from a model, a file or a tool is
escaped (HTML entities, and control characters shown as \\xNN) before it is placed.
Pure Python (the device side: `bench --report` runs on a Pi); the workstation's pages with
matplotlib figures build on it in converters/validation/html.py.
"""

from __future__ import annotations

import base64
import html as _html
import math
from typing import TYPE_CHECKING, Any

from .files import printable

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

    from _typeshed import StrPath

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#17324d;color:#fff;padding:18px 28px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;opacity:.8}main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #dde2e8;border-radius:8px;margin:18px 0;padding:14px 18px}
h2{font-size:17px;margin:0 0 10px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0;font-size:13px}th,td{border-bottom:1px solid #e6e9ee;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f3f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#0a7a33;font-weight:600}.fail{color:#b3261e;font-weight:600}.warn{color:#9a6700;font-weight:600}
.muted{color:#66707a}.figs{display:flex;flex-wrap:wrap;gap:14px}.fig{max-width:360px}.fig img{max-width:100%;border:1px solid #dde2e8}
.fig p{margin:4px 0;font-size:12px}code{background:#f0f3f7;padding:1px 4px;border-radius:3px}
svg text{font:11px system-ui,sans-serif}.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:4px;vertical-align:-1px}
"""

PASS_WORDS = {"passed": "pass", "converted": "pass", "kept": "pass", "skipped": "muted",
              "failed": "fail", "error": "fail", "not validated": "warn", "structure-only": "warn",
              "structure only": "warn"}


def esc(text: object) -> str:
    """Text from outside edgeport, safe inside HTML (and free of terminal escapes)."""
    return _html.escape(printable("" if text is None else text), quote=True)


def num(x: object, fmt: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        return format(x, fmt) if isinstance(x, float) else str(x)
    return esc(x)


def status_cell(status: object) -> str:
    cls = PASS_WORDS.get(str(status).lower(), "")
    return f'<td class="{cls}">{esc(status)}</td>'


def table(headers: Iterable[object], rows: Iterable[Sequence[object]],
          numeric: Collection[int] = ()) -> str:
    """An HTML table; cells are escaped unless given as ('html', markup)."""
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>"]
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            if isinstance(c, tuple) and len(c) == 2 and c[0] == "html":
                cells.append(c[1])
            else:
                cls = ' class="num"' if i in numeric else ""
                cells.append(f"<td{cls}>{num(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def section(title: object, *parts: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{''.join(parts)}</section>"


def para(text: object, cls: str = "") -> str:
    return f'<p class="{cls}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>"


def png_img(png_bytes: bytes, alt: object) -> str:
    return (f'<img alt="{esc(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(png_bytes).decode("ascii")}">')


def page(title: object, sections: Iterable[str], subtitle: object = "",
         provenance: Mapping[str, object] | None = None) -> str:
    """The whole document."""
    prov = ""
    if provenance:
        rows = [(k, ("html", f"<td><code>{esc(v)}</code></td>")) for k, v in provenance.items()]
        prov = section("Provenance", table(["what", "value"], rows))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1>{f'<p>{esc(subtitle)}</p>' if subtitle else ''}</header>"
            f"<main>{''.join(sections)}{prov}</main></body></html>\n")


def human_size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def write_html(path: StrPath, text: str) -> None:
    """Write the page atomically: a temp file beside `path`, then renamed over it, so a reader
    never sees half a report (`path` is checked as an output first: a regular file or new)."""
    import os
    import tempfile

    from .files import check_output
    from .run import guard_write

    check_output(path, "report")
    guard_write(path, "report")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        from .errors import InputError
        from .files import printable

        raise InputError(f"cannot write the report {printable(path)}: its folder does not exist",
                         "create the folder first, or give another path")
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600: a report is for sharing
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def bars_svg(rows: Sequence[tuple[object, Mapping[str, Any]]], stats: Sequence[str],
             unit: str = "ms", width: int = 720) -> str:
    """A grouped horizontal bar chart as inline SVG: rows = [(label, {stat: value})]."""
    colours = ("#3b6ea5", "#e0883b", "#2e9e5b", "#d1495b", "#8064a2")
    top = max([v for _, vals in rows for v in vals.values() if isinstance(v, (int, float)) and math.isfinite(v)]
              or [1.0]) or 1.0
    left, bar_h, gap = 230, 12, 10
    group_h = bar_h * len(stats) + gap
    height = 30 + group_h * len(rows) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="latency chart">']
    for k, s in enumerate(stats):
        out.append(f'<rect x="{left + k * 110}" y="4" width="10" height="10" fill="{colours[k % len(colours)]}"/>'
                   f'<text x="{left + k * 110 + 14}" y="13">{esc(s)}</text>')
    for r, (label, vals) in enumerate(rows):
        y0 = 30 + r * group_h
        out.append(f'<text x="0" y="{y0 + group_h / 2}">{esc(str(label)[-34:])}</text>')
        for k, s in enumerate(stats):
            v = vals.get(s)
            w = 0 if not isinstance(v, (int, float)) or not math.isfinite(v) else (width - left - 90) * v / top
            y = y0 + k * bar_h
            out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" '
                       f'fill="{colours[k % len(colours)]}"><title>{esc(s)}: {num(v)} {esc(unit)}</title></rect>'
                       f'<text x="{left + w + 4:.1f}" y="{y + bar_h - 3}">{num(v)}</text>')
    out.append("</svg>")
    return "".join(out)


def provenance(command: str) -> dict[str, str]:
    import platform

    from .version import version

    return {"command": command, "edgeport": version(), "python": platform.python_version(),
            "machine": platform.machine()}


def bench_page(results: Sequence[Mapping[str, Any]], command: str = "bench") -> str:
    """bench's report: the summary table and a latency chart per model (and thread count)."""
    rows = [(r.get("model"), r.get("runtime"), r.get("device"), r.get("threads") or "default",
             human_size(r.get("size_bytes")), r.get("load_ms"), r.get("median_ms"), r.get("p90_ms"),
             r.get("p99_ms"), r.get("throughput_ips"),
             " ".join(x for x in (r.get("status") if r.get("status") not in (None, "ran") else "",
                                  r.get("reason") or r.get("error") or "") if x))
            for r in results]
    summary = section("Summary", table(
        ["model", "runtime", "device", "threads", "size", "load ms", "median ms", "p90 ms", "p99 ms",
         "inferences/s", "note"], rows, numeric=(5, 6, 7, 8, 9)))
    ok = [r for r in results if r.get("median_ms") is not None]
    chart = section("Latency", bars_svg(
        [(str(r.get("model") or "?").replace("\\", "/").rsplit("/", 1)[-1]
          + (f" t={r['threads']}" if r.get("threads") else ""),
          {s[:-3]: r.get(s) for s in ("min_ms", "median_ms", "p90_ms", "p99_ms")}) for r in ok],
        ("min", "median", "p90", "p99"))) if ok else ""
    return page("edgeport bench", [summary, chart], f"{len(results)} run(s)", provenance(command))
