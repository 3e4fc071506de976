"""The arithmetic of ops coremltools' TorchScript frontend has no lowering for, as TorchScript
functions of the op's exact schema, scripted by rewrite/torchscript_ops.py.

Imports: nothing at import time. TorchScript reads these functions' source and resolves their
names in this module's globals when it scripts them: `bind(torch)` puts `torch` and `Tensor`
there first (torch is imported only when a model has such an op).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def bind(torch_module):
    """Give this module's functions the names TorchScript resolves in them."""
    globals().update(torch=torch_module, Tensor=torch_module.Tensor)


def lstm_cell(x: Tensor, hx: List[Tensor], w_ih: Tensor, w_hh: Tensor,
              b_ih: Optional[Tensor], b_hh: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """torch.nn.LSTMCell: gates i, f, g, o (in this order) from x and h; c' = f c + i g,
    h' = o tanh(c')."""
    gates = torch.matmul(x, w_ih.t()) + torch.matmul(hx[0], w_hh.t())
    if b_ih is not None:
        gates = gates + b_ih
    if b_hh is not None:
        gates = gates + b_hh
    i, f, g, o = gates.chunk(4, -1)
    c = torch.sigmoid(f) * hx[1] + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell(x: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor,
             b_ih: Optional[Tensor], b_hh: Optional[Tensor]) -> Tensor:
    """torch.nn.GRUCell: r, z from x and h; n = tanh(x W_in + b_in + r (h W_hn + b_hn));
    h' = (1 - z) n + z h."""
    gi = torch.matmul(x, w_ih.t())
    gh = torch.matmul(hx, w_hh.t())
    if b_ih is not None:
        gi = gi + b_ih
    if b_hh is not None:
        gh = gh + b_hh
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * hx


# aten op -> its decomposition
DECOMPOSITIONS = {"aten::lstm_cell": lstm_cell, "aten::gru_cell": gru_cell}
