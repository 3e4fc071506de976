"""MediaPipe's custom TFLite ops as their kernels compute them: Convolution2DTransposeBias
(mediapipe/util/tflite/operations/transpose_conv_bias.cc) and the three face-geometry ops of the
face landmark model with attention (landmarks_to_transform_matrix.cc,
transform_tensor_bilinear.cc, transform_landmarks.cc, version 2 of each): their options and an
independent numpy reference of their arithmetic. The graph rewrites (rewrite/) read the
options from here; the TFLite reference runner (validation/runners) runs the ops with these.

Convolution2DTransposeBias:

Inputs: data [N, H, W, Cin], weights [Cout, kh, kw, Cin] (OHWI), bias [Cout], all float32.
Custom options: the raw bytes of TfLiteTransposeConvParams, int32 padding (1 SAME, 2 VALID),
stride_width, stride_height. With SAME, the total padding is max(0, k - (in - 1) % s - 1), of
which the kernel drops the first half (floor) before the output; VALID drops nothing. The
output is s * (in - 1) + k - total, every element starting at its channel's bias.
"""

import struct
from collections import namedtuple

CONVOLUTION_2D_TRANSPOSE_BIAS = "Convolution2DTransposeBias"
PADDING_SAME, PADDING_VALID = 1, 2

TransposeConvOptions = namedtuple("TransposeConvOptions", "padding stride_w stride_h")


def transpose_conv_options(raw):
    """The op's options from its custom option bytes (at least 12: padding, stride w, stride h)."""
    raw = bytes(raw if raw is not None else b"")
    if len(raw) < 12:
        raise ValueError(f"{CONVOLUTION_2D_TRANSPOSE_BIAS} has {len(raw)} bytes of options, "
                         "needs 12 (padding, stride_width, stride_height)")
    padding, stride_w, stride_h = struct.unpack_from("<iii", raw)
    if padding not in (PADDING_SAME, PADDING_VALID) or stride_w < 1 or stride_h < 1:
        raise ValueError(f"{CONVOLUTION_2D_TRANSPOSE_BIAS} options padding={padding}, "
                         f"stride={stride_w}x{stride_h} are not ones its kernel accepts")
    return TransposeConvOptions(padding, stride_w, stride_h)


def pack_transpose_conv_options(padding, stride_w, stride_h):
    return struct.pack("<iii", padding, stride_w, stride_h)


def total_padding(options, size, kernel, stride):
    """The padding the kernel removes along one axis (input `size`, filter `kernel`)."""
    if options.padding != PADDING_SAME:
        return 0
    return max(0, kernel - (size - 1) % stride - 1)


def output_hw(options, in_h, in_w, k_h, k_w):
    """(out_h, out_w, pad_top, pad_left) as the kernel's Prepare and Eval compute them."""
    p_h = total_padding(options, in_h, k_h, options.stride_h)
    p_w = total_padding(options, in_w, k_w, options.stride_w)
    return (options.stride_h * (in_h - 1) + k_h - p_h, options.stride_w * (in_w - 1) + k_w - p_w,
            p_h // 2, p_w // 2)


def transpose_conv_bias(x, weights, bias, options):
    """The op's output (float32), summed in float64: each input pixel scatters its filter into
    the output at (in * stride - pad + filter offset), out-of-range positions dropped."""
    import numpy as np

    x = np.asarray(x, np.float64)
    w = np.asarray(weights, np.float64)
    b = np.asarray(bias, np.float64).reshape(-1)
    n, in_h, in_w, c_in = x.shape
    c_out, k_h, k_w, w_in = w.shape
    if w_in != c_in or b.shape[0] != c_out:
        raise ValueError(f"{CONVOLUTION_2D_TRANSPOSE_BIAS}: data {list(x.shape)}, weights "
                         f"{list(w.shape)} and bias {list(b.shape)} do not match")
    out_h, out_w, top, left = output_hw(options, in_h, in_w, k_h, k_w)
    s_h, s_w = options.stride_h, options.stride_w
    full = np.zeros((n, s_h * (in_h - 1) + k_h, s_w * (in_w - 1) + k_w, c_out))
    for fy in range(k_h):
        for fx in range(k_w):
            full[:, fy:fy + s_h * (in_h - 1) + 1:s_h, fx:fx + s_w * (in_w - 1) + 1:s_w, :] += \
                np.einsum("nhwc,oc->nhwo", x, w[:, fy, fx, :])
    out = full[:, top:top + out_h, left:left + out_w, :] + b
    return out.astype(np.float32)


# The face-geometry ops (version 2). Their custom options are a flexbuffer map.
LANDMARKS_TO_TRANSFORM_MATRIX = "Landmarks2TransformMatrix"
TRANSFORM_TENSOR_BILINEAR = "TransformTensorBilinear"
TRANSFORM_LANDMARKS = "TransformLandmarks"
FACE_GEOMETRY = (LANDMARKS_TO_TRANSFORM_MATRIX, TRANSFORM_TENSOR_BILINEAR, TRANSFORM_LANDMARKS)

MatrixOptions = namedtuple("MatrixOptions", "subset left right target_rotation out_h out_w "
                                            "scale_x scale_y")


def flex_options(raw):
    """The custom options' flexbuffer map as a dict ({} for none)."""
    raw = bytes(raw if raw is not None else b"")
    if not raw:
        return {}
    from flatbuffers import flexbuffers

    try:
        value = flexbuffers.Loads(raw)
    except Exception as e:
        raise ValueError(f"custom options are not a flexbuffer map: {e}") from None
    if not isinstance(value, dict):
        raise ValueError("custom options are not a flexbuffer map")
    return value


def matrix_options(raw):
    """Landmarks2TransformMatrix v2's options, checked as its Eval checks them. `subset` is
    every landmark index of subset_idxs (the kernel pairs them up, repeating an odd last one,
    which changes no minimum or maximum)."""
    m = flex_options(raw)
    try:
        opts = MatrixOptions([int(i) for i in m["subset_idxs"]], int(m["left_rotation_idx"]),
                             int(m["right_rotation_idx"]),
                             float(m.get("target_rotation_radians", 0.0)),
                             int(m["output_height"]), int(m["output_width"]),
                             float(m["scale_x"]), float(m["scale_y"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{LANDMARKS_TO_TRANSFORM_MATRIX} options lack or mistype {e}") from None
    if (not opts.subset or min(opts.subset) < 0 or min(opts.left, opts.right) < 0
            or min(opts.out_h, opts.out_w) <= 0 or min(opts.scale_x, opts.scale_y) <= 0):
        raise ValueError(f"{LANDMARKS_TO_TRANSFORM_MATRIX} options {m} are not ones its kernel accepts")
    return opts


def landmarks_to_transform_matrix(landmarks, opts):
    """[1, 4, 4]: the matrix mapping a pixel (x, y, 0, 1) of an out_w x out_h crop to the
    landmarks' frame. With r = target - atan2 of the right minus the left rotation landmark,
    the subset is rotated by r; its box there gives the size (w, h) and centre c (rotated
    back); the matrix is shift(c) * rotate(-r) * scale(scale_x w / out_w, scale_y h / out_h)
    * shift(-out_w / 2, -out_h / 2)."""
    import numpy as np

    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[0] != 1 or lm.shape[2] < 2:
        raise ValueError(f"{LANDMARKS_TO_TRANSFORM_MATRIX}: landmarks {list(lm.shape)}, needs [1, N, 3]")
    pts = lm[0, :, :2]
    if max(opts.subset + [opts.left, opts.right]) >= len(pts):
        raise ValueError(f"{LANDMARKS_TO_TRANSFORM_MATRIX}: an index beyond the {len(pts)} landmarks")
    d = pts[opts.right] - pts[opts.left]
    r = opts.target_rotation - np.arctan2(d[1], d[0])
    c, s = np.cos(r), np.sin(r)
    sub = pts[opts.subset]
    rx, ry = c * sub[:, 0] - s * sub[:, 1], s * sub[:, 0] + c * sub[:, 1]
    w, h = rx.max() - rx.min(), ry.max() - ry.min()
    mx, my = (rx.max() + rx.min()) / 2, (ry.max() + ry.min()) / 2
    cx, cy = c * mx + s * my, -s * mx + c * my            # rotate(-r) of the box centre
    kx, ky = opts.scale_x * w / opts.out_w, opts.scale_y * h / opts.out_h
    # rotate(-r): [[c, s], [-s, c]]
    a = np.array([[c * kx, s * ky], [-s * kx, c * ky]])
    t = np.array([cx, cy]) - a @ np.array([opts.out_w / 2, opts.out_h / 2])
    out = np.eye(4)
    out[:2, :2], out[:2, 3] = a, t
    return out[None].astype(np.float32)


def tensor_bilinear_options(raw):
    """TransformTensorBilinear v2's (output_height, output_width)."""
    m = flex_options(raw)
    try:
        h, w = int(m["output_height"]), int(m["output_width"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{TRANSFORM_TENSOR_BILINEAR} options lack or mistype {e}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{TRANSFORM_TENSOR_BILINEAR} output {h}x{w} is not one its kernel accepts")
    return h, w


def sample_points(matrix, out_h, out_w):
    """(x, y) of every output pixel in the input, each [out_h, out_w]: v2 shifts the matrix by
    half a pixel each side (aligned corners), x = m00 (i + 0.5) + m01 (j + 0.5) + m03 - 0.5."""
    import numpy as np

    m = np.asarray(matrix, np.float64).reshape(-1)[:8]
    j, i = np.meshgrid(np.arange(out_h) + 0.5, np.arange(out_w) + 0.5, indexing="ij")
    return m[0] * i + m[1] * j + m[3] - 0.5, m[4] * i + m[5] * j + m[7] - 0.5


def transform_tensor_bilinear(data, matrix, out_hw):
    """[1, out_h, out_w, C]: `data` [1, H, W, C] sampled bilinearly at the transformed pixel
    positions; a position outside [0, W-1] x [0, H-1] gives 0, a neighbour beyond the edge
    reads 0 (its weight is then 0)."""
    import numpy as np

    x = np.asarray(data, np.float64)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"{TRANSFORM_TENSOR_BILINEAR}: data {list(x.shape)}, needs [1, H, W, C]")
    _, h, w, _ = x.shape
    tx, ty = sample_points(matrix, *out_hw)
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    tx, ty = np.where(inside, tx, 0), np.where(inside, ty, 0)
    fx, fy = np.floor(tx).astype(int), np.floor(ty).astype(int)
    ax, ay = (tx - fx)[..., None], (ty - fy)[..., None]
    padded = np.pad(x[0], ((0, 1), (0, 1), (0, 0)))   # the neighbour beyond the edge reads 0
    upper = (1 - ax) * padded[fy, fx] + ax * padded[fy, fx + 1]
    lower = (1 - ax) * padded[fy + 1, fx] + ax * padded[fy + 1, fx + 1]
    out = np.where(inside[..., None], ay * lower + (1 - ay) * upper, 0.0)
    return out[None].astype(np.float32)


def transform_landmarks(landmarks, matrix):
    """Landmarks [1, N, D] (D 2 or 3) with x, y mapped by the matrix's first two rows
    (x' = m00 x + m01 y + m03, y' = m10 x + m11 y + m13), z kept."""
    import numpy as np

    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[2] not in (2, 3):
        raise ValueError(f"{TRANSFORM_LANDMARKS}: landmarks {list(lm.shape)}, needs [1, N, 2 or 3]")
    m = np.asarray(matrix, np.float64).reshape(-1)[:8]
    out = lm.copy()
    out[..., 0] = m[0] * lm[..., 0] + m[1] * lm[..., 1] + m[3]
    out[..., 1] = m[4] * lm[..., 0] + m[5] * lm[..., 1] + m[7]
    return out.astype(np.float32)
