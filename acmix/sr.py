"""ACmix for PVT v1: spatial-reduction (SR) global attention plus the convolution path, on (B, N, C) tokens.

``mix='attn_only'`` is exactly PVT v1's ``Attention`` (Wang et al., ICCV 2021): queries from every token, keys
and values from the tokens reduced by a ``sr_ratio`` x ``sr_ratio`` strided conv and a LayerNorm.

The paper gives no detail of the PVT variant and the authors released no PVT code.  Following the paper's Stage I
(both paths share the q / k / v projections), the convolution path reuses exactly what the attention computes:
``q`` at full resolution and the spatially reduced ``k`` / ``v``, nearest-upsampled back to the H x W map (each
reduced cell repeated over the ``sr_ratio`` x ``sr_ratio`` tokens it summarises).  Laid out as the map
(B, 3*heads, head_dim, H*W), they go through ``fc`` (3*heads -> k_c^2, with bias, as in the authors' Swin) and
``dep_conv``.  The output is ``rate1 * proj(attn) + rate2 * conv``, then ``proj_drop``.

Prefix tokens (PVT v1's class token in its last stage): the first ``num_prefix_tokens`` tokens take part in the
attention as in PVT v1; the convolution path runs on the H x W spatial tokens only, so a prefix token's output is
``rate1 * proj(attn)`` (its conv term is zero).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_module

from .conv_path import (MIX_MODES, SHIFT_MODES, TokenRateMixer, check_choice, check_odd_kernel, check_positive,
                        planes_to_tokens, reset_dep_conv, split_heads)
from .kernels.layout import write_planes_to_tokens, write_tokens_to_planes

__all__ = ['ACmixSRAttention']


@torch.library.custom_op('acmix::sr_conv_maps', mutates_args=())
def _sr_conv_maps(q: torch.Tensor, kv: torch.Tensor, height: int, width: int, height_r: int,
                  width_r: int) -> torch.Tensor:
    """The conv path's input, written once: q tokens (B, H*W, C) and reduced k | v tokens (B, H'*W', 2C) -> (B, 3C,
    H, W) maps, q then k | v nearest-upsampled (``F.interpolate``'s rule; a broadcast copy when H, W are multiples
    of H', W').  Backward (``sr_conv_maps_backward``) hands autograd plain token gradients, summed over each
    reduced cell."""
    b, _, c = q.shape
    maps = q.new_empty(b, 3 * c, height, width)
    write_tokens_to_planes(maps[:, :c], q, height, width)
    kv_map = kv.new_empty(b, 2 * c, height_r, width_r)
    write_tokens_to_planes(kv_map, kv, height_r, width_r)
    if height % height_r == 0 and width % width_r == 0:
        sh, sw = height // height_r, width // width_r
        maps[:, c:].view(b, 2 * c, height_r, sh, width_r, sw).copy_(
            kv_map[:, :, :, None, :, None].expand(-1, -1, -1, sh, -1, sw))
    else:
        maps[:, c:].copy_(F.interpolate(kv_map, size=(height, width), mode='nearest'))
    return maps


@torch.library.custom_op('acmix::sr_conv_maps_backward', mutates_args=())
def _sr_conv_maps_backward(grad: torch.Tensor, height_r: int, width_r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3C, H, W) gradient of ``sr_conv_maps`` -> gradients of its q (B, H*W, C) and k | v (B, H'*W', 2C)."""
    grad = grad.contiguous()
    b, c3, h, w = grad.shape
    c = c3 // 3
    grad_q = grad.new_empty(b, h * w, c)
    write_planes_to_tokens(grad_q, grad[:, :c], h, w)
    grad_kv_map = grad[:, c:]
    if h % height_r == 0 and w % width_r == 0:
        grad_kv_map = grad_kv_map.reshape(b, 2 * c, height_r, h // height_r, width_r, w // width_r).sum((3, 5))
    else:
        grad_kv_map = torch.ops.aten.upsample_nearest2d_backward(grad_kv_map.contiguous(), [h, w],
                                                                 [b, 2 * c, height_r, width_r], None, None)
    grad_kv = grad.new_empty(b, height_r * width_r, 2 * c)
    write_planes_to_tokens(grad_kv, grad_kv_map, height_r, width_r)  # both branches give a fresh contiguous map
    return grad_q, grad_kv


@_sr_conv_maps.register_fake
def _sr_conv_maps_fake(q, kv, height, width, height_r, width_r):
    return q.new_empty(q.shape[0], 3 * q.shape[2], height, width)


@_sr_conv_maps_backward.register_fake
def _sr_conv_maps_backward_fake(grad, height_r, width_r):
    b, c3, h, w = grad.shape
    return grad.new_empty(b, h * w, c3 // 3), grad.new_empty(b, height_r * width_r, 2 * (c3 // 3))


def _setup_sr_conv_maps(ctx, inputs, output) -> None:
    ctx.reduced = inputs[4:]


_sr_conv_maps.register_autograd(
    lambda ctx, grad: (*_sr_conv_maps_backward(grad, *ctx.reduced), None, None, None, None),
    setup_context=_setup_sr_conv_maps)


@register_notrace_module  # FX leaf: token-count check and small-map padding depend on H, W
class ACmixSRAttention(TokenRateMixer, nn.Module):
    """PVT v1 spatial-reduction attention + ACmix convolution path.

    Args:
        dim: channels C.
        num_heads: heads N; ``head_dim = dim // num_heads``.
        sr_ratio: spatial reduction of keys/values (kernel = stride = ``sr_ratio`` conv); 1 for none.
        num_prefix_tokens: tokens before the H*W spatial ones (PVT v1's class token: 1); needs ``sr_ratio == 1``.
        qkv_bias: bias of the ``q`` and ``kv`` Linears (PVT v1 default: False).
        attn_drop: dropout on the attention probabilities.
        proj_drop: dropout on the output.
        kernel_conv: odd kernel size k_c of the convolution path.
        mix: one of ``MIX_MODES``; ``'attn_only'`` is PVT v1's attention.
        shift: one of ``SHIFT_MODES``.

    Parameters: ``q``, ``kv``, ``proj``, ``sr`` and ``norm`` (only if ``sr_ratio > 1``), as PVT v1; ``fc``
    (1x1 conv 3*N -> k_c^2 with bias), ``dep_conv`` (no bias), ``rate1``, ``rate2``.  ``mix='conv_only'`` has no
    ``proj`` (``q``, ``kv``, ``sr``, ``norm`` are Stage I, shared by both paths).

    Shape:
        forward(x (B, P + H*W, C), H, W) with P = ``num_prefix_tokens`` -> (B, P + H*W, C).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = False, attn_drop: float = 0.,
                 proj_drop: float = 0., *, num_prefix_tokens: int = 0, kernel_conv: int = 3, mix: str = 'learnable',
                 shift: str = 'group_conv') -> None:
        super().__init__()
        check_choice('mix', mix, MIX_MODES)
        check_choice('shift', shift, SHIFT_MODES)
        check_odd_kernel('kernel_conv', kernel_conv)
        check_positive('sr_ratio', sr_ratio)
        if num_prefix_tokens < 0 or (num_prefix_tokens and sr_ratio > 1):
            raise ValueError(f'num_prefix_tokens must be >= 0 and needs sr_ratio 1 when > 0 (PVT v1 adds its class '
                             f'token in the last stage, which has no reduction), got {num_prefix_tokens} with '
                             f'sr_ratio {sr_ratio}')
        self.head_dim = split_heads(dim, num_heads, 'dim', 'num_heads')
        self.dim, self.num_heads, self.sr_ratio = dim, num_heads, sr_ratio
        self.num_prefix_tokens = num_prefix_tokens
        self.kernel_conv, self.shift = kernel_conv, shift
        self._init_rates(mix)

        # Stage I, shared by both paths: q on every token, k/v on the spatially reduced tokens
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        self._init_stage2(dim, num_heads, attn_drop, proj_drop)

    def reset_parameters(self) -> None:
        """Rates to 0.5 and ``dep_conv`` to one-hot shift kernels (the Linears keep their own init)."""
        self._reset_rates()
        if self.has_conv:
            reset_dep_conv(self.dep_conv)

    def _stage1(self, x: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """(B, N, C) tokens -> q (B, N, C) of every token, k | v (B, H'*W', 2C) of the reduced map, and (H', W')."""
        b, _, c = x.shape
        q = self.q(x)
        if hasattr(self, 'sr'):  # sr_ratio > 1 (hasattr: TorchScript then compiles only the branch that exists)
            x_map = x.transpose(1, 2).reshape(b, c, H, W)
            # PVT v1 floors H/sr_ratio; a map smaller than sr_ratio would reduce to nothing, so only then
            # zero-pad it (bottom/right) up to one reduction cell.  Identical to PVT v1 wherever it works.
            pad_h, pad_w = max(self.sr_ratio - H, 0), max(self.sr_ratio - W, 0)
            if pad_h or pad_w:
                x_map = F.pad(x_map, (0, pad_w, 0, pad_h))
            x_r = self.sr(x_map)                                                  # (B, C, H', W')
            h_r, w_r = x_r.shape[-2:]
            return q, self.kv(self.norm(x_r.flatten(2).transpose(1, 2))), h_r, w_r
        return q, self.kv(x), H, W

    def _attention_path(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """q (B, N, C), k | v (B, N', 2C) -> the attention output before ``proj`` (B, N, C), heads concatenated."""
        b, n, c = q.shape
        k, v = kv.reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q_h = q.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)      # (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q_h, k, v, dropout_p=self.attn_drop.p if self.training else 0.)
        return out.transpose(1, 2).reshape(b, n, c)

    def _conv_path(self, q: torch.Tensor, kv: torch.Tensor, H: int, W: int, h_r: int, w_r: int) -> torch.Tensor:
        """Stage I's q (B, N, C) and k | v (B, N', 2C) -> the conv path of the H x W spatial tokens (B, H*W, C)."""
        b, _, c = q.shape
        p = self.num_prefix_tokens
        # Stage I maps of the spatial tokens, channels (q|k|v, head, d): q (B, C, H, W); k|v (B, 2C, H', W')
        # nearest-upsampled to H x W (a no-op without reduction)
        maps = torch.ops.acmix.sr_conv_maps(q[:, p:], kv[:, p:], H, W, h_r, w_r)   # (B, 3C, H, W)
        f = maps.view(b, 3 * self.num_heads, self.head_dim, H * W)
        out = self.dep_conv.conv_path(f, *self._fc_params(), H, W)          # (B, C, H, W)
        return planes_to_tokens(out, H, W)                                   # contiguous, as the attention's

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """(B, P + H*W, C) tokens (P prefix tokens, then an H x W map row-major) -> (B, P + H*W, C)."""
        n = x.shape[1]
        p = self.num_prefix_tokens
        if n != p + H * W:
            raise ValueError(f'token count {n} does not match num_prefix_tokens + H*W = {p} + {H}*{W} = {p + H * W}')
        q, kv, h_r, w_r = self._stage1(x, H, W)
        # the attention first: its Stage I gradients then arrive last, added in place into the conv path's
        attn = self._attention_path(q, kv) if self.has_attn else None
        out_conv = None
        if self.has_conv:
            out_conv = self._conv_path(q, kv, H, W, h_r, w_r)                      # (B, H*W, C)
            if p:
                out_conv = F.pad(out_conv, (0, 0, p, 0))                          # prefix tokens: no conv term
        if attn is not None:  # proj's GEMM mixes in the conv path
            return self.proj_drop(self._project_mix(attn, out_conv))
        assert out_conv is not None
        return self.proj_drop(out_conv)

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, num_heads={self.num_heads}, sr_ratio={self.sr_ratio}, '
                f'num_prefix_tokens={self.num_prefix_tokens}, kernel_conv={self.kernel_conv}, mix={self.mix!r}, '
                f'shift={self.shift!r}')
