"""Parse what edgetpu_compiler prints and its `<stem>_edgetpu.log` into one report dict.

The formats, as compiler 16.0.384591198 writes them (quoted in public logs, e.g. the
edgetpu-compiler-log-parser package's README, google-coral/edgetpu issues #313, #659 and
maxbbraun/thermal-face#2):

stdout::

    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 3129 ms.

    Input model: efficientdet_lite0.tflite
    Input size: 4.35MiB
    Output model: efficientdet_lite0_edgetpu.tflite
    Output size: 5.66MiB
    On-chip memory used for caching model parameters: 4.49MiB
    On-chip memory remaining for caching model parameters: 3.01MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 267
    Operation log: efficientdet_lite0_edgetpu.log

    Model successfully compiled but not all operations are supported by the Edge TPU. ...
    Number of operations that will run on Edge TPU: 264
    Number of operations that will run on CPU: 3
    ...
    Compilation child process completed within timeout period.
    Compilation succeeded!

or, on failure, e.g. "Invalid model: x.tflite" / "Model not quantized", "Internal compiler
error. Aborting!". The log file (and stdout with -s) holds the op table::

    Edge TPU Compiler version 16.0.384591198
    Input: mnist4.tflite
    Output: mnist4_edgetpu.tflite

    Operator                       Count      Status

    CONV_2D                        2          Mapped to Edge TPU
    DEQUANTIZE                     1          Operation is working on an unsupported data type
"""

import re

from converters.edgetpu.ops import MAPPED

_FIELDS = {
    "input_model": (r"^Input model:\s*(.+)$", str),
    "input_size": (r"^Input size:\s*(.+)$", str),
    "output_model": (r"^Output model:\s*(.+)$", str),
    "output_size": (r"^Output size:\s*(.+)$", str),
    "on_chip_memory_used": (r"^On-chip memory used for caching model parameters:\s*(.+)$", str),
    "on_chip_memory_remaining": (r"^On-chip memory remaining for caching model parameters:\s*(.+)$", str),
    "off_chip_memory_used": (r"^Off-chip memory used for streaming uncached model parameters:\s*(.+)$", str),
    "edgetpu_subgraphs": (r"^Number of Edge TPU subgraphs:\s*(\d+)", int),
    "total_operations": (r"^Total number of operations:\s*(\d+)", int),
    "operation_log": (r"^Operation log:\s*(.+)$", str),
    "ops_on_edgetpu": (r"^Number of operations that will run on Edge TPU:\s*(\d+)", int),
    "ops_on_cpu": (r"^Number of operations that will run on CPU:\s*(\d+)", int),
    "compile_ms": (r"^Models? compiled successfully in (\d+) ms", int),
    "compiler_timeout_s": (r"^Started a compilation timeout timer of (\d+) seconds", int),
}
_VERSION = re.compile(r"Edge TPU Compiler version (\S+)")
_TABLE_HEADER = re.compile(r"^\s*Operator\s+Count\s+Status\s*$")
_ROW = re.compile(r"^\s*(\S+)\s+(\d+)\s+(\S.*?)\s*$")
_ERRORS = (
    re.compile(r"^Invalid model:.*$"),
    re.compile(r"^Model not quantized.*$"),
    re.compile(r"^Internal compiler error.*$"),
    re.compile(r"^ERROR:.*$"),
    re.compile(r"^Error:.*$"),
    re.compile(r"^Compilation failed.*$"),
    re.compile(r"^.*timed out.*$", re.I),
    re.compile(r"^Unsupported .*$"),
)


def parse_op_table(text):
    """[{"op", "count", "status", "mapped"}] from every "Operator Count Status" table in text."""
    rows = []
    in_table = False
    for line in (text or "").splitlines():
        if _TABLE_HEADER.match(line):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.strip():
            continue
        m = _ROW.match(line)
        if not m:
            in_table = False       # a line that is not a row ends the table
            continue
        rows.append({"op": m.group(1), "count": int(m.group(2)), "status": m.group(3),
                     "mapped": m.group(3) == MAPPED})
    return rows


def parse_compiler_output(stdout, log_text=None):
    """One report dict from the compiler's stdout and (optionally) its operation log."""
    stdout = stdout or ""
    report = {"compiler_version": None, "succeeded": False, "errors": []}
    m = _VERSION.search(stdout) or _VERSION.search(log_text or "")
    if m:
        report["compiler_version"] = m.group(1)
    for key, (pattern, conv) in _FIELDS.items():
        m = re.search(pattern, stdout, re.M)
        report[key] = conv(m.group(1).strip()) if m else None
    report["succeeded"] = bool(re.search(r"^Compilation succeeded!", stdout, re.M) or
                                report["compile_ms"] is not None)
    for line in stdout.splitlines():
        line = line.strip()
        if any(p.match(line) for p in _ERRORS):
            report["errors"].append(line)
    rows = parse_op_table(log_text) or parse_op_table(stdout)
    report["operators"] = rows
    row_mapped = sum(r["count"] for r in rows if r["mapped"])
    row_cpu = sum(r["count"] for r in rows if not r["mapped"])
    total = report["total_operations"]
    if total is not None:
        # The compiler's own totals win over the table: with only stdout, `-s` may print just the
        # unmapped ops and then "All other operators were mapped successfully" (seen: 3 rows,
        # 138 of 141 mapped).
        if report["ops_on_edgetpu"] is not None:
            mapped = report["ops_on_edgetpu"]
        elif report["ops_on_cpu"] is not None:
            mapped = total - report["ops_on_cpu"]
        else:   # v16 prints the two counts only when some ops are on the CPU
            mapped = total - row_cpu
        report["mapped"], report["total"] = mapped, total
        report["counts_from"] = "compiler totals"
    elif rows:
        report["mapped"], report["total"] = row_mapped, row_mapped + row_cpu
        report["counts_from"] = "operation table"
    else:
        report["mapped"] = report["ops_on_edgetpu"]
        report["total"] = None
        report["counts_from"] = None
    report["cpu_operators"] = [r for r in rows if not r["mapped"]]
    return report


def format_report(report):
    """The lines `convert --to edgetpu` prints: "N of M ops mapped to the Edge TPU" and CPU ops."""
    mapped, total = report.get("mapped"), report.get("total")
    head = (f"{mapped} of {total} ops mapped to the Edge TPU" if mapped is not None and total is not None
            else "op mapping unknown (the compiler printed no counts)")
    extra = []
    if report.get("edgetpu_subgraphs") is not None:
        extra.append(f"{report['edgetpu_subgraphs']} Edge TPU subgraph(s)")
    if report.get("compiler_version"):
        extra.append(f"edgetpu_compiler {report['compiler_version']}")
    if report.get("on_chip_memory_used"):
        extra.append(f"on-chip memory {report['on_chip_memory_used']}")
    lines = [head + (f" ({', '.join(extra)})" if extra else "")]
    cpu = report.get("cpu_operators") or []
    if cpu:
        lines.append("left on the CPU:")
        width = max(len(r["op"]) for r in cpu) + 2
        for r in cpu:
            lines.append(f"  {r['op']:<{width}}{r['count']:<5}{r['status']}")
    return "\n".join(lines)
