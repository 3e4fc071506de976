"""MediaPipe's custom TFLite op Convolution2DTransposeBias, as its kernel computes it
(mediapipe/util/tflite/operations/transpose_conv_bias.cc): its options, its output shape and
an independent numpy reference of its arithmetic. The graph rewrite (rewrite/) reads the
options from here; the TFLite reference runner (validation/runners) runs the op with it.

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
