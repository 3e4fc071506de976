"""The conversion registry and the route planner."""

import pytest

from converters import formats, registry
from edge.errors import InputError


def test_real_routes():
    route = registry.plan_route(formats.KERAS, formats.ORT)
    assert [c.target for c in route] == [formats.ONNX, formats.ORT]
    assert registry.plan_route(formats.KERAS, formats.KERAS) == []
    assert [c.target for c in registry.plan_route(formats.TFLITE_INT8, formats.ORT)] == ["onnx", "ort"]


def test_int8_edges_need_calibration():
    regs = registry.load_registry()
    for src in (formats.KERAS, formats.SAVEDMODEL):
        assert regs[(src, formats.TFLITE_INT8)].needs == ("calibration",)
    assert regs[(formats.KERAS, formats.TFLITE)].needs == ()


def test_every_tf_edge_is_registered():
    regs = registry.load_registry()
    for edge in [("keras", "onnx"), ("savedmodel", "onnx"), ("tflite", "onnx"), ("tflite-int8", "onnx"),
                 ("onnx", "ort"), ("keras", "tflite"), ("savedmodel", "tflite"), ("keras", "tflite-int8"),
                 ("savedmodel", "tflite-int8"), ("keras", "coreml"), ("savedmodel", "coreml"),
                 ("onnx", "coreml")]:
        assert edge in regs, edge


def test_no_route_names_what_is_reachable():
    with pytest.raises(InputError) as e:
        registry.plan_route(formats.ORT, formats.KERAS)
    assert "no conversion route" in str(e.value)


@pytest.fixture
def fake_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_loaded", True)
    return registry


def test_planner_prefers_cheaper_multi_hop(fake_registry):
    r = fake_registry
    r.conversion("a", "d", cost=5)(lambda *a: None)
    r.conversion("a", "b")(lambda *a: None)
    r.conversion("b", "c")(lambda *a: None)
    r.conversion("c", "d")(lambda *a: None)
    assert [c.target for c in r.plan_route("a", "d")] == ["b", "c", "d"]
    r.conversion("b", "d", cost=1)(lambda *a: None)
    assert [c.target for c in r.plan_route("a", "d")] == ["b", "d"]
    assert r.reachable_from("a") == {"b", "c", "d"}
    with pytest.raises(InputError, match="reaches: b, c, d"):
        r.plan_route("a", "z")


def test_two_functions_for_one_edge_is_an_error(fake_registry):
    fake_registry.conversion("a", "b")(lambda *a: 1)
    with pytest.raises(RuntimeError):
        fake_registry.conversion("a", "b")(lambda *a: 2)


def test_one_function_for_several_sources(fake_registry):
    r = fake_registry

    @r.conversion(("a", "b"), "c", cost=2, needs=("calibration",))
    def a_or_b_to_c(*args):
        return args

    regs = r.load_registry()
    assert set(regs) == {("a", "c"), ("b", "c")}
    assert all(c.func is a_or_b_to_c and c.cost == 2 and c.needs == ("calibration",) for c in regs.values())
    assert [c.name for c in r.plan_route("b", "c")] == ["b -> c"]
    with pytest.raises(RuntimeError, match="two conversions registered for b -> c"):
        r.conversion(("d", "b"), "c")(lambda *a: None)
    assert ("d", "c") not in r.load_registry(), "a refused registration registers none of its sources"


def test_keras_and_savedmodel_share_one_function_per_target():
    regs = registry.load_registry()
    for target in (formats.ONNX, formats.TFLITE, formats.TFLITE_INT8, formats.COREML):
        keras, saved = regs[(formats.KERAS, target)], regs[(formats.SAVEDMODEL, target)]
        assert keras.func is saved.func, target
    assert regs[(formats.TFLITE, formats.ONNX)].func is regs[(formats.TFLITE_INT8, formats.ONNX)].func
    assert regs[(formats.TFLITE_INT8, formats.ONNX)].cost == 2
