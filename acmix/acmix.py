"""ACmix on image maps: "On the Integration of Self-Attention and Convolution" (Pan et al., CVPR 2022).

``ACmix`` is the module the authors put in the 3x3 slot of every ResNet bottleneck (``attn_mode='local'``, SASA
style sliding-window attention), and, with other attention cores, the SAN (``'patchwise'``) and a plain global
attention (``'global'``) variant.  Stage I is three 1x1 convs (q, k, v); Stage II adds an attention path and a
convolution path that share them (see ``acmix.conv_path``); the output is ``rate1 * attn + rate2 * conv``.

Differences from the authors' ``ACmix`` (their state dicts still load with ``strict=True`` and give the same
output): any input size works (odd sizes with stride 2 give ``ceil(H/2)``; maps smaller than the attention window
use generalised reflection, see ``acmix.kernels.indexing``), dilation is honoured by both paths, ``dep_conv``
padding follows ``kernel_conv`` and ``dilation``, the position grid follows the input's device and dtype, and
the window attention never materialises the ``K*K`` unfolded windows (``impl='auto'``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_module

from .conv_path import (MIX_MODES, SHIFT_MODES, RateMixer, build_conv_path, check_choice, check_odd_kernel,
                        check_positive, reset_dep_conv, split_heads)
from .kernels import IMPLS, multihead_local_attention

__all__ = ['ACmix', 'ATTN_MODES', 'position_grid']

ATTN_MODES = ('local', 'patchwise', 'global')


def position_grid(height: int, width: int, device: torch.device | None = None,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """Normalised pixel coordinates: (1, 2, H, W), channel 0 the column (x) and channel 1 the row (y), each a
    ``linspace(-1, 1)`` over its axis (a single pixel sits at -1)."""
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    return torch.stack([xs.expand(height, width), ys[:, None].expand(height, width)]).unsqueeze(0)


@register_notrace_module  # FX leaf: shape-dependent padding/windows and the local-attention custom op inside
class ACmix(RateMixer, nn.Module):
    """ACmix for (B, C, H, W) maps: shared 1x1 q/k/v projections, attention path + convolution path.

    Args:
        in_planes: input channels C_in.
        out_planes: output channels C_out, divisible by ``head``.
        kernel_att: odd attention window for ``attn_mode='local'`` / ``'patchwise'`` (unused by ``'global'``).
        head: number of heads N; ``head_dim = out_planes // head``.
        kernel_conv: odd kernel size k_c of the convolution path.
        stride: output subsampling of both paths (queries are subsampled, the shift conv is strided).
        dilation: dilation of the attention window and of the shift conv.
        attn_mode: ``'local'`` (sliding window with the ``conv_p`` position term, the authors' ResNet),
            ``'patchwise'`` (SAN patchwise attention, ``acmix.patchwise.PatchwiseAttention``), or ``'global'``
            (multi-head attention over all pixels, no position term: locality comes from the conv path).
        mix: one of ``MIX_MODES`` (see ``acmix.conv_path.RateMixer``).
        shift: one of ``SHIFT_MODES`` (see ``acmix.conv_path``).
        impl: local-attention implementation, one of ``acmix.kernels.IMPLS`` (``'auto'``: the fast custom op,
            windows never materialised; ``'reference'``: explicit windows, like the authors' ``unfold``).
        qk_planes: width of q and k (default ``out_planes``); ``'patchwise'`` only, where SAN's phi / psi are
            narrower than its values (``out_planes / 4``).  The conv path then splits q, k and v into maps of
            ``conv_dim = min(qk_planes, head_dim)`` channels (``3 * head`` maps of ``head_dim`` by default).
        share_planes: value channels per patchwise weight channel (SAN: 8).

    Parameters (authors' names): ``conv1``, ``conv2``, ``conv3`` (q, k, v: 1x1 conv with bias), ``conv_p`` (1x1
    conv 2 -> head_dim, local mode only), ``fc`` (1x1 conv 3*head -> k_c^2, no bias; number of Stage I maps ->
    k_c^2 with ``qk_planes``), ``dep_conv`` (shift module, no bias), ``rate1``, ``rate2``; ``attn`` holds the
    patchwise core (with ``mix='attn_only'``, ``head=1``, ``qk_planes = in/16``: SAN's SA module, key for key).

    Shape:
        (B, in_planes, H, W) -> (B, out_planes, ceil(H/stride), ceil(W/stride)).

    Initialisation: the convs keep PyTorch's default init (as in the authors' module) and ``reset_parameters``
    sets the rates to 0.5 and ``dep_conv`` to one-hot shift kernels.  A model that re-initialises every conv
    (e.g. a ResNet-wide Kaiming init, which is what the authors' ResNet did, overwriting the shift init; their
    Swin kept it) should call ``reset_parameters()`` on each ACmix afterwards if it wants the shift init.
    """

    def __init__(self, in_planes: int, out_planes: int, kernel_att: int = 7, head: int = 4, kernel_conv: int = 3,
                 stride: int = 1, dilation: int = 1, *, attn_mode: str = 'local', mix: str = 'learnable',
                 shift: str = 'group_conv', impl: str = 'auto', qk_planes: int | None = None,
                 share_planes: int = 8) -> None:
        super().__init__()
        check_choice('attn_mode', attn_mode, ATTN_MODES)
        check_choice('mix', mix, MIX_MODES)
        check_choice('shift', shift, SHIFT_MODES)
        check_choice('impl', impl, IMPLS)
        check_positive('in_planes', in_planes)
        check_odd_kernel('kernel_att', kernel_att)
        check_odd_kernel('kernel_conv', kernel_conv)
        check_positive('stride', stride)
        check_positive('dilation', dilation)
        self.head_dim = split_heads(out_planes, head)
        self.in_planes, self.out_planes, self.head = in_planes, out_planes, head
        self.kernel_att, self.kernel_conv = kernel_att, kernel_conv
        self.stride, self.dilation = stride, dilation
        self.attn_mode, self.shift, self.impl = attn_mode, shift, impl
        self.qk_planes = out_planes if qk_planes is None else qk_planes
        if self.qk_planes != out_planes and attn_mode != 'patchwise':
            raise ValueError(f"qk_planes {qk_planes} != out_planes {out_planes} needs attn_mode='patchwise', "
                             f'got {attn_mode!r}')
        check_positive('qk_planes', self.qk_planes)
        self.conv_dim = min(self.qk_planes, self.head_dim)  # channels of each Stage I map the conv path mixes
        if self.qk_planes % self.conv_dim or self.head_dim % self.conv_dim:
            raise ValueError(f'qk_planes {self.qk_planes} and head dim {self.head_dim} must be multiples of the '
                             f'smaller one')
        self._init_rates(mix)

        # Stage I: q, k, v
        self.conv1 = nn.Conv2d(in_planes, self.qk_planes, kernel_size=1)
        self.conv2 = nn.Conv2d(in_planes, self.qk_planes, kernel_size=1)
        self.conv3 = nn.Conv2d(in_planes, out_planes, kernel_size=1)

        # Stage II, attention path
        if self.has_attn and attn_mode == 'local':
            self.conv_p = nn.Conv2d(2, self.head_dim, kernel_size=1)
        elif self.has_attn and attn_mode == 'patchwise':
            from .patchwise import PatchwiseAttention  # optional core, imported only when asked for
            self.attn = PatchwiseAttention(out_planes, head, kernel_att, stride, dilation, qk_planes=self.qk_planes,
                                           share_planes=share_planes)

        # Stage II, convolution path
        if self.has_conv:
            num_maps = (2 * self.qk_planes + out_planes) // self.conv_dim  # 3 * head when q, k, v have one width
            self.fc, self.dep_conv = build_conv_path(num_maps, self.conv_dim, out_planes, kernel_conv, shift,
                                                     fc_bias=False, stride=stride, dilation=dilation)

    def reset_parameters(self) -> None:
        """Rates to 0.5 and ``dep_conv`` to one-hot shift kernels (the authors' module init)."""
        self._reset_rates()
        if self.has_conv:
            reset_dep_conv(self.dep_conv)

    def _local_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        h, w = qkv.shape[-2:]
        pe = self.conv_p(position_grid(h, w, qkv.device, qkv.dtype))[0]       # (head_dim, H, W)
        # logits q . (k_win + pe_q - pe_win): q . pe_q is the same for every tap of a window, so it cancels in
        # the softmax and q . (k - pe)_win gives the same attention; the kernel applies the scale and the
        # position term as it reads Stage I's q | k | v.
        return multihead_local_attention(qkv, self.head, self.kernel_att, self.dilation, self.stride,
                                         self.head_dim ** -0.5, pe, self.impl)

    def _global_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, _, h, w = q.shape
        q = q[:, :, ::self.stride, ::self.stride]
        ho, wo = q.shape[-2:]
        q = q.reshape(b, self.head, self.head_dim, ho * wo).transpose(-2, -1)  # (B, head, Ho*Wo, head_dim)
        k = k.reshape(b, self.head, self.head_dim, h * w).transpose(-2, -1)    # (B, head, H*W, head_dim)
        v = v.reshape(b, self.head, self.head_dim, h * w).transpose(-2, -1)
        out = F.scaled_dot_product_attention(q, k, v)                          # (B, head, Ho*Wo, head_dim)
        return out.transpose(-2, -1).reshape(b, self.out_planes, ho, wo)

    def _stage1(self, x: torch.Tensor) -> torch.Tensor:
        """Stage I: (B, in_planes, H, W) -> q | k | v (B, 2*qk_planes + out_planes, H, W).

        The three 1x1 convs run as one conv whose weight and bias are theirs concatenated (one GEMM instead of
        three, and the conv path reads the result as it is instead of concatenating q, k and v again)."""
        bias_q, bias_k, bias_v = self.conv1.bias, self.conv2.bias, self.conv3.bias
        assert bias_q is not None and bias_k is not None and bias_v is not None  # (Optional for TorchScript)
        weight = torch.cat([self.conv1.weight, self.conv2.weight, self.conv3.weight])
        return F.conv2d(x, weight, torch.cat([bias_q, bias_k, bias_v]))

    def _split(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q | k | v -> views q, k (B, qk_planes, H, W) and v (B, out_planes, H, W)."""
        c = self.qk_planes
        return qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]

    def _attention_path(self, qkv: torch.Tensor) -> torch.Tensor:
        """Stage I maps q | k | v -> (B, out_planes, Ho, Wo)."""
        # the core this module holds (TorchScript resolves hasattr statically: only that core is compiled)
        if hasattr(self, 'conv_p'):  # attn_mode 'local'
            return self._local_attention(qkv)
        q, k, v = self._split(qkv)
        if hasattr(self, 'attn'):  # attn_mode 'patchwise'
            return self.attn(q, k, v)
        return self._global_attention(q, k, v)

    def _conv_path(self, qkv: torch.Tensor) -> torch.Tensor:
        """Stage I maps q | k | v -> ``dep_conv(fc(q | k | v))`` (B, out_planes, Ho, Wo)."""
        b, _, h, w = qkv.shape
        maps = qkv.reshape(b, -1, self.conv_dim, h * w)  # (B, maps, conv_dim, H*W)
        return self.dep_conv.conv_path(maps, *self._fc_params(), h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_planes, H, W) -> (B, out_planes, ceil(H/stride), ceil(W/stride))."""
        qkv = self._stage1(x)
        # the conv path first: backward runs the later-built attention path first, and autograd then adds the conv
        # path's gradient of qkv into the attention op's (a plain tensor) in place instead of into a fresh one
        out_conv = self._conv_path(qkv) if self.has_conv else None
        out_att = self._attention_path(qkv) if self.has_attn else None
        return self._mix(out_att, out_conv)

    def extra_repr(self) -> str:
        return (f'{self.in_planes}, {self.out_planes}, kernel_att={self.kernel_att}, head={self.head}, '
                f'qk_planes={self.qk_planes}, '
                f'kernel_conv={self.kernel_conv}, stride={self.stride}, dilation={self.dilation}, '
                f'attn_mode={self.attn_mode!r}, mix={self.mix!r}, shift={self.shift!r}, impl={self.impl!r}')
