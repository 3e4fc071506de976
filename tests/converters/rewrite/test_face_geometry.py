"""MediaPipe's face-geometry custom ops (Landmarks2TransformMatrix, TransformTensorBilinear,
TransformLandmarks; the face landmark model with attention): the numpy references
(converters/mediapipe_ops.py) against hand-computed cases and a loop-by-loop transcription of
MediaPipe's kernels, and the original model run by the reference TFLite runner
(validation/runners/tflite_reference.py) on a tiny model built here with TFLite's schema."""

import numpy as np
import pytest

from converters import mediapipe_ops as mp


def _flex(d):
    from flatbuffers import flexbuffers

    return bytes(flexbuffers.Dumps(d))


def _matrix_raw(subset, left, right, out=(16, 16), scale=(1.5, 1.5), target=0.0):
    return _flex({"subset_idxs": list(subset), "left_rotation_idx": left, "right_rotation_idx": right,
                  "target_rotation_radians": float(target), "output_height": out[0],
                  "output_width": out[1], "scale_x": float(scale[0]), "scale_y": float(scale[1])})


# --- the kernels, transcribed from MediaPipe's C++ (Mat3/Mat4 products, per-pixel loops) ---

def _mat4_kernel(landmarks, subset, left, right, target, out_h, out_w, scale_x, scale_y):
    """landmarks_to_transform_matrix.cc v2: EstimateRotationRadians, EstimateCenterAndSize,
    then t = shift * rotation * scale * shift2 as four 4x4 products."""
    import math

    lm = np.asarray(landmarks, np.float64).reshape(-1, 3)
    lx, ly = lm[left][:2]
    rx, ry = lm[right][:2]
    r = target - math.atan2(ry - ly, rx - lx)
    pairs = [(subset[2 * i], subset[2 * i + 1]) for i in range(len(subset) // 2)]
    if len(subset) % 2:
        pairs.append((subset[-1], subset[-1]))
    pts = [np.array([lm[i][0], lm[i][1], 1.0]) for p in pairs for i in p]
    rot = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    inv = np.array([[math.cos(-r), -math.sin(-r), 0], [math.sin(-r), math.cos(-r), 0], [0, 0, 1]])
    pts = [rot @ p for p in pts]
    hi, lo = pts[0].copy(), pts[0].copy()
    for p in pts[1:]:
        hi[:2] = np.maximum(hi[:2], p[:2])
        lo[:2] = np.minimum(lo[:2], p[:2])
    width, height = hi[0] - lo[0], hi[1] - lo[1]
    centre = lo.copy()
    centre[0], centre[1] = (lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2
    centre = inv @ centre
    t = np.eye(4)
    shift = np.eye(4)
    shift[0, 3], shift[1, 3] = centre[0], centre[1]
    t = t @ shift
    rr = -r
    rotation = np.eye(4)
    rotation[:2, :2] = [[math.cos(rr), -math.sin(rr)], [math.sin(rr), math.cos(rr)]]
    t = t @ rotation
    t = t @ np.diag([scale_x * width / out_w, scale_y * height / out_h, 1, 1])
    shift2 = np.eye(4)
    shift2[0, 3], shift2[1, 3] = -out_w / 2, -out_h / 2
    return (t @ shift2)[None]


def _bilinear_kernel(data, matrix, out_h, out_w):
    """transform_tensor_bilinear.cc v2, pixel by pixel."""
    import math

    _, h, w, c = data.shape
    m = np.asarray(matrix, np.float64).reshape(-1)
    xt, yt = list(m[0:4]), list(m[4:8])
    xt[3] += xt[0] * 0.5 + xt[1] * 0.5 - 0.5
    yt[3] += yt[0] * 0.5 + yt[1] * 0.5 - 0.5
    out = np.zeros((1, out_h, out_w, c))

    def read(y, x, z):
        return 0.0 if y < 0 or x < 0 or y >= h or x >= w else data[0, y, x, z]

    for oy in range(out_h):
        for ox in range(out_w):
            tx = xt[0] * ox + xt[1] * oy + xt[3]
            ty = yt[0] * ox + yt[1] * oy + yt[3]
            if tx < 0 or tx > w - 1 or ty < 0 or ty > h - 1:
                continue
            fx, fy = math.floor(tx), math.floor(ty)
            for z in range(c):
                rc, lc = tx - fx, ty - fy
                upper = (1 - rc) * read(fy, fx, z) + rc * read(fy, fx + 1, z)
                lower = (1 - rc) * read(fy + 1, fx, z) + rc * read(fy + 1, fx + 1, z)
                out[0, oy, ox, z] = lc * lower + (1 - lc) * upper
    return out


def _landmarks_kernel(landmarks, matrix):
    """transform_landmarks.cc v2: (x, y, 0, 1) dotted with the matrix's first two rows."""
    m = np.asarray(matrix, np.float64).reshape(-1)
    out = np.array(landmarks, np.float64)
    for i in range(out.shape[1]):
        v = np.array([landmarks[0, i, 0], landmarks[0, i, 1], 0.0, 1.0])
        out[0, i, 0], out[0, i, 1] = m[0:4] @ v, m[4:8] @ v
    return out


# --- hand-computed cases ---

def test_matrix_of_a_level_box_by_hand():
    lm = np.zeros((1, 6, 3), np.float32)
    lm[0, :, :2] = [[0, 0], [2, 0], [1, 2], [5, 4], [5, 2], [1, 4]]   # 0-1 level: no rotation
    opts = mp.matrix_options(_matrix_raw([2, 3, 4, 5], 0, 1))
    # box x 1..5, y 2..4: size 4 x 2, centre (3, 3); scale 1.5 * size / 16
    want = np.eye(4)
    want[0, 0], want[1, 1] = 0.375, 0.1875
    want[0, 3], want[1, 3] = 3 - 0.375 * 8, 3 - 0.1875 * 8
    np.testing.assert_allclose(mp.landmarks_to_transform_matrix(lm, opts)[0], want, atol=1e-6)


def test_matrix_of_a_quarter_turn_by_hand():
    lm = np.zeros((1, 6, 3), np.float32)
    lm[0, :, :2] = [[0, 0], [0, 1], [1, 2], [5, 4], [5, 2], [1, 4]]   # 0 -> 1 points down: -90 deg
    m = mp.landmarks_to_transform_matrix(lm, mp.matrix_options(_matrix_raw([2, 3, 4, 5], 0, 1)))[0]
    # rotated by -pi/2 the box is 2 wide (the y range) and 4 high (the x range); the crop's
    # x axis runs along +y of the landmarks: column 0 is (0, kx), column 1 (-ky, 0)
    kx, ky = 1.5 * 2 / 16, 1.5 * 4 / 16
    np.testing.assert_allclose(m[:2, :2], [[0, -ky], [kx, 0]], atol=1e-6)
    # the crop's centre pixel lands on the box's centre
    np.testing.assert_allclose(m[:2, :2] @ [8, 8] + m[:2, 3], [3, 3], atol=1e-5)


def test_bilinear_identity_shift_and_outside_by_hand():
    data = np.arange(3 * 4 * 2, dtype=np.float32).reshape(1, 3, 4, 2)
    eye = np.eye(4, dtype=np.float32)[None]
    np.testing.assert_allclose(mp.transform_tensor_bilinear(data, eye, (3, 4)), data)
    half = eye.copy()
    half[0, 0, 3] = 0.5                          # half a pixel right: mean of x and x + 1
    got = mp.transform_tensor_bilinear(data, half, (3, 4))
    np.testing.assert_allclose(got[:, :, :3], (data[:, :, :3] + data[:, :, 1:]) / 2)
    np.testing.assert_allclose(got[:, :, 3], 0)   # x = 3.5 > W - 1: outside, 0
    big = eye.copy()
    big[0, 0, 0] = big[0, 1, 1] = 2.0            # 2x: x = 2 (i + 0.5) - 0.5, the first at 0.5
    got = mp.transform_tensor_bilinear(data, big, (2, 2))
    np.testing.assert_allclose(got[0, 0, 0], (data[0, 0, 0] + data[0, 0, 1] + data[0, 1, 0] + data[0, 1, 1]) / 4)


def test_landmarks_by_hand():
    m = np.eye(4, dtype=np.float32)[None]
    m[0, :2, :2] = [[0, -2], [2, 0]]
    m[0, 0, 3], m[0, 1, 3], m[0, 0, 2] = 10, 20, 99   # column 2 (z) is never read
    lm = np.array([[[1, 0, 5], [0, 1, 6]]], np.float32)
    np.testing.assert_allclose(mp.transform_landmarks(lm, m), [[[10, 22, 5], [8, 20, 6]]])
    np.testing.assert_allclose(mp.transform_landmarks(lm[..., :2], m), [[[10, 22], [8, 20]]])


# --- against the transcribed kernels on generated cases ---

@pytest.mark.parametrize("seed", range(6))
def test_matrix_reference_is_mediapipes_kernel(seed):
    rng = np.random.default_rng(seed)
    n = 20
    lm = rng.uniform(0, 100, size=(1, n, 3)).astype(np.float32)
    subset = [int(i) for i in rng.choice(n, size=int(rng.integers(1, 12)), replace=False)]
    left, right = (int(i) for i in rng.choice(n, size=2, replace=False))
    target = float(rng.uniform(-1, 1)) if seed % 2 else 0.0
    out = (int(rng.integers(4, 32)), int(rng.integers(4, 32)))
    scale = (float(rng.uniform(0.5, 2)), float(rng.uniform(0.5, 2)))
    opts = mp.matrix_options(_matrix_raw(subset, left, right, out, scale, target))
    want = _mat4_kernel(lm, subset, left, right, target, out[0], out[1], *scale)
    np.testing.assert_allclose(mp.landmarks_to_transform_matrix(lm, opts), want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_bilinear_reference_is_mediapipes_kernel(seed):
    rng = np.random.default_rng(seed)
    h, w, c = (int(v) for v in rng.integers(2, 9, size=3))
    data = rng.normal(size=(1, h, w, c)).astype(np.float32)
    out_h, out_w = (int(v) for v in rng.integers(1, 7, size=2))
    m = np.eye(4)
    angle = rng.uniform(-np.pi, np.pi)
    k = rng.uniform(0.3, 1.5, size=2)
    m[:2, :2] = [[np.cos(angle) * k[0], -np.sin(angle) * k[1]], [np.sin(angle) * k[0], np.cos(angle) * k[1]]]
    m[:2, 3] = rng.uniform(-1, max(h, w), size=2)
    m = m[None].astype(np.float32)
    np.testing.assert_allclose(mp.transform_tensor_bilinear(data, m, (out_h, out_w)),
                               _bilinear_kernel(data, m, out_h, out_w), atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_landmarks_reference_is_mediapipes_kernel(dims):
    rng = np.random.default_rng(dims)
    lm = rng.normal(size=(1, 9, dims)).astype(np.float32)
    m = rng.normal(size=(1, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(mp.transform_landmarks(lm, m), _landmarks_kernel(lm, m), atol=1e-5)


def test_options_the_kernels_refuse_are_refused():
    for raw in (b"", _flex({"subset_idxs": [1]}), _matrix_raw([], 0, 1), _matrix_raw([1], -1, 1),
                _matrix_raw([1], 0, 1, out=(0, 16)), _matrix_raw([1], 0, 1, scale=(0.0, 1.0))):
        with pytest.raises(ValueError):
            mp.matrix_options(raw)
    for raw in (b"", _flex({"output_height": 4}), _flex({"output_height": 0, "output_width": 4})):
        with pytest.raises(ValueError):
            mp.tensor_bilinear_options(raw)


# --- a tiny model holding the three ops, as the face landmark model chains them ---

SUBSET, LEFT, RIGHT = [2, 3, 4, 5, 6, 7, 8], 0, 1     # an odd subset: the kernel repeats the last
CROP = (4, 5)                                          # TransformTensorBilinear's output h, w


def tiny_model(dims=2, crop=CROP):
    """landmarks [1,12,3] -> MUL 2 -> Landmarks2TransformMatrix -> matrix;
    TransformTensorBilinear(features [1,8,8,2], matrix) -> crop; TransformLandmarks(points
    [1,5,dims], matrix) -> moved. Outputs: crop, moved, matrix. Version 2 of each op."""
    from tensorflow.lite.tools import flatbuffer_utils as fu

    s = fu.schema_fb
    model = s.ModelT()
    model.version, model.buffers, model.operatorCodes = 3, [s.BufferT()], []
    g = s.SubGraphT()
    g.tensors, g.operators = [], []
    model.subgraphs = [g]

    def tensor(name, shape, data=None):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, np.array(shape, np.int32), s.TensorType.FLOAT32, 0
        if data is not None:
            buf = s.BufferT()
            buf.data = np.frombuffer(np.asarray(data, np.float32).tobytes(), np.uint8)
            model.buffers.append(buf)
            t.buffer = len(model.buffers) - 1
        g.tensors.append(t)
        return len(g.tensors) - 1

    def code(builtin=None, custom=None):
        oc = s.OperatorCodeT()
        oc.version = 2 if custom else 1
        oc.builtinCode = oc.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM if custom else builtin
        oc.customCode = custom
        model.operatorCodes.append(oc)
        return len(model.operatorCodes) - 1

    def op(opcode, ins, outs, custom_options=None):
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = opcode, np.array(ins, np.int32), np.array(outs, np.int32)
        if custom_options is not None:
            o.customOptions = np.frombuffer(custom_options, np.uint8)
        else:
            o.builtinOptionsType, o.builtinOptions = s.BuiltinOptions.MulOptions, s.MulOptionsT()
        g.operators.append(o)

    lm, feat, pts = tensor("landmarks", [1, 12, 3]), tensor("features", [1, 8, 8, 2]), tensor("points", [1, 5, dims])
    two = tensor("two", [1], [2.0])
    scaled, matrix = tensor("scaled", [1, 12, 3]), tensor("matrix", [1, 4, 4])
    cropped, moved = tensor("crop", [1, *crop, 2]), tensor("moved", [1, 5, dims])
    op(code(s.BuiltinOperator.MUL), [lm, two], [scaled])
    op(code(custom=mp.LANDMARKS_TO_TRANSFORM_MATRIX), [scaled], [matrix],
       _matrix_raw(SUBSET, LEFT, RIGHT, out=crop, scale=(1.5, 1.2)))
    op(code(custom=mp.TRANSFORM_TENSOR_BILINEAR), [feat, matrix], [cropped],
       _flex({"output_height": crop[0], "output_width": crop[1]}))
    op(code(custom=mp.TRANSFORM_LANDMARKS), [pts, matrix], [moved], b"")
    g.inputs, g.outputs = np.array([lm, feat, pts], np.int32), np.array([cropped, moved, matrix], np.int32)
    return bytes(fu.convert_object_to_bytearray(model))


def tiny_inputs(seed, dims=2):
    rng = np.random.default_rng(seed)
    return {"landmarks": rng.uniform(0.5, 3.5, size=(1, 12, 3)).astype(np.float32),   # x2: inside 8x8
            "features": rng.normal(size=(1, 8, 8, 2)).astype(np.float32),
            "points": rng.uniform(0, 5, size=(1, 5, dims)).astype(np.float32)}


def by_hand(x, crop=CROP):
    """The tiny model's outputs from the transcribed kernels, outside any TFLite run."""
    m = _mat4_kernel(x["landmarks"] * 2, SUBSET, LEFT, RIGHT, 0.0, crop[0], crop[1], 1.5, 1.2)
    return {"crop": _bilinear_kernel(x["features"], m, *crop),
            "moved": _landmarks_kernel(x["points"], m), "matrix": m}


def reference_run(path, x):
    from converters.artefact import Artefact
    from converters.validation.runners import runner_for

    with runner_for(Artefact(str(path), "tflite", {})) as r:
        assert "numpy reference of MediaPipe's kernel" in r.describe()["note"]
        return r.infer(x)


@pytest.mark.parametrize("dims", [2, 3])
def test_the_reference_runner_runs_the_original(dims, tmp_path):
    path = tmp_path / "face_ops.tflite"
    path.write_bytes(tiny_model(dims))
    for seed in range(3):
        x = tiny_inputs(seed, dims)
        got, want = reference_run(path, x), by_hand(x)
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=name)
        assert np.abs(want["crop"]).max() > 0.1     # the crop samples inside the features


# --- the rewrite into builtin ops ---

def _tflite(model_bytes, x):
    from tensorflow.lite.python.interpreter import Interpreter

    it = Interpreter(model_content=bytes(model_bytes))
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], x[d["name"]])
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}


@pytest.mark.parametrize("crop", [CROP, (3, 9)])
@pytest.mark.parametrize("dims", [2, 3])
def test_the_rewrite_computes_the_kernels(dims, crop, tmp_path):
    from converters.rewrite.tflite_face_geometry import FaceGeometry
    from edge.tflite_model import TFLiteModel

    original = tiny_model(dims, crop)
    assert FaceGeometry.matches(original) == 3
    rewritten, count = FaceGeometry.apply(original)
    assert count == 3 and FaceGeometry.matches(rewritten) == 0
    path = tmp_path / "rewritten.tflite"
    path.write_bytes(rewritten)
    assert TFLiteModel.load(str(path)).custom_ops() == []
    outside = 0
    for seed in range(4):
        x = tiny_inputs(seed, dims)
        if seed == 3:      # the rotation landmarks coincide: the kernel's atan2(0, 0) = 0
            x["landmarks"][0, RIGHT] = x["landmarks"][0, LEFT]
        got, want = _tflite(rewritten, x), by_hand(x, crop)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=2e-4, err_msg=f"{name} seed {seed}")
        outside += int((want["crop"] == 0).all(axis=-1).sum())
    assert outside > 0       # some positions fall outside the features: the mask is exercised


def _broken(kind, monkeypatch):
    """The rewrite with one mistake: the class of error validation must catch."""
    import converters.rewrite.tflite_face_geometry as rw

    if kind == "v1 sampling":           # no half-pixel shift (TransformTensorBilinear v1)
        monkeypatch.setattr(rw, "HALF_PIXEL", 0.0)
    if kind == "translation":           # the matrix's z column read as its translation
        real = rw._affine

        def affine(b, matrix):
            a, _ = real(b, matrix)
            return a, b.reshape(b.slice(matrix, [0, 0, 2], [1, 2, 1]), [1, 1, 2])

        monkeypatch.setattr(rw, "_affine", affine)
    if kind == "box scale":             # the crop's box 10% too large
        real_plan = rw._plan

        def plan(g, code, op):
            p = real_plan(g, code, op)
            return p._replace(scale_x=p.scale_x * 1.1) if isinstance(p, mp.MatrixOptions) else p

        monkeypatch.setattr(rw, "_plan", plan)


@pytest.mark.parametrize("kind", [None, "v1 sampling", "translation", "box scale"])
def test_validation_against_the_original_fails_a_wrong_rewrite(kind, tmp_path, capsys, monkeypatch):
    import json

    import converters.rewrite.tflite_face_geometry as rw
    from tests.conftest import run_cli

    original = tmp_path / "face_ops.tflite"
    original.write_bytes(tiny_model(3))
    if kind:
        _broken(kind, monkeypatch)
    rewritten = tmp_path / "face_ops_rewritten.tflite"
    rewritten.write_bytes(rw.FaceGeometry.apply(original.read_bytes())[0])
    code, out, err = run_cli(capsys, "validate", original, rewritten, "--json")
    verdict = json.loads(out)
    assert verdict["passed"] is (kind is None) and (code == 0) is (kind is None), (kind, out[-2000:])
    assert "numpy reference of MediaPipe's kernel" in verdict["source"]["note"]


def test_a_model_with_the_ops_converts_to_onnx_validated_against_the_original(tmp_path, capsys):
    import json

    from tests.conftest import run_cli

    src = tmp_path / "face_ops.tflite"
    src.write_bytes(tiny_model(3))
    before = src.read_bytes()
    code, out, err = run_cli(capsys, "convert", src, "--to", "onnx", "-o", tmp_path / "out", "--json")
    assert code == 0, err
    hop = json.loads(out)["models"][0]["artefacts"][0]
    line = ("rewrote 3 MediaPipe face-geometry custom ops (Landmarks2TransformMatrix, "
            "TransformTensorBilinear, TransformLandmarks) into builtin ops")
    assert hop["rewrites"] == [line]
    assert hop["validation"]["passed"] is True
    assert "numpy reference of MediaPipe's kernel" in hop["validation"]["source_run"]
    assert src.read_bytes() == before
    code, out, err = run_cli(capsys, "convert", src, "--to", "onnx", "-o", tmp_path / "off", "--no-rewrite")
    assert code != 0 and "Landmarks2TransformMatrix" in err


@pytest.mark.corpus
def test_the_real_model_runs_by_reference_and_its_refined_landmarks_land_on_the_mesh():
    """MediaPipe's face landmark model with attention (the corpus's mp_face_landmark_attention),
    run by the reference runner on the face of images/astronaut.jpg: it sees a face, and the
    lips, eyes and irises its custom ops map back into the image (crop, sample, transform) land
    within a few pixels of the same points of its own mesh, computed without those ops."""
    import os
    from pathlib import Path

    from PIL import Image

    from tests.conftest import REPO

    path = Path(os.environ.get("EDGEPORT_CORPUS") or REPO / ".cache" / "corpus") / "mp_face_landmark_attention.tflite"
    if not path.is_file():
        pytest.skip(f"{path.name} is not fetched (scripts/fetch_corpus.py)")
    face = Image.open(REPO / "images" / "astronaut.jpg").convert("RGB").crop((145, 35, 325, 215))
    x = np.asarray(face.resize((192, 192)), np.float32)[None] / 255
    out = reference_run(path, {"input_1": x})
    assert float(np.asarray(out["conv_faceflag"]).reshape(-1)[0]) > 5          # a face (logit)
    mesh = np.asarray(out["output_mesh_identity"]).reshape(-1, 3)[:, :2]
    from tensorflow.lite.tools import flatbuffer_utils as fu

    model = fu.read_model(str(path))
    codes = model.operatorCodes
    subsets = [mp.matrix_options(op.customOptions).subset for op in model.subgraphs[0].operators
               if codes[op.opcodeIndex].customCode == mp.LANDMARKS_TO_TRANSFORM_MATRIX.encode()]
    for name, subset in (("output_lips", subsets[0]), ("output_left_eye", subsets[1]),
                         ("output_right_eye", subsets[2])):
        refined = np.asarray(out[name]).reshape(-1, 2)
        assert len(refined) == len(subset)
        error = np.abs(refined - mesh[subset]).mean()
        assert error < 3, (name, error)        # pixels of the 192 x 192 input
    for iris, subset in (("output_left_iris", subsets[1]), ("output_right_iris", subsets[2])):
        centre = np.asarray(out[iris]).reshape(-1, 2)[0]
        assert np.abs(centre - mesh[subset].mean(0)).max() < 6, iris
