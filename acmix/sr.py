"""ACmix for PVT v1: spatial-reduction (SR) global attention plus the convolution path, on (B, N, C) tokens.

``mix='attn_only'`` is exactly PVT v1's ``Attention`` (Wang et al., ICCV 2021): queries from every token, keys
and values from the tokens reduced by a ``sr_ratio`` x ``sr_ratio`` strided conv and a LayerNorm.

The paper gives no detail of the PVT variant and the authors released no PVT code, so the convolution path is our
design: the Stage I maps it needs are the full-resolution projections ``q(x)`` and ``kv(x)`` (the same Linear
layers the attention uses; the attention applies ``kv`` to the reduced tokens instead), laid out as the map
(B, 3*heads, head_dim, H*W) -> ``fc`` (3*heads -> k_c^2, with bias, as in the authors' Swin) -> ``dep_conv``.
With ``sr_ratio == 1`` both paths share one ``kv(x)``; with ``sr_ratio > 1`` the conv path costs an extra
``kv`` on the full-resolution tokens.  The output is ``rate1 * proj(attn) + rate2 * conv``, then ``proj_drop``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conv_path import (MIX_MODES, SHIFT_MODES, RateMixer, build_dep_conv, check_choice, check_odd_kernel,
                        check_positive, conv_path_features, reset_dep_conv, split_heads)

__all__ = ['ACmixSRAttention']


class ACmixSRAttention(RateMixer, nn.Module):
    """PVT v1 spatial-reduction attention + ACmix convolution path.

    Args:
        dim: channels C.
        num_heads: heads N; ``head_dim = dim // num_heads``.
        sr_ratio: spatial reduction of keys/values (kernel = stride = ``sr_ratio`` conv); 1 for none.
        qkv_bias: bias of the ``q`` and ``kv`` Linears (PVT v1 default: False).
        attn_drop: dropout on the attention probabilities.
        proj_drop: dropout on the output.
        kernel_conv: odd kernel size k_c of the convolution path.
        mix: one of ``MIX_MODES``; ``'attn_only'`` is PVT v1's attention.
        shift: one of ``SHIFT_MODES``.

    Parameters: ``q``, ``kv``, ``proj``, ``sr`` and ``norm`` (only if ``sr_ratio > 1``), as PVT v1; ``fc``
    (1x1 conv 3*N -> k_c^2 with bias), ``dep_conv`` (no bias), ``rate1``, ``rate2``.  ``mix='conv_only'`` has no
    ``proj`` / ``sr`` / ``norm``.

    Shape:
        forward(x (B, N, C), H, W) with N = H*W -> (B, N, C).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = False, attn_drop: float = 0.,
                 proj_drop: float = 0., *, kernel_conv: int = 3, mix: str = 'learnable',
                 shift: str = 'group_conv') -> None:
        super().__init__()
        check_choice('mix', mix, MIX_MODES)
        check_choice('shift', shift, SHIFT_MODES)
        check_odd_kernel('kernel_conv', kernel_conv)
        check_positive('sr_ratio', sr_ratio)
        self.head_dim = split_heads(dim, num_heads, 'dim', 'num_heads')
        self.dim, self.num_heads, self.sr_ratio = dim, num_heads, sr_ratio
        self.kernel_conv, self.shift = kernel_conv, shift
        self._init_rates(mix)

        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        if self.has_attn:
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            if sr_ratio > 1:
                self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
                self.norm = nn.LayerNorm(dim)
        if self.has_conv:
            self.fc = nn.Conv2d(3 * num_heads, kernel_conv * kernel_conv, kernel_size=1, bias=True)
            self.dep_conv = build_dep_conv(shift, self.head_dim, dim, kernel_conv)
        self.proj_drop = nn.Dropout(proj_drop)

    def reset_parameters(self) -> None:
        """Rates to 0.5 and ``dep_conv`` to one-hot shift kernels (the Linears keep their own init)."""
        self._reset_rates()
        if self.has_conv:
            reset_dep_conv(self.dep_conv)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """(B, N, C) tokens of an H x W map (row-major, N = H*W) -> (B, N, C)."""
        b, n, c = x.shape
        if n != H * W:
            raise ValueError(f'token count {n} does not match H*W = {H}*{W} = {H * W}')
        q = self.q(x)                                                             # (B, N, C)
        kv_full = self.kv(x) if self.has_conv or self.sr_ratio == 1 else None     # (B, N, 2C)

        out_att = None
        if self.has_attn:
            if self.sr_ratio > 1:
                x_map = x.transpose(1, 2).reshape(b, c, H, W)
                # PVT v1 floors H/sr_ratio; a map smaller than sr_ratio would reduce to nothing, so only then
                # zero-pad it (bottom/right) up to one reduction cell.  Identical to PVT v1 wherever it works.
                pad_h, pad_w = max(self.sr_ratio - H, 0), max(self.sr_ratio - W, 0)
                if pad_h or pad_w:
                    x_map = F.pad(x_map, (0, pad_w, 0, pad_h))
                x_r = self.sr(x_map).flatten(2).transpose(1, 2)                   # (B, N', C)
                kv = self.kv(self.norm(x_r))
            else:
                kv = kv_full
            k, v = kv.reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            q_h = q.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, N, head_dim)
            out = F.scaled_dot_product_attention(q_h, k, v, dropout_p=self.attn_drop.p if self.training else 0.)
            out_att = self.proj(out.transpose(1, 2).reshape(b, n, c))             # (B, N, C)

        out_conv = None
        if self.has_conv:
            # (B, N, 3C) channels (q|k|v, head, d) -> (B, 3*heads, head_dim, N)
            f = torch.cat([q, kv_full], dim=-1).transpose(1, 2).reshape(b, 3 * self.num_heads, self.head_dim, n)
            out_conv = self.dep_conv(conv_path_features(self.fc, f, H, W)).flatten(2).transpose(1, 2)  # (B, N, C)
        return self.proj_drop(self._mix(out_att, out_conv))

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, num_heads={self.num_heads}, sr_ratio={self.sr_ratio}, '
                f'kernel_conv={self.kernel_conv}, mix={self.mix!r}, shift={self.shift!r}')
