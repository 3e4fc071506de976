"""Parsing edgetpu_compiler's stdout and operation log (text in the real compiler's format)."""

import textwrap

from converters.edgetpu.log import format_report, parse_compiler_output, parse_op_table

# Laid out as compiler 16 prints it (see converters/edgetpu/log.py for the public logs quoted).
STDOUT_PARTIAL = textwrap.dedent("""\
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

    Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
    Number of operations that will run on Edge TPU: 264
    Number of operations that will run on CPU: 3
    See the operation log file for individual operation details.
    Compilation child process completed within timeout period.
    Compilation succeeded!
""")

LOG_FAILURE_STATUSES = textwrap.dedent("""\
    Edge TPU Compiler version 15.0.340273435
    Input: mnist4.tflite
    Output: mnist4_edgetpu.tflite

    Operator                       Count      Status

    RESHAPE                        1          Mapped to Edge TPU
    CONV_2D                        2          Mapped to Edge TPU
    CONCATENATION                  1          More than one subgraph is not supported
    QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
    DEQUANTIZE                     1          Operation is working on an unsupported data type
    RESHAPE                        12         Tensor has unsupported rank (up to 3 innermost dimensions mapped)
    FLOOR_MOD                      1          Operation not supported
    RESIZE_NEAREST_NEIGHBOR        1          Operation version not supported
    MAX_POOL_2D                    2          Mapped to Edge TPU
""")

STDOUT_NOT_QUANTIZED = textwrap.dedent("""\
    Edge TPU Compiler version 15.0.340273435
    Invalid model: mobilenet_v2_1.0_224_quant.tflite
    Model not quantized
""")

STDOUT_ALL_MAPPED = textwrap.dedent("""\
    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 35 ms.

    Input model: m.tflite
    Input size: 25.99KiB
    Output model: m_edgetpu.tflite
    Output size: 99.94KiB
    On-chip memory used for caching model parameters: 0.00B
    On-chip memory remaining for caching model parameters: 7.98MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 29
    Operation log: m_edgetpu.log
    See the operation log file for individual operation details.
    Compilation child process completed within timeout period.
    Compilation succeeded!
""")


def test_stdout_fields():
    r = parse_compiler_output(STDOUT_PARTIAL)
    assert r["compiler_version"] == "16.0.384591198"
    assert r["succeeded"] and r["compile_ms"] == 3129 and r["compiler_timeout_s"] == 180
    assert (r["edgetpu_subgraphs"], r["total_operations"]) == (1, 267)
    assert (r["ops_on_edgetpu"], r["ops_on_cpu"]) == (264, 3)
    assert r["on_chip_memory_used"] == "4.49MiB" and r["off_chip_memory_used"] == "0.00B"
    assert r["operation_log"] == "efficientdet_lite0_edgetpu.log"
    assert (r["mapped"], r["total"]) == (264, 267)     # no log: the counts come from stdout
    assert r["errors"] == []


def test_log_table_with_every_failure_status():
    rows = parse_op_table(LOG_FAILURE_STATUSES)
    assert len(rows) == 9
    assert rows[3] == {"op": "QUANTIZE", "count": 1, "mapped": False,
                       "status": "Operation is otherwise supported, but not mapped due to some unspecified limitation"}
    statuses = {r["status"] for r in rows if not r["mapped"]}
    assert statuses == {
        "Operation not supported",
        "More than one subgraph is not supported",
        "Operation is otherwise supported, but not mapped due to some unspecified limitation",
        "Operation is working on an unsupported data type",
        "Tensor has unsupported rank (up to 3 innermost dimensions mapped)",
        "Operation version not supported",
    }
    r = parse_compiler_output("", LOG_FAILURE_STATUSES)
    assert (r["mapped"], r["total"]) == (5, 22)       # no totals printed: the log's table counts
    assert r["counts_from"] == "operation table"
    text = format_report(r)
    assert text.splitlines()[0].startswith("5 of 22 ops mapped to the Edge TPU")
    assert "FLOOR_MOD" in text and "Operation version not supported" in text
    assert "MAX_POOL_2D" not in text                   # mapped ops are not listed


def test_failure_output():
    r = parse_compiler_output(STDOUT_NOT_QUANTIZED)
    assert not r["succeeded"]
    assert r["errors"] == ["Invalid model: mobilenet_v2_1.0_224_quant.tflite", "Model not quantized"]
    assert r["mapped"] is None and "op mapping unknown" in format_report(r)


def test_all_mapped_without_cpu_counts():
    r = parse_compiler_output(STDOUT_ALL_MAPPED)
    assert (r["mapped"], r["total"]) == (29, 29)
    assert format_report(r).startswith("29 of 29 ops mapped to the Edge TPU")


def test_show_operations_table_in_stdout():
    r = parse_compiler_output(LOG_FAILURE_STATUSES.split("\n", 4)[4])
    assert r["total"] == 22 and len(r["operators"]) == 9


def test_compiler_totals_win_over_the_table():
    """The compiler's printed totals win when the table and the counts disagree."""
    r = parse_compiler_output(STDOUT_PARTIAL, LOG_FAILURE_STATUSES)
    assert (r["mapped"], r["total"]) == (264, 267) and r["counts_from"] == "compiler totals"
    assert len(r["cpu_operators"]) == 6                # the table still names the CPU ops


# stdout only (no log file), `-s` printing only the unmapped ops (it said "0 of 3" before)
STDOUT_SHOW_UNMAPPED_ONLY = STDOUT_PARTIAL.replace("267", "141").replace("264", "138") + textwrap.dedent("""
    Operator                       Count      Status

    CUSTOM                         1          Operation is working on an unsupported data type
    DEQUANTIZE                     2          Operation is working on an unsupported data type
    All other operators were mapped successfully
""")


def test_show_operations_listing_only_unmapped_ops_reports_compiler_totals():
    r = parse_compiler_output(STDOUT_SHOW_UNMAPPED_ONLY)
    assert [(o["op"], o["count"]) for o in r["operators"]] == [("CUSTOM", 1), ("DEQUANTIZE", 2)]
    assert (r["mapped"], r["total"]) == (138, 141)
    assert format_report(r).startswith("138 of 141 ops mapped to the Edge TPU")
    # without the "will run on" counts (only the total printed), the CPU rows are subtracted
    bare = "\n".join(ln for ln in STDOUT_SHOW_UNMAPPED_ONLY.splitlines()
                     if not ln.startswith("Number of operations that will run"))
    r = parse_compiler_output(bare)
    assert (r["mapped"], r["total"]) == (138, 141)
