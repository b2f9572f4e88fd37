"""ACmix for Swin Transformer: shifted-window attention with relative position bias plus the convolution path.

Follows the authors' ``WindowAttention_acmix`` together with the roll their ``SwinTransformerBlock`` does around
it: the input is rolled by ``-shift``, one ``qkv`` Linear feeds both paths, the convolution path runs on the
whole rolled map (before window partition, so near the borders of a shifted block it sees the wrapped-around
pixels, as in the authors' code), the attention runs per window with the shifted-window mask, and the result
``rate1 * proj(attn) + rate2 * conv`` is rolled back.  Beyond the authors' module it pads maps that are not
window multiples (like timm: zero tokens go through ``qkv`` and are cropped afterwards; the conv path sees only
the real map), builds the mask itself when none is given, and can change its window size
(``set_window_size``, used by timm's ``set_input_size``).  With ``mix='attn_only'`` it is timm's Swin
``WindowAttention`` plus the block's roll / pad / partition (``SwinTransformerBlock._attn``).

Two orders of padding and roll (``pad_first``):

* ``False`` (Swin's classification code as timm has it): roll the real H x W map, then pad.  The shifted-window
  mask is Swin's mask for the padded size, so on maps that are not window multiples its seams sit ``pad`` rows /
  columns away from the real ones (timm does the same).
* ``True`` (Swin's detection / segmentation code, Swin-Transformer-Object-Detection and mmdet's port): zero-pad
  to window multiples (Hp, Wp) on the bottom / right, then roll over the padded size, so Swin's mask for Hp x Wp
  is exact.  Padded tokens are zero before ``qkv`` (their q, k, v are the Linear's bias) and are attended to
  like real ones (not masked, as in that code).  The conv path keeps the authors' rule, "the whole rolled map",
  which here is the rolled *padded* map: in a shifted block the rolled map holds, along each axis, the real
  rows ``sh .. H-1``, then the ``Hp - H`` padding rows, then the wrapped-around rows ``0 .. sh-1``; so the
  k_c x k_c conv path of the real pixels next to that padding band sees padding features (computed from the
  ``qkv`` bias) where the authors' unpadded map would have the wrapped pixels, and the outer border of the
  rolled map gets ``dep_conv``'s zero padding as in the authors' code.  Padded outputs are cropped after the
  reverse roll.  On window multiples (every stage at 224) both orders are the authors' computation.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_module, resize_rel_pos_bias_table, to_2tuple, trunc_normal_
from timm.models.swin_transformer import get_relative_position_index, window_partition, window_reverse

from .conv_path import (MIX_MODES, SHIFT_MODES, TokenRateMixer, check_choice, check_odd_kernel, check_positive,
                        planes_to_tokens, reset_dep_conv, split_heads)

__all__ = ['ACmixWindowAttention', 'shifted_window_mask', 'zero_weight_mask']

# logit of a masked pair in the softmax: exp(-1e4 - max) is exactly 0 in float32, float16 and bfloat16
MASKED_LOGIT = -1e4


def shifted_window_mask(height: int, width: int, window_size: tuple[int, int], shift_size: tuple[int, int],
                        device: torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Swin's attention mask for a cyclically shifted map whose size is a multiple of the window.

    The rolled map has up to 3 x 3 regions that were not adjacent before the roll; tokens of different regions
    must not attend to each other inside a window.

    Returns:
        (nW, Wh*Ww, Wh*Ww) with 0 where two tokens share a region and -100 elsewhere (Swin's value).
    """
    (wh, ww), (sh, sw) = window_size, shift_size
    # region id along each axis: 0 before the last window, 1 in the last window before the shift, 2 after
    # (with no shift the last slice is empty and the remaining boundary falls between windows: no masking)
    rows = torch.zeros(height, device=device)
    rows[height - wh:] = 1
    rows[height - sh:] = 2
    cols = torch.zeros(width, device=device)
    cols[width - ww:] = 1
    cols[width - sw:] = 2
    region = (rows[:, None] * 3 + cols[None, :])[None, :, :, None]             # (1, H, W, 1)
    region = window_partition(region, window_size).reshape(-1, wh * ww)       # (nW, Wh*Ww)
    mask = region[:, None, :] != region[:, :, None]                           # (nW, N, N)
    return torch.zeros(mask.shape, device=device, dtype=dtype).masked_fill(mask, -100.0)


def zero_weight_mask(attn_mask: torch.Tensor, masked_logit: float = MASKED_LOGIT) -> torch.Tensor:
    """An additive attention mask with its entries at or below Swin's -100 lowered to ``masked_logit``.

    Swin masks with -100, which leaves softmax weights near exp(-100) ~ 4e-44: float32 subnormals.  x86 CPUs
    compute on subnormals through microcode, so the masked softmax, its product with v and their backward ran
    3-20x slower here (timm's Swin-T spends ~170 ms of a 1.3 s training step on them).  With ``MASKED_LOGIT``
    those weights are exactly 0.  With -100 a masked pair weighs at most exp(d - 100) of its row, d being how far
    its logit exceeds the row's largest unmasked one, which is below float32's resolution (2^-24) unless d > 83:
    the outputs are Swin's.  Fully masked rows keep uniform weights, as with -100.
    """
    return attn_mask.masked_fill(attn_mask <= -100, masked_logit)


@register_notrace_module  # FX leaf: padding, roll and shift mask depend on the map size
class ACmixWindowAttention(TokenRateMixer, nn.Module):
    """Swin (shifted-)window attention + ACmix convolution path, on a whole (B, H, W, C) map.

    Args:
        dim: channels C.
        num_heads: heads N; ``head_dim = dim // num_heads``.
        window_size: attention window (int or (Wh, Ww)).
        qkv_bias: bias of the ``qkv`` Linear.
        attn_drop: dropout on the attention probabilities.
        proj_drop: dropout on the mixed output.
        kernel_conv: odd kernel size k_c of the convolution path (authors: 3).
        mix: one of ``MIX_MODES``; ``'attn_only'`` is plain Swin window attention.
        shift: one of ``SHIFT_MODES``.
        pad_first: pad to window multiples before the cyclic shift (Swin's detection code) instead of after it
            (timm); see the module docstring for what each path sees at the padded borders.

    Parameters (authors' names): ``qkv``, ``proj``, ``relative_position_bias_table``, ``fc`` (1x1 conv
    3*N -> k_c^2 with bias), ``dep_conv`` (no bias), ``rate1``, ``rate2``; ``relative_position_index`` is a
    non-persistent buffer (the authors' was persistent: drop that key when loading their checkpoints).
    ``mix='conv_only'`` has no ``proj`` / ``relative_position_bias_table``.

    A Swin block uses it by replacing ``block.attn`` and its window step, e.g. overriding timm's
    ``SwinTransformerBlock._attn(x)`` with ``self.attn(x, self.shift_size, self.attn_mask)``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int | tuple[int, int] = 7, qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0., *, kernel_conv: int = 3, mix: str = 'learnable',
                 shift: str = 'group_conv', pad_first: bool = False) -> None:
        super().__init__()
        check_choice('mix', mix, MIX_MODES)
        check_choice('shift', shift, SHIFT_MODES)
        check_odd_kernel('kernel_conv', kernel_conv)
        self.head_dim = split_heads(dim, num_heads, 'dim', 'num_heads')
        self.window_size = to_2tuple(window_size)
        for w in self.window_size:
            check_positive('window_size', w)
        self.dim, self.num_heads, self.kernel_conv, self.shift = dim, num_heads, kernel_conv, shift
        self.pad_first = pad_first
        self._init_rates(mix)

        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        if self.has_attn:
            wh, ww = self.window_size
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
            self.register_buffer('relative_position_index', get_relative_position_index(wh, ww), persistent=False)
        self._init_stage2(dim, num_heads, attn_drop, proj_drop)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Position table ~ trunc normal(std .02), rates 0.5, ``dep_conv`` shift kernels (the authors' init)."""
        if self.has_attn:
            trunc_normal_(self.relative_position_bias_table, std=.02)
        self._reset_rates()
        if self.has_conv:
            reset_dep_conv(self.dep_conv)

    def set_window_size(self, window_size: int | tuple[int, int]) -> None:
        """Change the window, resizing the relative position table (timm's interpolation) and index."""
        window_size = to_2tuple(window_size)
        if window_size == self.window_size:
            return
        old, self.window_size = self.window_size, window_size
        if not self.has_attn:
            return
        wh, ww = window_size
        table = self.relative_position_bias_table
        with torch.no_grad():
            new_table = resize_rel_pos_bias_table(table, new_window_size=window_size,
                                                  new_bias_shape=((2 * wh - 1) * (2 * ww - 1), self.num_heads),
                                                  old_window_size=old)
        self.relative_position_bias_table = nn.Parameter(new_table, requires_grad=table.requires_grad)
        self.register_buffer('relative_position_index', get_relative_position_index(wh, ww, device=table.device),
                             persistent=False)

    def _rel_pos_bias(self) -> torch.Tensor:
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1)                                              # (heads, N, N)

    def _stage1(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Hp, Wp, C), Hp and Wp window multiples -> q | k | v of its windows (B*nW, Wh*Ww, 3C): the C-channel
        input is partitioned, not q | k | v (3C), as timm's Swin block does."""
        wh, ww = self.window_size
        return self.qkv(window_partition(x, self.window_size).view(-1, wh * ww, x.shape[-1]))

    def _conv_path(self, qkv: torch.Tensor, batch: int, height: int, width: int, window_h: int, window_w: int,
                   crop_h: int, crop_w: int, out_window_h: int, out_window_w: int) -> torch.Tensor:
        """q | k | v tokens (B*nW, Wh*Ww, 3C) of a (B, height, width) map in ``window_partition`` order (channel order
        (q|k|v, head, d) as in the Linear) -> the conv path of its top-left crop_h x crop_w part as contiguous tokens
        in ``window_partition`` order for out_window_h x out_window_w windows, (B*nW', out_window_h*out_window_w, C):
        the attention's windows, or the whole crop as one window (row-major (B, crop_h*crop_w, C))."""
        out = self.dep_conv.tokens_conv_path(qkv, *self._fc_params(), batch, height, width, window_h, window_w, crop_h,
                                             crop_w)                               # (B, C, crop_h, crop_w)
        return planes_to_tokens(out, out_window_h, out_window_w)

    def _window_attention(self, qkv: torch.Tensor, hp: int, wp: int, shift_size: tuple[int, int],
                          attn_mask: torch.Tensor | None) -> torch.Tensor:
        """q | k | v of the windows of a (B, Hp, Wp) map, (B*nW, Wh*Ww, 3C), Hp and Wp window multiples ->
        the attention output before ``proj`` (B*nW, Wh*Ww, C), heads concatenated."""
        wh, ww = self.window_size
        n = wh * ww
        # q, k, v: (B*nW, heads, N, head_dim) views of qkv; split before the transpose (timm permutes first), so
        # that unbind's backward stacks their gradients straight into qkv's layout instead of stacking them in
        # (3, B*nW, heads, N, head_dim) and copying that into qkv's layout (one pass over the 3C channels fewer)
        q, k, v = qkv.view(-1, n, 3, self.num_heads, self.head_dim).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        # explicit softmax attention, as timm's Swin (its fused path is experimental, off by default) and the
        # authors: SDPA with an additive mask took the math path on CPU plus a fully-masked-row check (aten::all)
        attn = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)                  # (B*nW, heads, N, N)
        attn = attn + self._rel_pos_bias().unsqueeze(0).to(q.dtype)
        if attn_mask is None and any(shift_size):
            attn_mask = shifted_window_mask(hp, wp, self.window_size, shift_size, q.device, q.dtype)
        if attn_mask is not None:
            n_win = attn_mask.shape[0]
            attn = attn.view(-1, n_win, self.num_heads, n, n) + zero_weight_mask(attn_mask).to(q.dtype)[None, :, None]
            attn = attn.view(-1, self.num_heads, n, n)
        out = self.attn_drop(attn.softmax(dim=-1)) @ v                            # (B*nW, heads, N, head_dim)
        return out.transpose(1, 2).reshape(-1, n, self.dim)

    def forward(self, x: torch.Tensor, shift_size: int | tuple[int, int] = (0, 0),
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C).

        Args:
            x: input map.
            shift_size: cyclic shift (rows, cols) of a shifted-window block; (0, 0) for a regular block.
            attn_mask: (nW, Wh*Ww, Wh*Ww) additive mask for the padded, rolled map, or None to build Swin's
                mask here when ``shift_size`` is non-zero.
        """
        b, h, w, c = x.shape
        if isinstance(shift_size, int):
            sh, sw = shift_size, shift_size
        else:
            sh, sw = shift_size
        wh, ww = self.window_size
        pad_h, pad_w = (wh - h % wh) % wh, (ww - w % ww) % ww
        padded = pad_h > 0 or pad_w > 0
        if self.pad_first and padded:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        if not self.pad_first and self.has_attn and padded:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        # the map the roll acted on, which the conv path and the mix cover: padded (pad_first) or real
        hr, wr = (h + pad_h, w + pad_w) if self.pad_first else (h, w)

        if self.has_attn:
            hp, wp = x.shape[1], x.shape[2]
            qkv = self._stage1(x)                                                  # (B*nW, Wh*Ww, 3C)
            attn = self._window_attention(qkv, hp, wp, (sh, sw), attn_mask)        # (B*nW, Wh*Ww, C)
            # where the conv path covers the whole (padded) map, its tokens in the attention's windows are the
            # accumulator of proj's GEMM; on the real part of a padded map (pad_first=False) it is mixed after
            # the crop
            in_proj = self.has_conv and hr == hp and wr == wp
            out_conv: torch.Tensor | None = None
            if in_proj:
                out_conv = self._conv_path(qkv, b, hp, wp, wh, ww, hp, wp, wh, ww)  # (B*nW, Wh*Ww, C)
            x = window_reverse(self._project_mix(attn, out_conv).view(-1, wh, ww, c), self.window_size, hp, wp)
            x = x[:, :hr, :wr]
            if self.has_conv and not in_proj:
                x = self._mix(x, self._conv_path(qkv, b, hp, wp, wh, ww, hr, wr, hr, wr).view(b, hr, wr, c))
        else:  # conv_only: the (B, hr, wr) map's tokens, row-major (one window)
            qkv = self.qkv(x).reshape(b, hr * wr, -1)
            x = self._conv_path(qkv, b, hr, wr, hr, wr, hr, wr, hr, wr).view(b, hr, wr, c)

        x = self.proj_drop(x)
        if sh or sw:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        if self.pad_first and padded:
            x = x[:, :h, :w]
        return x

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}, '
                f'kernel_conv={self.kernel_conv}, mix={self.mix!r}, shift={self.shift!r}, pad_first={self.pad_first}')
