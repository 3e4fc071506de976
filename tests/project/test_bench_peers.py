"""scripts/bench_peers.py without its hour of conversions: the interleaved runtime measurement, the
fidelity figures, the reuse of recorded conversions and the report, on the committed tiny models."""

import importlib.util
import json

import numpy as np
import pytest

from tests.conftest import DATA, REPO

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("bench_peers", REPO / "scripts" / "bench_peers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.MODELS["tiny"] = {"source": "tflite", "file": "color_float.tflite", "classifier": True, "input": "x",
                          "shape": [1, 16, 16, 3], "what": "tiny color classifier",
                          "spec": {"size": [16, 16], "layout": "NHWC", "mean": [128.0] * 3, "std": [128.0] * 3}}
    return mod


def _x(seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)


def test_runner_takes_nchw_and_dequantizes(peers):
    f = peers.Runner(str(DATA / "color_float.tflite"))
    q = peers.Runner(str(DATA / "color_int8.tflite"))
    assert f.nhwc and q.nhwc
    a, b = f(_x()), q(_x())
    assert a.shape == b.shape == (4,) and b.dtype == np.float32


def test_runtime_is_interleaved_and_ratios_are_within_rounds(peers):
    rows = [{"ok": True, "tool": "edgeport", "format": "tflite-int8", "path": str(DATA / "color_int8.tflite")}]
    r = peers.runtime("tiny", str(DATA / "color_float.tflite"), rows, _x(), rounds=4, per_round=2, warmup=1)
    got = {(o["runtime"], o["threads"]) for o in r["rows"]}
    assert got == {("LiteRT float", 1), ("LiteRT float", 2), ("LiteRT int8", 1), ("LiteRT int8", 2)}
    best = r["rows"][r["fastest"]]
    assert best["ratio_to_fastest"] == 1.0 and best["median_ms"] == min(o["median_ms"] for o in r["rows"])
    assert sum(o["rounds_fastest"] for o in r["rows"]) == 4
    assert r["load_start"] >= 0 and r["load_end"] >= 0


def test_fidelity_and_report(peers, tmp_path):
    inputs = {"holdout": [_x(i) for i in range(5)]}
    ref = peers.reference("tiny", str(DATA / "color_float.tflite"), inputs)
    rows = [{"model": "tiny", "format": fmt, "tool": tool, "ok": True, "path": str(DATA / f), "seconds": 1.0,
             "size_bytes": 1000, "note": "n", "full_int8": full, "load_1min": 1.0,
             "measured": "2026-01-01T00:00:00+00:00"}
            for fmt, tool, f, full in (("tflite-int8", "edgeport", "color_int8.tflite", True),
                                       ("tflite-int8", "peer", "color_uint8.tflite", True))]
    rows.append({"model": "tiny", "format": "tflite-int8", "tool": "broken", "ok": False, "seconds": 2.0,
                 "error": "the process crashed (SIGSEGV, exit -11) without an error message",
                 "load_1min": 1.0, "full_int8": None})
    peers.fidelity("tiny", rows, inputs, ref)
    f = rows[0]["fidelity"]["holdout"]
    assert f["n"] == 5 and 0 <= f["agree"] <= 5 and f["max_abs"] >= f["mean_abs"] >= 0
    assert -1 <= f["min_cosine"] <= f["mean_cosine"] <= 1 + 1e-6
    report = {"created": "now", "versions": {"machine": "x"}, "photo_sets": {"holdout": 5},
              "models": {"tiny": {"conversions": rows, "runtime": None}}}
    text = peers.render(json.loads(json.dumps(report)))
    assert "## tiny" in text and "| tiny | tflite-int8 |" in text
    assert "SIGSEGV" in text and ("more for" in text or "the same count" in text)


def test_recorded_conversions_are_reused_and_failures_redone(peers, tmp_path, monkeypatch):
    calls = []

    def fake_timed(argv, log):
        calls.append(argv[-1])
        out = argv[-1]
        if "ok" in out:
            (tmp_path / out).write_bytes(b"x")
            return 1.0, True, None
        return 1.0, False, "error: no"

    monkeypatch.setattr(peers, "timed", fake_timed)
    jobs = [("onnx", "a", ["cmd", "ok.onnx"], str(tmp_path / "ok.onnx"), (), "n"),
            ("ort", "b", ["cmd", "bad.ort"], str(tmp_path / "bad.ort"), ("a",), "n")]
    monkeypatch.setattr(peers, "jobs_tflite", lambda *a: jobs)
    cache = {}
    rows = peers.make_artefacts("tiny", "src", str(tmp_path), "images", str(tmp_path / "log"), cache, False)
    assert [r["ok"] for r in rows] == [True, False] and rows[1]["seconds"] == 2.0   # b's chain includes a
    rows = peers.make_artefacts("tiny", "src", str(tmp_path), "images", str(tmp_path / "log"), cache, False)
    assert calls == ["ok.onnx", "bad.ort"]                 # both recorded: reused, the failure as a failure
    assert rows[0]["measured"] == cache["tiny|onnx|a"]["measured"] and rows[1]["error"] == "error: no"
    rows = peers.make_artefacts("tiny", "src", str(tmp_path), "images", str(tmp_path / "log"), {}, False, ["b"])
    assert calls[-1] == "bad.ort" and [r["tool"] for r in rows] == ["b"]    # --tools: only b, redone
    rows = peers.make_artefacts("tiny", "src", str(tmp_path), "images", str(tmp_path / "log"), cache, False,
                                None, None, ["ort"])
    assert calls[-1] == "bad.ort" and len(calls) == 4 and [r["tool"] for r in rows] == ["a", "b"]  # a reused
    rows = peers.make_artefacts("tiny", "src", str(tmp_path), "images", str(tmp_path / "log"), {}, False,
                                ["a", "b"], None, ["onnx"])
    assert calls[-1] == "ok.onnx" and len(calls) == 5 and [r["tool"] for r in rows] == ["a"]  # tools and format
    peers.make_artefacts("tiny", "src", str(tmp_path), "images", str(tmp_path / "log"), cache, True)
    assert calls[-2:] == ["ok.onnx", "bad.ort"]            # --fresh redoes everything


def test_merge_joins_model_runs_in_model_order(peers, tmp_path):
    def rep(name, created):
        return {"created": created, "versions": {"machine": "x", name: "1"}, "photo_sets": {"holdout": 5},
                "seconds": 10, "load_1min": [1.0], "models": {name: {"conversions": [], "runtime": None}}}

    names = list(peers.MODELS)
    for i, n in enumerate((names[1], names[0])):
        (tmp_path / f"{i}.json").write_text(json.dumps(rep(n, f"2026-01-0{i + 1}")))
    out = peers.merge_reports([str(tmp_path / "0.json"), str(tmp_path / "1.json")])
    assert list(out["models"]) == names[:2] and out["created"] == "2026-01-02" and out["seconds"] == 20
    assert set(out["versions"]) == {"machine", names[0], names[1]} and len(out["merged_from"]) == 2
    assert "joined with `--merge`" in peers.render(out)
    bad = rep(names[2], "2026-01-03")
    bad["photo_sets"] = {"holdout": 4}
    (tmp_path / "2.json").write_text(json.dumps(bad))
    with pytest.raises(SystemExit):
        peers.merge_reports([str(tmp_path / "0.json"), str(tmp_path / "2.json")])


def test_ort_rows_neutral_and_amd64_are_compared_within_rounds(peers):
    def row(label, threads, ms):
        return {"runtime": label, "artefact": "m.ort", "threads": threads, "median_ms": float(sorted(ms)[len(ms) // 2]),
                "min_ms": min(ms), "max_ms": max(ms), "ratio_to_fastest": 1.0, "rounds_fastest": 0, "round_ms": ms}

    b = {"rounds": 3, "per_round": 1, "warmup": 1, "load_start": 1.0, "load_end": 1.0, "fastest": 0,
         "rows": [row(peers.ORT_AMD64_LABEL, 1, [10.0, 20.0, 10.0]), row(peers.ORT_NEUTRAL, 1, [30.0, 40.0, 30.0]),
                  row(peers.ORT_AMD64_LABEL, 2, [10.0, 10.0, 10.0]), row(peers.ORT_NEUTRAL, 2, [20.0, 20.0, 20.0]),
                  row("ONNX Runtime .onnx", 1, [15.0, 30.0, 15.0])]}
    assert peers.in_round_ratio(b, peers.ORT_NEUTRAL, peers.ORT_AMD64_LABEL, 1) == 3.0   # not 40/20
    text = " ".join(peers.ort_platform_words(b))
    assert "3.00x at 1 thread and 2.00x at 2 threads" in text and "takes 1.50x as long as the amd64" in text and "--target-platform arm" in text
    assert peers.ort_platform_words({"rows": [row(peers.ORT_NEUTRAL, 1, [1.0])]}) == []
    rows = [{"ok": True, "tool": "edgeport", "format": "ort", "path": "n.ort"},
            {"ok": True, "tool": peers.ORT_AMD64, "format": "ort", "path": "a.ort"}]
    got = peers.runtime_artefacts("tiny", "src.tflite", rows)
    assert (peers.ORT_NEUTRAL, "n.ort") in got and (peers.ORT_AMD64_LABEL, "a.ort") in got


def test_timed_reads_its_own_output_and_marks_a_rejected_artefact(peers, tmp_path, monkeypatch):
    import sys

    log = tmp_path / "tools.log"
    log.write_text("error: an older step's failure in the shared log\n")
    script = ("print('route tflite-int8: onnx -> tflite -> tflite-int8');"
              "print('  m_int8.tflite  tflite-int8  1 KB  1.0 s  validation FAILED: MISMATCH: top-1 14/20');"
              "print('  validation FAILED: the artefacts are kept, check them before use'); raise SystemExit(1)")
    seconds, ok, err = peers.timed([sys.executable, "-c", script], str(log))
    assert not ok and err == peers.REJECTED + "MISMATCH: top-1 14/20"
    assert "older step" in log.read_text() and "MISMATCH" in log.read_text()

    out = tmp_path / "m_int8.tflite"
    monkeypatch.setattr(peers, "timed", lambda argv, log: (out.write_bytes(b"x"), (1.0, False, err))[1])
    monkeypatch.setattr(peers, "jobs_tflite", lambda *a: [("onnx", "edgeport", ["cmd"], str(out), (), "n")])
    cache = {}
    for _ in range(2):                                     # converted, then reused from the record
        rows = peers.make_artefacts("tiny", "src", str(tmp_path), "images", str(log), cache, False)
        r = rows[0]
        assert r["ok"] and r["rejected"] == err and r["note"] == "n; " + err and r["error"] is None
