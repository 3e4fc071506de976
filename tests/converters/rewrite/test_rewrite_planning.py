"""The planner and the rewrites (converters/pipeline/plan.py plan_each, converters/rewrite): when
several routes reach a target, the one needing the fewest rewrites on the source wins, then
the cheapest; the choice is said; --no-rewrite takes no route needing one, and refuses
naming the rewrite when no other route is left. On a registry of fake conversions and a
fake rewrite whose pattern is the letter X in the source file."""

import itertools

import pytest

from edge.errors import InputError


@pytest.fixture
def fake(monkeypatch):
    from converters import registry, rewrite

    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_loaded", True)
    monkeypatch.setattr(rewrite, "_REWRITES", {})
    monkeypatch.setattr(rewrite, "_loaded", True)
    monkeypatch.setattr(rewrite, "FAMILIES", {"fam": ("a",)})
    return registry, rewrite


def _rewrite(rw, name, needed_by):
    @rw.rewrite("fam", name, needed_by=needed_by)
    class X:
        describe = "rewrote {n} X"
        pattern = "X"

        @staticmethod
        def matches(model, options=None):
            return bytes(model).count(b"X")

        @staticmethod
        def apply(model, options=None):
            return bytes(model).replace(b"X", b"."), bytes(model).count(b"X")

    return X


def _plan(tmp_path, text, targets, **kw):
    from converters.artefact import Artefact
    from converters.options import ConvertOptions
    from converters.pipeline import plan_each

    src = tmp_path / "m.a"
    src.write_bytes(text)
    notes = {}
    routes, refused = plan_each("a", targets, ConvertOptions(**kw), source=Artefact(str(src), "a", {}),
                                notes=notes)
    return {t: [c.target for c in r] for t, r in routes.items()}, refused, notes


@pytest.mark.parametrize("detour", [1, 2, 3])
def test_the_route_needing_no_rewrite_wins_over_a_cheaper_one_needing_one(fake, tmp_path, detour):
    reg, rw = fake
    reg.conversion("a", "d", cost=1)(lambda *a: None)
    hops = ["a"] + [f"h{k}" for k in range(detour)] + ["d"]
    for s, t in itertools.pairwise(hops):
        reg.conversion(s, t, cost=1)(lambda *a: None)
    _rewrite(rw, "x", needed_by=("a -> d",))
    routes, refused, notes = _plan(tmp_path, b"..X..X", ["d"])
    assert routes == {"d": hops[1:]} and not refused
    assert notes["d"].startswith(f"route d: {' -> '.join(hops)} needs no rewrite; the cheaper a -> d needs x (2)")
    # nothing matches: the cheapest route, said nowhere
    routes, _, notes = _plan(tmp_path, b"......", ["d"])
    assert routes == {"d": ["d"]} and notes == {}


def test_fewest_rewrites_then_cheapest(fake, tmp_path):
    reg, rw = fake
    for s, t, cost in (("a", "b", 1), ("b", "d", 1), ("a", "c", 2), ("c", "d", 2), ("a", "d", 1)):
        reg.conversion(s, t, cost=cost)(lambda *a: None)
    _rewrite(rw, "x", needed_by=("a -> d", "a -> b"))
    _rewrite(rw, "y", needed_by=("a -> d",))
    routes, _, notes = _plan(tmp_path, b"X", ["d"])
    assert routes == {"d": ["c", "d"]}           # a->d needs 2 rewrites, a->b->d 1, a->c->d none
    assert "needs x (1), y (1)" in notes["d"]
    _rewrite(rw, "z", needed_by=("a -> c",))
    routes, _, notes = _plan(tmp_path, b"X", ["d"])
    assert routes == {"d": ["b", "d"]}           # now 1 each on a->b->d and a->c->d: the cheaper
    assert notes["d"].startswith("route d: a -> b -> d needs 1 rewrite; the cheaper a -> d needs x (1), y (1)")


def test_no_rewrite_takes_another_route_or_refuses_naming_the_rewrite(fake, tmp_path):
    reg, rw = fake
    reg.conversion("a", "d", cost=1)(lambda *a: None)
    reg.conversion("a", "b", cost=1)(lambda *a: None)
    reg.conversion("b", "e", cost=1)(lambda *a: None)
    _rewrite(rw, "x", needed_by=("a -> d", "a -> b"))
    routes, refused, notes = _plan(tmp_path, b"XXX", ["d", "e"])
    assert routes == {"d": ["d"], "e": ["b", "e"]} and not refused
    assert notes["d"] == "route d: a -> d, the cheapest of the routes needing the fewest rewrites: x (3 X)"
    routes, refused, _ = _plan(tmp_path, b"XXX", ["d", "e"], no_rewrite=True)
    assert routes == {} and set(refused) == {"d", "e"}
    assert str(refused["d"]).startswith("a -> d needs the rewrite x (3 X in the model, which its tool "
                                        "refuses), and --no-rewrite turns rewriting off")
    assert "a -> b needs the rewrite x" in str(refused["e"])
    reg.conversion("a", "c", cost=5)(lambda *a: None)
    reg.conversion("c", "d", cost=5)(lambda *a: None)
    routes, refused, notes = _plan(tmp_path, b"XXX", ["d"], no_rewrite=True)
    assert routes == {"d": ["c", "d"]} and notes["d"].endswith("(--no-rewrite)")
    # a model without the pattern needs no rewrite: --no-rewrite changes nothing
    assert _plan(tmp_path, b"...", ["d", "e"], no_rewrite=True)[0] == {"d": ["d"], "e": ["b", "e"]}


def test_plan_route_counts_rewrites_before_cost(fake):
    reg, _ = fake
    reg.conversion("a", "d", cost=1)(lambda *a: None)
    reg.conversion("a", "b", cost=10)(lambda *a: None)
    reg.conversion("b", "d", cost=10)(lambda *a: None)
    assert [c.target for c in reg.plan_route("a", "d")] == ["d"]
    assert [c.target for c in reg.plan_route("a", "d", rewrites=lambda c: c.name == "a -> d")] == ["b", "d"]
    with pytest.raises(InputError, match="no conversion route"):
        reg.plan_route("a", "z", rewrites=lambda c: 0)


def test_planned_outputs_follow_the_route_the_rewrites_choose(fake, tmp_path):
    """The files a run declares before converting (its output guard) are those of the route
    the rewrites choose, not of the cheapest one."""
    from converters import formats
    from converters.options import ConvertOptions
    from converters.pipeline import planned_outputs

    reg, rw = fake
    reg.conversion("a", "d", cost=1)(lambda *a: None)
    reg.conversion("a", "b", cost=1)(lambda *a: None)
    reg.conversion("b", "d", cost=1)(lambda *a: None)
    _rewrite(rw, "x", needed_by=("a -> d",))
    src = tmp_path / "m.a"
    src.write_bytes(b"X")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(formats, "detect_format", lambda path: "a")
        mp.setattr("converters.pipeline.output_path", lambda outdir, stem, fmt: f"{outdir}/{stem}.{fmt}")
        got = planned_outputs(str(src), ["d"], ConvertOptions(), str(tmp_path / "out"))
    assert [p.rsplit(".", 1)[1] for p in got if not p.endswith(".json")] == ["b", "d"]   # not a -> d


def _real_routes_with_rewrites_everywhere_but_int8(monkeypatch, source_format, target, **kw):
    """Plan on the real registry, every conversion given what it needs, with each hop out of the
    source that does not write int8 'needing' a rewrite (the planner counts rewrites on the
    source only, as the intermediates do not exist yet): the int8 detour would need fewest."""
    from converters import formats, rewrite
    from converters.options import ConvertOptions
    from converters.pipeline import plan_each

    monkeypatch.setattr(rewrite, "needed_rewrites", lambda source, options: (
        lambda c: [] if c.source != source_format or c.target in (formats.TFLITE_INT8, formats.EDGETPU)
        else [(object(), 1)]))
    opts = ConvertOptions(calibration="photos", calibration_data="data.npz", torch_model="m:f",
                          labels=None, **kw)
    routes, _ = plan_each(source_format, [target], opts, source=object())
    return routes.get(target)


def _pairs():
    from converters import formats, registry

    registry.load_registry()
    srcs = sorted({c.source for c in registry.conversions()})
    tgts = sorted({c.target for c in registry.conversions()})
    return [(s, t) for s in srcs for t in tgts if s != t and t not in (formats.TFLITE_INT8, formats.EDGETPU)
            and s not in (formats.TFLITE_INT8, formats.EDGETPU)]


@pytest.mark.parametrize("source_format,target", _pairs())
def test_a_float_target_is_never_reached_through_int8(monkeypatch, source_format, target):
    """Counting rewrites must not buy a lossy detour: with calibration data at hand and every
    other hop 'needing' a rewrite, a float target (ONNX, ORT, Core ML, float TFLite) from a
    float source still takes no quantizing hop. Generated over the real registry's pairs."""
    from converters import formats

    route = _real_routes_with_rewrites_everywhere_but_int8(monkeypatch, source_format, target)
    if route is not None:
        assert not any(c.target in (formats.TFLITE_INT8, formats.EDGETPU) for c in route), \
            [f"{c.source}->{c.target}" for c in route]
