"""Stage II convolution path of ACmix and the pieces every ACmix flavour shares.

The convolution path re-uses the Stage I projections.  Its 3N maps (N heads each of q, k and v, every map with
``head_dim`` channels) go through ``fc``, a 1x1 conv 3N -> k_c^2 applied per channel index and shared over the
``head_dim`` channels (3N -> k_c^2, not 3N -> k_c^2 N; see the authors' issue #5).  The k_c^2 outputs are the
pre-shift maps of the k_c x k_c kernel taps; shifting tap ``j`` by its offset and summing over the taps is a
k_c x k_c convolution, ``dep_conv``.

Layout used throughout: ``fc`` reads ``(B, 3*head, head_dim, L)`` (q heads, then k heads, then v heads) and the
shift module reads ``(B, head_dim * k_c^2, H, W)`` with channel ``d * k_c^2 + j`` (``d`` the channel inside a head,
``j = a * k_c + b`` the tap at row ``a``, column ``b``), as in the authors' code.

Shift variants (the paper's ablation, Fig. 3; the names are the ``shift=`` values):

* ``'group_conv'`` -- the authors' released module: a learnable ``Conv2d(head_dim*k_c^2 -> C, k_c,
  groups=head_dim)`` whose kernels start as one-hot shifts.  Each of the ``head_dim`` groups owns ``C/head_dim``
  (= number of heads) output channels, i.e. several kernel sets per group: Fig. 3 (c) "learnable kernels and
  multiple convolution groups".  ``ShiftGroupConv`` runs it with a C++ kernel on CPU (same parameters).
* ``'shift_init'`` -- learnable kernels initialised as shifts, but one kernel set per group:
  ``Conv2d(head_dim*k_c^2 -> head_dim, k_c, groups=head_dim)``, each output channel repeated for the heads.  This
  is Fig. 3 (c) without the "multiple groups" step.
* ``'fixed_kernel'`` -- the same grouped conv with fixed one-hot kernels (a non-persistent buffer): Fig. 3 (b).
* ``'tensor'`` -- explicit tensor shifts (zero fill) and a sum, no convolution: Fig. 3 (a).

The three non-default variants produce ``head_dim`` channels and repeat each ``C/head_dim`` times (channel
``o`` of the output comes from channel ``o // (C/head_dim)``), which is exactly what the authors' group conv
computes at its shift initialisation; so all four variants agree at initialisation.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kernels import shift_conv as shift_conv_kernel
from .kernels.layout import planes_to_tokens, tokens_fc_to_planes, tokens_to_planes

__all__ = ['MIX_MODES', 'SHIFT_MODES', 'check_choice', 'check_odd_kernel', 'check_positive', 'split_heads',
           'build_conv_path', 'build_dep_conv', 'tokens_to_planes', 'planes_to_tokens',
           'shift_kernel_', 'reset_dep_conv', 'shift_layout', 'ShiftPath', 'ShiftGroupConv', 'ShiftConv',
           'TensorShift', 'RateMixer', 'TokenRateMixer']

MIX_MODES = ('learnable', 'fixed', 'attn_only', 'conv_only')
SHIFT_MODES = ('group_conv', 'shift_init', 'fixed_kernel', 'tensor')


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` listing the valid values unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')


def check_odd_kernel(name: str, value: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an odd positive int (a window centred on its pixel)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f'{name} must be an odd positive int, got {value!r}')


def check_positive(name: str, value: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be an int >= 1, got {value!r}')


def split_heads(planes: int, heads: int, planes_name: str = 'out_planes', heads_name: str = 'head') -> int:
    """Return ``planes // heads``, raising ``ValueError`` naming both numbers if it does not divide."""
    check_positive(heads_name, heads)
    check_positive(planes_name, planes)
    if planes % heads != 0:
        raise ValueError(f'{planes_name} {planes} must be divisible by {heads_name} {heads}')
    return planes // heads


@torch.no_grad()
def shift_kernel_(weight: torch.Tensor) -> torch.Tensor:
    """Fill a ``(out, k*k, k, k)`` kernel in place with one-hot shift kernels: input ``j`` reads tap ``j``."""
    out, taps, k, _ = weight.shape
    if taps != k * k:
        raise ValueError(f'shift kernel needs k*k input channels per group, got weight {tuple(weight.shape)}')
    weight.zero_()
    tap = torch.arange(taps, device=weight.device)
    weight[:, tap, tap // k, tap % k] = 1.0
    return weight


def shift_layout(f: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Lay the output of ``fc`` out for the shift module.

    Args:
        f: (B, k_c^2, head_dim, H*W), ``fc`` (1x1 ``Conv2d(3*head -> k_c^2)``) applied to the Stage I maps
            (B, 3*head, head_dim, H*W), q heads then k heads then v heads.
        height, width: H and W of the map.

    Returns:
        (B, head_dim * k_c^2, H, W), channel ``d * k_c^2 + j``.
    """
    return f.transpose(1, 2).reshape(f.shape[0], -1, height, width)


class ShiftPath:
    """Mixin of the shift modules: ``conv_path`` runs ``fc`` and the shift as the convolution path does."""

    def conv_path(self, maps: torch.Tensor, fc_weight: torch.Tensor, fc_bias: Optional[torch.Tensor], height: int,
                  width: int) -> torch.Tensor:
        """Stage I maps (B, M, D, H*W) -> ``self(shift_layout(fc(maps)))`` (B, C, ceil(H/stride), ceil(W/stride)),
        with ``fc``'s weight (k^2, M, 1, 1) and bias (k^2,) or None."""
        return self.unfolded_conv_path(maps, fc_weight, fc_bias, height, width)

    def unfolded_conv_path(self, maps: torch.Tensor, fc_weight: torch.Tensor, fc_bias: Optional[torch.Tensor],
                           height: int, width: int) -> torch.Tensor:
        """``conv_path`` as written: ``fc``, the layout for the shift, the shift (TorchScript has no ``super()``)."""
        return self(shift_layout(F.conv2d(maps, fc_weight, fc_bias), height, width))

    def tokens_conv_path(self, tokens: torch.Tensor, fc_weight: torch.Tensor, fc_bias: Optional[torch.Tensor],
                         batch: int, height: int, width: int, window_h: int, window_w: int, crop_h: int,
                         crop_w: int) -> torch.Tensor:
        """``conv_path`` of Stage I tokens (Swin): (B*nW, Wh*Ww, M*D) in ``window_partition`` order of a (B, height,
        width) map, channel ``m*D + d`` -> the conv path of the map's top-left crop_h x crop_w part,
        (B, C, ceil(crop_h/stride), ceil(crop_w/stride))."""
        return self.planar_conv_path(tokens, fc_weight, fc_bias, batch, height, width, window_h, window_w, crop_h,
                                     crop_w)

    def planar_conv_path(self, tokens: torch.Tensor, fc_weight: torch.Tensor, fc_bias: Optional[torch.Tensor],
                         batch: int, height: int, width: int, window_h: int, window_w: int, crop_h: int,
                         crop_w: int) -> torch.Tensor:
        """``tokens_conv_path`` through the (B, M*D, H, W) maps: ``tokens_to_planes``, the crop, ``conv_path``."""
        planes = tokens_to_planes(tokens, batch, height, width, window_h, window_w)[:, :, :crop_h, :crop_w]
        maps = planes.reshape(batch, fc_weight.shape[1], -1, crop_h * crop_w)
        return self.conv_path(maps, fc_weight, fc_bias, crop_h, crop_w)


class ShiftConv(ShiftPath, nn.Module):
    """Grouped k_c x k_c conv with one kernel set per group, output repeated over the heads.

    ``shift='shift_init'`` (learnable ``weight``) and ``shift='fixed_kernel'`` (``weight`` a fixed buffer).
    Input (B, head_dim*k_c^2, H, W) -> output (B, out_planes, ceil(H/s), ceil(W/s)).
    """

    def __init__(self, head_dim: int, out_planes: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 learnable: bool = True) -> None:
        super().__init__()
        self.head_dim, self.out_planes = head_dim, out_planes
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        weight = torch.empty(head_dim, kernel_size * kernel_size, kernel_size, kernel_size)
        if learnable:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer('weight', weight, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        shift_kernel_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.dilation * (self.kernel_size - 1) // 2
        y = F.conv2d(x, self.weight, None, self.stride, pad, self.dilation, self.head_dim)
        return y.repeat_interleave(self.out_planes // self.head_dim, dim=1)  # (B, out_planes, Ho, Wo)

    def extra_repr(self) -> str:
        return (f'head_dim={self.head_dim}, out_planes={self.out_planes}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, dilation={self.dilation}, learnable={isinstance(self.weight, nn.Parameter)}')


class TensorShift(ShiftPath, nn.Module):
    """Explicit tensor shifts and a sum (``shift='tensor'``), no parameters.

    Tap ``j = a*k + b`` of channel ``d`` is moved by ``dilation * (a - (k-1)/2, b - (k-1)/2)`` with zero fill
    (what a zero-padded conv with a one-hot kernel does), the k^2 taps are summed, and the result is repeated
    over the heads.  Input (B, head_dim*k^2, H, W) -> output (B, out_planes, ceil(H/s), ceil(W/s)).
    """

    def __init__(self, head_dim: int, out_planes: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.head_dim, self.out_planes = head_dim, out_planes
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        k, s, dil = self.kernel_size, self.stride, self.dilation
        pad = dil * (k - 1) // 2
        x = F.pad(x, (pad, pad, pad, pad)).reshape(b, self.head_dim, k * k, h + 2 * pad, w + 2 * pad)
        ho, wo = -(-h // s), -(-w // s)
        out = x.new_zeros(b, self.head_dim, ho, wo)
        for j in range(k * k):
            r, c = dil * (j // k), dil * (j % k)
            out = out + x[:, :, j, r:r + (ho - 1) * s + 1:s, c:c + (wo - 1) * s + 1:s]  # (B, head_dim, Ho, Wo)
        return out.repeat_interleave(self.out_planes // self.head_dim, dim=1)

    def extra_repr(self) -> str:
        return (f'head_dim={self.head_dim}, out_planes={self.out_planes}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, dilation={self.dilation}')


class ShiftGroupConv(ShiftPath, nn.Conv2d):
    """``dep_conv`` for ``shift='group_conv'``: the authors' ``Conv2d(head_dim*k^2 -> C, k, groups=head_dim)``.

    Same parameters, state-dict keys and result as that ``nn.Conv2d`` (their checkpoints load strictly).  On CPU it
    runs the C++ kernel ``acmix.kernels.shift_conv`` (several times faster than oneDNN's grouped conv in forward
    and backward, equal to float rounding), strided blocks included; off CPU, or with ``use_kernel = False``, it
    is the plain grouped conv, the reference the tests compare the kernel with.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.use_kernel = True
        self.fold_fc = True  # let conv_path fold fc into the kernel (folds_fc); MAC counts switch it off

    def _kernel_runs(self, x: torch.Tensor) -> bool:
        return (self.use_kernel and x.device.type == 'cpu' and self.stride[0] == self.stride[1]
                and shift_conv_kernel.available())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernel_runs(x):
            b, _, h, w = x.shape
            return torch.ops.acmix.shift_conv_fwd(x.view(b, self.groups, -1, h, w), self.weight, self.dilation[0],
                                                  self.stride[0])
        return self._conv_forward(x, self.weight, self.bias)

    def folds_fc(self, num_maps: int) -> bool:
        """Whether ``conv_path`` folds ``fc`` into the kernel: when that takes no more MACs, ``M*(N-1) <= N*k^2``
        (M = ``num_maps``, N = outputs per group).  At equal MACs (ResNet-ACmix's 4 heads) the folded path still
        wins, as it skips fc's output and its layout copy: ResNet-ACmix-26 training step 1.06x, inference 1.10x."""
        n = self.out_channels // self.groups
        taps = self.in_channels // self.groups
        return self.fold_fc and num_maps * (n - 1) <= n * taps

    def conv_path(self, maps: torch.Tensor, fc_weight: torch.Tensor, fc_bias: Optional[torch.Tensor], height: int,
                  width: int) -> torch.Tensor:
        """``ShiftPath.conv_path`` on the C++ kernel, with ``fc`` folded into it when that takes no more MACs.

        ``fc`` and the shift conv are both linear, so together they are one grouped k x k conv over the M Stage I
        maps of each group, weight ``W[o, m] = sum_j dep_conv.weight[o, j] * fc.weight[j, m]``; the C++ kernel
        reads the maps in place.  Per output pixel that is ``C*M*k^2`` MACs instead of ``D*M*k^2 + C*k^4`` (N = C/D
        outputs per group); ``folds_fc`` decides (PVT's and Swin's first stages, ResNet's 4 heads).
        ``fc``'s bias, zero-padded by the shift like the rest of ``fc``'s output, becomes a fixed (C, H, W) map.
        Not folded, ``fc`` is a batched GEMM whose output the kernel reads in place (no layout copy).

        Args:
            maps: (B, M, D, H*W), the M = 3 * heads Stage I maps of D channels each (``fc``'s input).
            fc_weight: (k^2, M, 1, 1); fc_bias: (k^2,) or None.
            height, width: H and W.

        Returns:
            (B, C, ceil(H/stride), ceil(W/stride)), equal to the unfolded computation.
        """
        b, m, d, _ = maps.shape
        if not self._kernel_runs(maps):
            return self.unfolded_conv_path(maps, fc_weight, fc_bias, height, width)
        if not self.folds_fc(m):
            # fc as one GEMM per image, (k^2, M) @ (M, D*H*W), bias included (baddbmm; its backward takes the
            # transposed operands in place: fwd+bwd 1.2x faster than the 1x1 conv, ~3x faster than a broadcast
            # matmul at Swin's shapes), its (B, k^2, D, H*W) output read by the kernel in place as (B, D, k^2, H, W)
            taps = fc_weight.shape[0]
            fc_w = fc_weight.view(1, taps, m).expand(b, -1, -1)
            flat = maps.reshape(b, m, -1)
            f = torch.bmm(fc_w, flat) if fc_bias is None else torch.baddbmm(fc_bias.view(1, taps, 1), fc_w, flat)
            x = f.view(b, taps, d, height, width).transpose(1, 2)
            return torch.ops.acmix.shift_conv_fwd(x, self.weight, self.dilation[0], self.stride[0])
        weight = torch.einsum('ojab,jm->omab', self.weight, fc_weight[:, :, 0, 0])  # (C, M, k, k)
        x = maps.view(b, m, d, height, width).transpose(1, 2)                       # (B, D, M, H, W), a view
        out = torch.ops.acmix.shift_conv_fwd(x, weight, self.dilation[0], self.stride[0])
        if fc_bias is not None:
            bias_kernel = torch.einsum('ojab,j->oab', self.weight, fc_bias).unsqueeze(1)   # (C, 1, k, k)
            ones = maps.new_ones(1, 1, height, width)
            # in place: the kernel's output is fresh and its backward does not read it
            out = out.add_(F.conv2d(ones, bias_kernel, None, self.stride, self.padding, self.dilation))  # (1, C, Ho, Wo)
        return out

    def tokens_conv_path(self, tokens: torch.Tensor, fc_weight: torch.Tensor, fc_bias: Optional[torch.Tensor],
                         batch: int, height: int, width: int, window_h: int, window_w: int, crop_h: int,
                         crop_w: int) -> torch.Tensor:
        """``ShiftPath.tokens_conv_path``; unfolded on the C++ kernel (and uncropped), ``fc`` reads the tokens.

        ``acmix.kernels.layout.tokens_fc_to_planes`` computes ``fc`` per token and writes the (B, D, k^2, H, W) planes
        the kernel reads, so neither the (B, M*D, H, W) maps nor ``fc``'s own output layout are ever built; its
        backward writes the token gradient in token order.  Otherwise (fc folded, a crop, no kernel) the planar path.
        """
        m = fc_weight.shape[1]
        if crop_h != height or crop_w != width or not self._kernel_runs(tokens) or self.folds_fc(m):
            return self.planar_conv_path(tokens, fc_weight, fc_bias, batch, height, width, window_h, window_w, crop_h,
                                         crop_w)
        taps = fc_weight.shape[0]
        bias = fc_weight.new_zeros(taps) if fc_bias is None else fc_bias
        # in the tokens' dtype, as autocast runs fc (a custom op is not autocast): under bf16/fp16 autocast the
        # planes and their gradient stay in one dtype
        weight, bias = fc_weight.view(taps, m).to(tokens.dtype), bias.to(tokens.dtype)
        f = tokens_fc_to_planes(tokens, weight, bias, batch, height, width, window_h, window_w)
        return torch.ops.acmix.shift_conv_fwd(f, self.weight, self.dilation[0], self.stride[0])


def build_dep_conv(shift: str, head_dim: int, out_planes: int, kernel_size: int, stride: int = 1,
                   dilation: int = 1) -> nn.Module:
    """Build the shift-and-sum module ``dep_conv`` for one of ``SHIFT_MODES``, shift-initialised.

    Padding is derived from ``kernel_size`` and ``dilation`` (the authors hard-coded ``padding=1`` and ignored
    dilation), and there is no bias (the authors' ``dep_conv.bias`` was set to None by their init).

    Returns:
        A module mapping (B, head_dim*k^2, H, W) -> (B, out_planes, ceil(H/stride), ceil(W/stride)).
    """
    check_choice('shift', shift, SHIFT_MODES)
    if shift == 'group_conv':
        conv = ShiftGroupConv(kernel_size * kernel_size * head_dim, out_planes, kernel_size, stride=stride,
                              padding=dilation * (kernel_size - 1) // 2, dilation=dilation, groups=head_dim,
                              bias=False)
        shift_kernel_(conv.weight)
        return conv
    if shift == 'tensor':
        return TensorShift(head_dim, out_planes, kernel_size, stride, dilation)
    return ShiftConv(head_dim, out_planes, kernel_size, stride, dilation, learnable=shift == 'shift_init')


def build_conv_path(num_maps: int, head_dim: int, out_planes: int, kernel_size: int, shift: str, *,
                    fc_bias: bool, stride: int = 1, dilation: int = 1) -> tuple[nn.Conv2d, nn.Module]:
    """The convolution path's layers ``(fc, dep_conv)``.

    ``fc`` is the light fully connected layer over the ``num_maps`` Stage I maps (3 * heads: q, k, v per head)
    giving k^2 maps, shared across the ``head_dim`` channels (3N -> k^2, the authors' issue #5); ``dep_conv``
    is the shift-and-sum of ``build_dep_conv``.  The authors' ResNet ``fc`` has no bias, their Swin ``fc`` has one.
    """
    fc = nn.Conv2d(num_maps, kernel_size * kernel_size, kernel_size=1, bias=fc_bias)
    return fc, build_dep_conv(shift, head_dim, out_planes, kernel_size, stride, dilation)


def reset_dep_conv(dep_conv: nn.Module) -> None:
    """Re-apply the shift initialisation to a module made by ``build_dep_conv`` (no-op for ``'tensor'``)."""
    if isinstance(dep_conv, nn.Conv2d):
        shift_kernel_(dep_conv.weight)
    elif isinstance(dep_conv, ShiftConv):
        dep_conv.reset_parameters()


class RateMixer:
    """Mixin holding ``rate1`` (alpha, attention) and ``rate2`` (beta, convolution) and combining the paths.

    ``mix='learnable'``: parameters initialised to 0.5 (authors); ``'fixed'``: non-persistent buffers equal to 1;
    ``'attn_only'`` / ``'conv_only'``: no rates, the single path is returned unscaled.

    ``has_attn`` / ``has_conv`` are TorchScript constants, so a scripted module compiles only the paths it has.
    """

    __constants__ = ('has_attn', 'has_conv')

    def _init_rates(self, mix: str) -> None:
        self.mix = mix
        self.has_attn = mix != 'conv_only'
        self.has_conv = mix != 'attn_only'
        if mix == 'learnable':
            self.rate1 = nn.Parameter(torch.full((1,), 0.5))
            self.rate2 = nn.Parameter(torch.full((1,), 0.5))
        elif mix == 'fixed':
            self.register_buffer('rate1', torch.ones(1), persistent=False)
            self.register_buffer('rate2', torch.ones(1), persistent=False)

    @torch.no_grad()
    def _reset_rates(self) -> None:
        if self.mix == 'learnable':
            self.rate1.fill_(0.5)
            self.rate2.fill_(0.5)

    def _fc_params(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``self.fc``'s weight and bias, times ``rate2`` when the module mixes both paths (no module argument:
        TorchScript types each Conv2d instance apart).

        The conv path is linear in ``fc``'s output (``dep_conv`` has no bias), so ``rate2 * dep_conv(fc(x))`` is
        ``dep_conv(fc'(x))`` with ``fc' = rate2 * fc``: scaling the (k^2, 3N) weight instead of the (B, C, H, W)
        output saves a full-size multiply in forward and two in backward (``rate2``'s gradient included)."""
        weight, bias = self.fc.weight, self.fc.bias
        if not (self.has_attn and self.has_conv):
            return weight, bias
        rate = self.rate2.to(weight.dtype)
        return weight * rate, None if bias is None else bias * rate

    def _mix(self, out_att: torch.Tensor | None, out_conv: torch.Tensor | None) -> torch.Tensor:
        """``rate1 * out_att + out_conv`` (``out_conv`` carries ``rate2``: the conv path ran on ``_fc_params``), or
        the one path the module has (None for the other).  The token flavours, whose attention ends in ``proj``,
        mix inside ``proj``'s GEMM (``TokenRateMixer._project_mix``) where both paths cover the same tokens."""
        if not self.has_conv:
            assert out_att is not None
            return out_att
        assert out_conv is not None
        if not self.has_attn:
            return out_conv
        assert out_att is not None
        # in place, one pass and no new (B, C, H, W) tensor: every conv path returns a fresh tensor whose backward does
        # not read it; the scalar is cast so that a bf16/fp16 path is not promoted to float32
        return out_conv.addcmul_(self.rate1.to(out_att.dtype), out_att)


class TokenRateMixer(RateMixer):
    """``RateMixer`` for the token flavours (Swin windows, PVT spatial reduction), which share their Stage II layers:
    the attention path ends in ``attn_drop`` (its probabilities) and the ``proj`` Linear, the convolution path mixes
    the 3 * heads q / k / v maps, and ``proj_drop`` follows the mix."""

    def _project_mix(self, attn: torch.Tensor, out_conv: Optional[torch.Tensor]) -> torch.Tensor:
        """``rate1 * proj(attn) + out_conv`` as one GEMM, or ``proj(attn)`` when ``out_conv`` is None.

        ``rate1`` scales ``proj``'s (C, C) weight and bias instead of its (..., C) output, and the conv path's
        output is the GEMM's accumulator (``torch.addmm``): no full-size multiply or add in forward, none in
        backward (``out_conv``'s gradient is the output's, ``rate1``'s comes from the small weight), and the
        attention output is not kept for ``rate1``'s gradient.  ``proj``'s parameters are used directly, so its
        own forward (and any hook on it) does not run on this path.

        Args:
            attn: (..., C) attention output before ``proj`` (heads concatenated).
            out_conv: (..., C) conv path output (carrying ``rate2``) in the same token order, or None.
        """
        if self.has_conv:  # a TorchScript constant: attn_only modules have no rate1
            if out_conv is not None:
                c = attn.shape[-1]
                rate = self.rate1.to(self.proj.weight.dtype)
                out = torch.addmm(out_conv.reshape(-1, c), attn.reshape(-1, c), (self.proj.weight * rate).t())
                bias = self.proj.bias
                if bias is not None:
                    out = out.add_(bias * rate)  # in place: addmm's backward does not read its output
                return out.view(attn.shape)
        return self.proj(attn)

    def _init_stage2(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float) -> None:
        """``attn_drop``, ``proj`` (with attention), ``fc`` (3N -> k_c^2, with bias, as in the authors' Swin),
        ``dep_conv`` (with convolution), ``proj_drop``; after ``_init_rates`` and setting ``head_dim``,
        ``kernel_conv`` and ``shift``."""
        if self.has_attn:
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
        if self.has_conv:
            self.fc, self.dep_conv = build_conv_path(3 * num_heads, self.head_dim, dim, self.kernel_conv, self.shift,
                                                     fc_bias=True)
        self.proj_drop = nn.Dropout(proj_drop)
