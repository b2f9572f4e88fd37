"""Patchwise (vector) self-attention of SAN, the attention path of ``ACmix(attn_mode='patchwise')``.

Zhao, Jia and Koltun, "Exploring Self-attention for Image Recognition", CVPR 2020 (SAN).  For an output
pixel ``i`` with a ``K x K`` footprint ``R(i)`` SAN's patchwise operator computes

    y_i = sum_{j in R(i)}  gamma(phi(x_i), psi(x_R(i)))_j  (.)  beta(x_j)

where ``gamma`` is a small MLP that sees the query *and the whole patch of keys at once* and emits one weight
vector per footprint position (no softmax: SAN's patchwise weights are used as produced), and ``(.)`` is the
Hadamard product with weight sharing: one weight channel serves ``share_planes`` value channels.

Mapping onto ACmix's Stage I (the three 1x1 projections ``conv1, conv2, conv3``):
    q -> phi (query features), k -> psi (key features), v -> beta (value features).
``PatchwiseAttention`` is only gamma plus the aggregation; the projections live in the caller (ACmix's Stage I,
or SAN's own block in ``models/san.py``), so one class serves the baseline and the ACmix twin.

Heads.  SAN has no heads (``head=1`` reproduces it exactly, widths and channel order included).  With
``head = N`` the channels are split into N heads and gamma becomes N independent MLPs (grouped 1x1 convs): head
``h``'s weights are computed from head ``h``'s query and key patch only and applied to head ``h``'s values,
as in multi-head attention.  Within a head, value channel ``m * Wh + g`` uses weight channel ``g``
(``Wh`` = weight channels per head), which is SAN's ``c % weight_channels`` rule applied per head.

Widths (SAN: phi/psi ``rel_planes = in/16``, beta ``mid = in/4``, ``share_planes = 8``, gamma hidden width
``mid/8``).  Here ``qk_planes`` is the width of q and k (default: ``planes``), the weight channels per head are
``Wh = head_dim // share`` with ``share = min(share_planes, head_dim)`` (so narrow heads still work: at worst one
weight channel per head), and gamma's hidden width equals the number of weight channels, as in SAN.

Boundary convention: the same generalised reflection as every other ACmix window
(``acmix.kernels.indexing``): mirror without repeating the edge, period ``2(n-1)``, defined for any size down
to 1x1; identical to ``ReflectionPad2d`` wherever that works.  Queries are subsampled by ``stride`` (output
``ceil(H/stride) x ceil(W/stride)``) and dilation spaces the taps.

Implementations (``impl``): ``'reference'`` gathers the ``K*K`` value windows (readable, ``K*K`` times the
value memory); ``'loop'`` aggregates tap by tap with a hand-written backward, so neither forward nor backward
stores per-tap value tensors, and in inference (eval mode, no autograd) it also builds gamma's first layer tap by
tap; ``'auto'`` = ``'loop'``.  In training gamma's input, ``qk_planes * (K*K + 1)`` channels per output pixel, is
materialised (its BatchNorm needs batch statistics per tap), as in SAN's own code, whose CUDA kernels cover the
aggregation only.

TorchScript: the module scripts; the window indices (cached per size) and the aggregation (a custom autograd
Function) run as Python inside it (``torch.jit.ignore``).
"""
import torch
import torch.nn as nn

from .kernels.indexing import check_window_args, out_size, window_index

__all__ = ['PatchwiseAttention', 'patchwise_aggregate', 'IMPLS']

IMPLS = ('auto', 'reference', 'loop')


def _gather_windows(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., K*K, Ho, Wo): tap ``a*K + b`` of pixel (i, j) is ``x[..., rows[i, a], cols[j, b]]``."""
    lead = list(x.shape[:-2])
    ho, kk, wo = rows.shape[0], rows.shape[1], cols.shape[0]
    x = x.reshape(-1, x.shape[-2], x.shape[-1])                        # (L, H, W)
    win = x[:, rows[:, :, None, None], cols[None, None, :, :]]         # (L, Ho, K, Wo, K)
    return win.permute(0, 2, 4, 1, 3).reshape(lead + [kk * kk, ho, wo])


def _aggregate_reference(v: torch.Tensor, w: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """v (G, S, Wh, H, W), w (G, Wh, K*K, Ho, Wo) -> (G, S, Wh, Ho, Wo) by explicit window gathering."""
    v_win = _gather_windows(v, rows, cols)                             # (G, S, Wh, K*K, Ho, Wo)
    return (v_win * w.unsqueeze(1)).sum(3)


class _LoopAggregate(torch.autograd.Function):
    """Tap-by-tap aggregation; saves only ``v`` and ``w`` (no per-tap tensors) for its hand-written backward."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, w: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        g, s, wh = v.shape[:3]
        (ho, kk), wo = rows.shape, cols.shape[0]
        out = v.new_zeros(g, s, wh, ho, wo)
        for a in range(kk):
            v_rows = v.index_select(3, rows[:, a])                     # (G, S, Wh, Ho, W)
            for b in range(kk):
                out.addcmul_(w[:, None, :, a * kk + b], v_rows.index_select(4, cols[:, b]))
        ctx.save_for_backward(v, w, rows, cols)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        v, w, rows, cols = ctx.saved_tensors
        kk = rows.shape[1]
        grad_v = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.empty_like(w)
        if ctx.needs_input_grad[0]:
            grad_v = torch.zeros_like(v)
        for a in range(kk):
            v_rows = v.index_select(3, rows[:, a]) if grad_w is not None else None
            # scatter one window row's taps along W, then once along H (index_add_ sums repeated reflections)
            grad_v_rows = v.new_zeros(*v.shape[:3], rows.shape[0], v.shape[4]) if grad_v is not None else None
            for b in range(kk):
                t = a * kk + b
                if grad_w is not None:
                    grad_w[:, :, t] = (grad_out * v_rows.index_select(4, cols[:, b])).sum(1)
                if grad_v_rows is not None:
                    grad_v_rows.index_add_(4, cols[:, b], grad_out * w[:, None, :, t])
            if grad_v is not None:
                grad_v.index_add_(3, rows[:, a], grad_v_rows)
        return grad_v, grad_w, None, None


@torch.jit.ignore
def patchwise_aggregate(v: torch.Tensor, w: torch.Tensor, kernel_size: int, dilation: int = 1, stride: int = 1,
                        impl: str = 'auto') -> torch.Tensor:
    """Weighted sum of each pixel's reflected ``K x K`` value window with per-pixel, per-tap weights.

    Args:
        v: (G, S, Wh, H, W) values: ``G`` = batch * heads, ``S`` value channels share each of the ``Wh`` weight
            channels.
        w: (G, Wh, K*K, Ho, Wo) weights, ``Ho = ceil(H / stride)``, ``Wo = ceil(W / stride)``; tap ``a*K + b`` is
            row offset ``dilation * (a - K//2)``, column offset ``dilation * (b - K//2)``.
        kernel_size, dilation, stride: window geometry.
        impl: ``'reference'`` | ``'loop'`` | ``'auto'``.

    Returns:
        (G, S, Wh, Ho, Wo).
    """
    check_window_args(kernel_size, dilation, stride)
    if impl not in IMPLS:
        raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')
    h, wd = v.shape[-2:]
    ho, wo = out_size(h, stride), out_size(wd, stride)
    expected = (v.shape[0], v.shape[2], kernel_size ** 2, ho, wo)
    if v.dim() != 5 or tuple(w.shape) != expected:
        raise ValueError(f'weights must be (G, Wh, K*K, Ho, Wo) = {expected} for values {tuple(v.shape)}, '
                         f'got {tuple(w.shape)}')
    rows = window_index(h, kernel_size, dilation, stride, v.device)      # (Ho, K)
    cols = window_index(wd, kernel_size, dilation, stride, v.device)     # (Wo, K)
    w = w.to(v.dtype)
    if impl == 'reference':
        return _aggregate_reference(v, w, rows, cols)
    return _LoopAggregate.apply(v.contiguous(), w.contiguous(), rows, cols)


@torch.jit.ignore
@torch.compiler.assume_constant_result  # ints in, cached tensors out: constants to Dynamo (it cannot trace the cache)
def _window_rows_cols(height: int, width: int, kernel_size: int, dilation: int, stride: int,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Window tap indices along H and W, (Ho, K) and (Wo, K): ``window_index``, cached per size."""
    return (window_index(height, kernel_size, dilation, stride, device),
            window_index(width, kernel_size, dilation, stride, device))


class PatchwiseAttention(nn.Module):
    """SAN patchwise attention core: gamma (weights from query + key patch) and the aggregation over values.

    Args:
        planes: width of v and of the output (SAN's ``out_planes`` / ``mid_planes``).
        head: number of heads N; gamma is N independent MLPs (``head=1`` is SAN).
        kernel_att: odd footprint size K.
        stride: query subsampling (output ``ceil(H/stride) x ceil(W/stride)``).
        dilation: spacing of the footprint taps.
        qk_planes: width of q and k (SAN: ``rel_planes = in/16``); defaults to ``planes`` (ACmix's Stage I).
        share_planes: value channels per weight channel (SAN: 8), clipped to the head dim.
        impl: ``'auto'`` | ``'loop'`` | ``'reference'`` (see the module docstring).

    Parameters (names follow SAN's ``conv_w``): ``conv_w.0`` BN over gamma's input, ``conv_w.2`` 1x1 conv
    ``qk_planes*(K*K+1) -> hidden`` (no bias), ``conv_w.3`` BN, ``conv_w.5`` 1x1 conv ``hidden -> K*K * weight
    channels`` (bias); both convs have ``groups=head``.
    """

    def __init__(self, planes: int, head: int, kernel_att: int = 7, stride: int = 1, dilation: int = 1, *,
                 qk_planes: int | None = None, share_planes: int = 8, impl: str = 'auto') -> None:
        super().__init__()
        check_window_args(kernel_att, dilation, stride)
        qk_planes = planes if qk_planes is None else qk_planes
        for name, val in (('planes', planes), ('qk_planes', qk_planes)):
            if val < 1 or val % head:
                raise ValueError(f'{name} {val} must be a positive multiple of head {head}')
        if head < 1 or share_planes < 1:
            raise ValueError(f'head {head} and share_planes {share_planes} must be >= 1')
        if impl not in IMPLS:
            raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')
        head_dim = planes // head
        self.share = min(share_planes, head_dim)
        if head_dim % self.share:
            raise ValueError(f'head dim {head_dim} (planes {planes} / head {head}) must be divisible by '
                             f'share_planes {self.share}')
        self.planes, self.qk_planes, self.head = planes, qk_planes, head
        self.kernel_att, self.stride, self.dilation, self.impl = kernel_att, stride, dilation, impl
        self.weight_planes = head * (head_dim // self.share)         # total weight channels (SAN: planes/share)
        kk = kernel_att ** 2
        in_w = qk_planes * (kk + 1)
        self.conv_w = nn.Sequential(
            nn.BatchNorm2d(in_w), nn.ReLU(inplace=True),
            nn.Conv2d(in_w, self.weight_planes, kernel_size=1, groups=head, bias=False),
            nn.BatchNorm2d(self.weight_planes), nn.ReLU(inplace=True),
            nn.Conv2d(self.weight_planes, kk * self.weight_planes, kernel_size=1, groups=head),
        )

    def extra_repr(self) -> str:
        return (f'planes={self.planes}, qk_planes={self.qk_planes}, head={self.head}, kernel_att={self.kernel_att}, '
                f'stride={self.stride}, dilation={self.dilation}, share={self.share}, impl={self.impl!r}')

    def weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """gamma: (B, qk, H, W) x2 -> weights (B, weight_planes, K*K, Ho, Wo)."""
        b, _, h, w = q.shape
        n, kk = self.head, self.kernel_att * self.kernel_att  # int (TorchScript's int ** int is a float)
        rows, cols = _window_rows_cols(h, w, self.kernel_att, self.dilation, self.stride, q.device)  # (Ho|Wo, K)
        ho, wo = rows.shape[0], cols.shape[0]
        q_s = q[:, :, ::self.stride, ::self.stride].reshape(b, n, -1, ho, wo)          # (B, N, dq, Ho, Wo)
        if (not torch.jit.is_scripting() and self.impl != 'reference' and not self.training
                and not torch.is_grad_enabled()):
            hidden = self._first_layer_by_tap(q_s, k, rows, cols)                      # (B, hidden, Ho, Wo)
            return self.conv_w[3:](hidden).reshape(b, self.weight_planes, kk, ho, wo)
        k_win = _gather_windows(k, rows, cols).reshape(b, n, -1, ho, wo)               # (B, N, dq*K*K, Ho, Wo)
        # per head: [query channels, key patch channel-major (c*K*K + tap)]; head=1 is SAN's channel order
        feat = torch.cat([q_s, k_win], dim=2).reshape(b, -1, ho, wo)                   # (B, qk*(K*K+1), Ho, Wo)
        return self.conv_w(feat).reshape(b, self.weight_planes, kk, ho, wo)

    @torch.jit.unused  # TorchScript hides the BatchNorm's eps it reads: scripted modules take the other path
    def _first_layer_by_tap(self, q_s: torch.Tensor, k: torch.Tensor, rows: torch.Tensor,
                            cols: torch.Tensor) -> torch.Tensor:
        """Inference-only (eval BN, no autograd) gamma layers 0-2, one key tap at a time.

        BN (running statistics), ReLU and the grouped 1x1 conv act channel by channel, so the conv over
        ``[q, k patch]`` is a sum of one term for the query and one per tap: only a (B, qk, Ho, W) row gather is
        alive at a time instead of the (B, qk*(K*K+1), Ho, Wo) input.

        Args:
            q_s: (B, N, dq, Ho, Wo) strided queries; k: (B, qk, H, W); rows (Ho, K), cols (Wo, K): tap indices.

        Returns:
            (B, hidden, Ho, Wo), the output of ``conv_w[2]``.
        """
        bn, conv = self.conv_w[0], self.conv_w[2]
        b, n, dq, ho, wo = q_s.shape
        kdim = rows.shape[1]
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)                       # (qk*(K*K+1),)
        shift = (bn.bias - bn.running_mean * scale).reshape(n, -1)
        scale = scale.reshape(n, -1)                                                   # (N, dq*(K*K+1))
        wgt = conv.weight.reshape(n, -1, dq * (kdim * kdim + 1))                       # (N, hid_h, dq*(K*K+1))
        norm_q = torch.relu(q_s * scale[:, :dq, None, None] + shift[:, :dq, None, None])
        out = torch.einsum('nod,bndhw->bnohw', wgt[..., :dq], norm_q)                 # (B, N, hid_h, Ho, Wo)
        scale_k = scale[:, dq:].reshape(n, dq, -1)                                     # (N, dq, K*K)
        shift_k = shift[:, dq:].reshape(n, dq, -1)
        wgt_k = wgt[..., dq:].reshape(n, wgt.shape[1], dq, -1)                         # (N, hid_h, dq, K*K)
        for a in range(kdim):
            k_rows = k.index_select(2, rows[:, a])                                     # (B, qk, Ho, W)
            for c in range(kdim):
                t = a * kdim + c
                k_t = k_rows.index_select(3, cols[:, c]).reshape(b, n, dq, ho, wo)
                z = torch.relu(k_t * scale_k[..., t, None, None] + shift_k[..., t, None, None])
                out += torch.einsum('nod,bndhw->bnohw', wgt_k[..., t], z)
        return out.reshape(b, -1, ho, wo)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Args: q, k (B, qk_planes, H, W), v (B, planes, H, W).  Returns (B, planes, ceil(H/s), ceil(W/s))."""
        if q.dim() != 4 or k.shape != q.shape or q.shape[1] != self.qk_planes:
            raise ValueError(f'q and k must both be (B, {self.qk_planes}, H, W), got q {list(q.shape)}, '
                             f'k {list(k.shape)}')
        if v.dim() != 4 or v.shape[0] != q.shape[0] or v.shape[1] != self.planes or v.shape[2:] != q.shape[2:]:
            raise ValueError(f'v must be (B, {self.planes}, H, W) matching q {list(q.shape)}, got {list(v.shape)}')
        b, _, h, w = v.shape
        n, wh = self.head, self.weight_planes // self.head
        wgt = self.weights(q, k)                                                       # (B, Wc, K*K, Ho, Wo)
        wgt = wgt.reshape(b * n, wh, wgt.shape[2], wgt.shape[3], wgt.shape[4])         # (B*N, Wh, K*K, Ho, Wo)
        vv = v.reshape(b * n, self.share, wh, h, w)                                    # (B*N, S, Wh, H, W)
        impl = 'loop' if self.impl == 'auto' else self.impl
        out = patchwise_aggregate(vv, wgt, self.kernel_att, self.dilation, self.stride, impl)
        return out.reshape(b, self.planes, out.shape[-2], out.shape[-1])
