"""Safe loading of PyTorch models: factories, weights_only state dicts, --trust-pickle."""

import collections
import textwrap

import pytest

torch = pytest.importorskip("torch")

from converters import formats  # noqa: E402  # noqa: E402
from converters.artefact import Artefact  # noqa: E402
from converters.options import ConvertOptions  # noqa: E402
from converters.routes.torch_loading import (  # noqa: E402
    import_factory,
    input_shape,
    load_exported_program,
    load_module_from_factory,
    load_source,
    load_state_dict,
    load_torchscript,
)
from edge.errors import InputError  # noqa: E402

NET = textwrap.dedent('''
    import torch

    class Net(torch.nn.Module):
        def __init__(self, width=4):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, width, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    def build():
        return Net()

    def wide():
        return Net(6)

    def not_a_module():
        return 42
''')

# Written by the tests: an object whose unpickling would run code (it only sets a flag).
PAYLOAD_RAN = []


class Payload:
    def __reduce__(self):
        return (PAYLOAD_RAN.append, ("ran",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("loading")
    (d / "netdef.py").write_text(NET)
    model = import_factory(f"{d / 'netdef.py'}:build")()
    torch.save(model.state_dict(), d / "sd.pt")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, d / "ckpt.pt")
    torch.save({"conv.weight": model.conv.weight, "evil": Payload()}, d / "evil.pt")
    torch.save(model, d / "whole.pt")
    x = torch.rand(1, 3, 8, 8)
    torch.jit.save(torch.jit.trace(model, x), d / "net.torchscript.pt")
    torch.export.save(torch.export.export(model, (x,)), d / "net.pt2")
    return d, model


def test_import_factory_from_file_and_dotted_module(files):
    d, _ = files
    assert isinstance(import_factory(f"{d / 'netdef.py'}:build")(), torch.nn.Module)
    assert import_factory("converters.reference_models:efficientnet_lite0").__name__ == "efficientnet_lite0"
    assert import_factory("collections:OrderedDict") is collections.OrderedDict


@pytest.mark.parametrize("spec, match", [
    ("no_colon", "MODULE:FACTORY"),
    ("missing_module_xyz:build", "no module named"),
    ("/nope/nets.py:build", "does not exist"),
    ("converters.reference_models:nothing_here", "has no"),
    ("converters.reference_models:EFFICIENTNET_LITE0_PREPROCESSING", "not callable"),
])
def test_import_factory_errors(spec, match):
    with pytest.raises(InputError, match=match):
        import_factory(spec)


def test_state_dict_loads_with_weights_only(files):
    d, model = files
    m = load_module_from_factory(f"{d / 'netdef.py'}:build", str(d / "sd.pt"))
    assert not m.training
    assert torch.equal(m.conv.weight, model.conv.weight)
    # a checkpoint dict with "state_dict" and plain extras is fine too
    assert set(load_state_dict(str(d / "ckpt.pt"))) == {"conv.weight", "conv.bias"}


def test_pickled_objects_refused_without_trust(files):
    d, _ = files
    PAYLOAD_RAN.clear()
    with pytest.raises(InputError, match="--trust-pickle") as e:
        load_state_dict(str(d / "evil.pt"))
    assert "run code" in str(e.value)
    assert PAYLOAD_RAN == []  # the refusal happened before anything ran
    with pytest.raises(InputError, match="--trust-pickle"):
        load_module_from_factory(f"{d / 'netdef.py'}:build", str(d / "whole.pt"))
    # trusted: the whole pickled module is used as is
    m = load_module_from_factory(f"{d / 'netdef.py'}:build", str(d / "whole.pt"), trust_pickle=True)
    assert isinstance(m, torch.nn.Module)


def test_state_dict_that_does_not_fit_the_factory(files):
    d, _ = files
    with pytest.raises(InputError, match="does not fit"):
        load_module_from_factory(f"{d / 'netdef.py'}:wide", str(d / "sd.pt"))
    with pytest.raises(InputError, match="not a torch.nn.Module"):
        load_module_from_factory(f"{d / 'netdef.py'}:not_a_module", str(d / "sd.pt"))


def test_torchscript_and_pt2_need_trust(files):
    d, model = files
    ts, pt2 = str(d / "net.torchscript.pt"), str(d / "net.pt2")
    assert formats.detect_format(ts) == formats.TORCHSCRIPT
    assert formats.detect_format(pt2) == formats.TORCH_EXPORT
    for func, path in ((load_torchscript, ts), (load_exported_program, pt2)):
        with pytest.raises(InputError, match="arbitrary code") as e:
            func(path)
        assert "--trust-pickle" in str(e.value)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(load_torchscript(ts, trust=True)(x), ref, atol=1e-6)
        opts = ConvertOptions(trust_pickle=True)
        module, ep = load_source(Artefact(pt2, formats.TORCH_EXPORT), opts)
        module.eval()  # tolerated (ep.module() alone raises on eval())
        assert torch.allclose(module(x), ref, atol=1e-6)
    assert input_shape(ConvertOptions(), None, ep) == (1, 3, 8, 8)
    with pytest.raises(InputError, match="trust-pickle"):
        load_source(Artefact(pt2, formats.TORCH_EXPORT), ConvertOptions())


def test_input_shape_sources():
    assert input_shape(ConvertOptions(input_shape=(2, 3, 5, 5))) == (2, 3, 5, 5)
    pre = {"size": [224, 224], "layout": "NCHW"}
    assert input_shape(ConvertOptions(preprocessing=pre)) == (1, 3, 224, 224)
    assert input_shape(ConvertOptions(preprocessing={"size": [16], "layout": "NHWC"})) == (1, 16, 16, 3)
    with pytest.raises(InputError, match="--input-shape"):
        input_shape(ConvertOptions())
    with pytest.raises(InputError, match="below 1"):
        input_shape(ConvertOptions(input_shape=(1, 0, 4, 4)))


def test_state_dict_source_without_factory_is_an_input_error(files):
    d, _ = files
    with pytest.raises(InputError, match="--torch-model"):
        load_source(Artefact(str(d / "sd.pt"), formats.TORCH_MODULE), ConvertOptions())


WRAPPED = [  # checkpoints as training scripts save them: (contents, the key edgeport must name)
    (lambda sd: {"model_state": sd, "optimizer_state": {"lr": 0.1}, "step": 7}, "model_state"),
    (lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {}, "epoch": 2}, "model_state_dict"),
    (lambda sd: {"state_dict": sd, "epoch": 3}, "state_dict"),
    (lambda sd: {"model": sd, "optimizer": {}}, "model"),
    (lambda sd: {"net": sd, "iteration": 1000}, "net"),
    (lambda sd: {"ema": sd, "updates": 12}, "ema"),
    (lambda sd: {"ema": {"module": sd, "decay": 0.999}}, "ema.module"),
]


@pytest.mark.parametrize("case", range(len(WRAPPED)))
def test_wrapped_checkpoints_are_unwrapped_and_the_key_is_said(files, tmp_path, case):
    d, model = files
    wrap, key = WRAPPED[case]
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(model.state_dict()), path)
    said = []
    m = load_module_from_factory(f"{d / 'netdef.py'}:build", str(path), say=said.append)
    assert torch.equal(m.conv.weight, model.conv.weight)
    assert any(f"'{key}'" in s for s in said), said


def test_dataparallel_prefix_is_stripped(files, tmp_path):
    d, model = files
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "dp.pt")
    said = []
    m = load_module_from_factory(f"{d / 'netdef.py'}:build", str(tmp_path / "dp.pt"), say=said.append)
    assert torch.equal(m.conv.weight, model.conv.weight) and "module." in said[0]


def test_checkpoint_without_weights_lists_its_keys(tmp_path):
    torch.save({"optimizer_state": {"lr": 0.1}, "step": 7, "config": {"depth": 3}}, tmp_path / "c.pt")
    with pytest.raises(InputError) as e:
        load_state_dict(str(tmp_path / "c.pt"))
    for key in ("'optimizer_state'", "'step'", "'config'", "model_state"):
        assert key in str(e.value)
