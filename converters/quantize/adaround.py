"""AdaRound-style weight rounding of a PyTorch model on TFLite's int8 grid.

Each conv/linear layer's weights are rounded up or down (not to nearest) so that the layer's
output on calibration images changes least; see `adaround`.
"""

from edge import console
from edge.errors import require


def import_torch():
    return require("torch", "torch", "AdaRound weight rounding")


def _int8_grid(w):
    """Per-output-channel symmetric int8 grid of TFLite's quantizer: (scale, w / scale).

    scale = max|w| / 127 over each output channel (dim 0 of a PyTorch Conv2d/Linear weight,
    which is the TFLite quantized_dimension after export: 0 for CONV_2D/FULLY_CONNECTED, 3 for
    DEPTHWISE_CONV_2D, the same channel), narrow range [-127, 127], zero point 0.
    """
    torch = import_torch()
    w2 = w.detach().reshape(w.shape[0], -1).float()
    scale = w2.abs().amax(1, keepdim=True) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, w2 / scale


def _layer_rows(module, inp, generator, max_rows):
    """Up to `max_rows` input patches of a Conv2d/Linear: (rows, depthwise?) or None.

    Rows are im2col patches (M, K) with K ordered like weight.reshape(O, -1) for a dense conv
    or Linear, or (M, C, kh*kw) for a depthwise conv. None for layouts this does not handle.
    """
    torch = import_torch()
    F = torch.nn.functional
    if isinstance(module, torch.nn.Linear):
        rows = inp.reshape(-1, inp.shape[-1])
        if rows.shape[0] > max_rows:
            rows = rows[torch.randperm(rows.shape[0], generator=generator)[:max_rows]]
        dw = False
    else:
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return None
        if module.groups not in (1, module.in_channels) or (
                module.groups > 1 and module.out_channels != module.in_channels):
            return None
        pad = getattr(module, "static_padding", None)   # "same"-padding subclasses (TF ports)
        per = max(1, max_rows // inp.shape[0])
        parts = []
        for one in inp.split(1):         # image by image: im2col of a whole batch is too big
            if pad is not None:
                one = pad(one)
            cols = F.unfold(one, module.kernel_size, module.dilation, module.padding, module.stride)[0].T
            if cols.shape[0] > per:
                cols = cols[torch.randperm(cols.shape[0], generator=generator)[:per]]
            parts.append(cols)
        rows = torch.cat(parts)          # (M, C*kh*kw)
        dw = module.groups > 1
    if dw:
        rows = rows.reshape(rows.shape[0], module.in_channels, -1)
    return rows.double(), dw


def _greedy_rounding(hard, fixed, e, H, dw, sweeps):
    """Coordinate descent on sum_c e_c H e_c^T over round-down/round-up choices (0/1 in `hard`).

    `e` is the rounding error (in grid steps) of the starting choice. One weight position at a
    time (for all output channels at once), a weight flips between down and up when that
    lowers its channel's output error; g = e H is updated by a rank-1 step. Stops after
    `sweeps` passes or when a pass flips nothing. Returns the 0/1 choice.
    """
    torch = import_torch()
    hard = hard.clone()
    if dw:   # (C, K, K), K = kh * kw is small: update g directly
        g = torch.einsum("ck,ckj->cj", e, H)
        diag = torch.diagonal(H, dim1=1, dim2=2)
    else:
        g = e @ H
        diag = torch.diagonal(H).expand_as(hard)
    n = hard.shape[1]
    block = n if dw else 64
    for _ in range(sweeps):
        flips = 0
        for b0 in range(0, n, block):   # lazy updates (as in GPTQ): g of the block first,
            cols = slice(b0, min(n, b0 + block))      # the rest of g by one matmul after it
            gb = g[:, cols] if dw else g[:, cols].clone()
            hb = None if dw else H[cols, cols]
            delta = torch.zeros_like(gb) if not dw else None
            for j in range(gb.shape[1]):
                i = b0 + j
                d = 1 - 2 * hard[:, i]                  # +1: down -> up, -1: up -> down
                flip = (2 * d * gb[:, j] + diag[:, i] < -1e-12) & ~fixed[:, i]
                if not bool(flip.any()):
                    continue
                idx = flip.nonzero()[:, 0]
                dd = d[idx]
                hard[idx, i] += dd
                flips += len(idx)
                if dw:
                    g[idx] += dd[:, None] * H[idx, i, :]
                else:
                    gb[idx] += dd[:, None] * hb[j][None, :]
                    delta[idx, j] = dd
            if not dw and bool(delta.any()):
                g += delta @ H[cols, :]
        if not flips:
            break
    return hard


def adaround(model, inputs, sweeps=4, damp=0.01, max_rows=8192, seed=0, progress=None):
    """AdaRound-style rounding of the Conv2d/Linear weights of a PyTorch model, in place.

    For each layer in forward order (sequential: its inputs are computed by the model whose
    earlier layers are already rounded), each weight is rounded down or up on the int8 grid
    TFLite's quantizer will use (_int8_grid), chosen to minimise the layer's output error
    E||(W_q - W) x||^2 on the calibration inputs rather than the weight error (the objective
    of AdaRound, Nagel et al. 2020). That error is a quadratic form e H e^T in the rounding
    error e (grid steps), with H = E[x x^T] over im2col patches (up to `max_rows` positions
    sampled from all images), computed once per layer, normalised to a unit mean diagonal and
    dampened by `damp` * I (a pull towards nearest rounding, against overfitting few images).
    Instead of AdaRound's soft-rounding relaxation optimised with Adam (too slow here: minutes
    for EfficientNet-Lite0 on 2 cores), the down/up choice is made by greedy coordinate
    descent from nearest rounding (_greedy_rounding), which never increases the error.
    Each channel's largest |w| stays at +-127 * scale so the quantizer finds the same scale;
    weights are written back as scale * q, which TFLite's quantizer reproduces exactly
    (BatchNorm folding multiplies a channel by one factor: same integers). Layers whose
    patches do not reproduce their output (unknown padding, grouped convs) get nearest
    rounding. Returns a summary dict.
    """
    torch = import_torch()
    gen = torch.Generator().manual_seed(seed)
    done, skipped, gains = [], [], []

    def pre_hook(layer, args):   # runs when the forward reaches `layer`: round it, then go on
        if layer in done or layer in skipped:
            return
        with torch.no_grad():
            ratio = _round_layer(layer, args[0], gen, max_rows, sweeps, damp)
        (skipped if ratio is None else done).append(layer)
        if ratio is not None:
            gains.append(ratio)
        bar.step()

    handles = [m.register_forward_pre_hook(pre_hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    batch = torch.cat(inputs, 0)
    try:
        with console.progress(len(handles), "AdaRound: rounding", "layer",
                              enabled=console.shows_progress(progress)) as bar, torch.no_grad():
            model(batch)   # one pass: each layer sees the outputs of the rounded layers before it
    finally:
        for h in handles:
            h.remove()
    return {"layers": len(done) + len(skipped), "adarounded": len(done), "skipped": len(skipped),
            "sweeps": sweeps, "damp": damp, "images": int(batch.shape[0]),
            "mean_output_error_vs_nearest": round(sum(gains) / max(1, len(gains)), 4)}


def _round_layer(layer, x, gen, max_rows, sweeps, damp):
    """Round one layer's weights in place (see adaround); returns error / nearest's, or None
    when the layer got nearest rounding because its patches do not reproduce its output."""
    torch = import_torch()
    w = layer.weight
    scale, ws = _int8_grid(w)
    got = _layer_rows(layer, x, gen, max_rows)
    ok = got is not None
    if ok:   # check the patches reproduce the layer's real output (padding, stride...)
        rows, dw = got
        probe = _layer_rows(layer, x[:1], torch.Generator().manual_seed(1), 10**9)[0]
        wf = w.detach().double().reshape(w.shape[0], -1)
        yp = (probe * wf.reshape(1, *wf.shape)).sum(-1) if dw else probe @ wf.T
        y = layer.forward(x[:1]).double()        # .forward: no hooks
        if isinstance(layer, torch.nn.Linear):
            ref = y.reshape(-1, y.shape[-1])
        else:
            ref = y.reshape(1, y.shape[1], -1).transpose(1, 2).reshape(-1, y.shape[1])
        if layer.bias is not None:
            ref = ref - layer.bias.detach().double()
        ok = yp.shape == ref.shape and torch.allclose(yp, ref, rtol=1e-3,
                                                      atol=1e-4 * float(ref.abs().max()) + 1e-6)
    if not ok:
        w.copy_((scale * ws.round().clamp(-127, 127)).reshape(w.shape).to(w.dtype))
        return None
    if dw:   # per channel (C, k*k, k*k)
        H = torch.einsum("mci,mcj->cij", rows, rows) / rows.shape[0]
        norm = torch.diagonal(H, dim1=1, dim2=2).mean(1).clamp_min(1e-12)
        H = H / norm[:, None, None] + damp * torch.eye(H.shape[1], dtype=H.dtype)
    else:
        H = rows.T @ rows / rows.shape[0]
        H = H / torch.diagonal(H).mean().clamp_min(1e-12) + damp * torch.eye(H.shape[0], dtype=H.dtype)
    wd = ws.double()
    base = wd.floor()
    fixed = torch.zeros_like(base, dtype=torch.bool)     # each channel's max |w| stays at +-127
    fixed.scatter_(1, ws.abs().argmax(1, keepdim=True), True)
    near = wd.round() - base                             # 0/1: nearest rounding

    def out_err(hh):   # sum over channels of e H e^T, e = rounding error in grid steps
        e = base + hh - wd
        if dw:
            return float(torch.einsum("ci,cij,cj->", e, H, e))
        return float(((e @ H) * e).sum())

    hard = _greedy_rounding(near, fixed, base + near - wd, H, dw, sweeps)
    e_ada, e_near = out_err(hard), out_err(near)
    if e_ada > e_near:      # cannot happen (each flip lowers the error); a guard
        hard, e_ada = near, e_near
    q = (base + hard).clamp(-127, 127).float()
    w.copy_((scale.float() * q).reshape(w.shape).to(w.dtype))
    return e_ada / max(e_near, 1e-30)
