"""Parameter and MAC counts (the paper's "FLOPs" are multiply-accumulates) for any model.

``count_macs`` runs one forward pass under ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix
products and convolutions (``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``convolution``, the SDPA kernels) and reports
2 FLOPs per MAC; we report MACs.  Not counted (by us, the counter, or the paper's tables): normalisation,
activations, softmax, residual adds, pooling, and the elementwise ``rate1 * attn + rate2 * conv`` mix.

The counter knows nothing about a few kernels that do real multiply-accumulate work, so they get formulas here
(passed as ``custom_mapping``, nothing is registered globally):

* ``acmix::local_attention_fwd`` (the fast custom op of ACmix's SASA-style local attention): for output
  ``(B, G*D, Ho, Wo)`` and window ``K``, ``B*G*D*K^2*Ho*Wo`` MACs for the logits ``q . k`` plus as many for the
  weighted sum of values.  The query scaling and the positional term (``k - pe``), applied by the kernel as it
  reads, are not counted.
* ``acmix::shift_conv_fwd`` (the C++ kernel of ``dep_conv``, ``acmix.kernels.shift_conv``): the grouped conv it
  computes, ``B * C_out * (M input planes per group) * k^2 * H * W`` MACs (M = k^2 for ``dep_conv``).
* ``acmix::tokens_fc_to_planes`` (Swin's unfolded ``fc``, read from the Stage I tokens,
  ``acmix.kernels.layout``): ``fc`` as the 1x1 conv it is, ``(B * D * k^2 * H * W outputs) * M`` MACs.
* ``aten._scaled_dot_product_flash_attention_for_cpu`` (the CPU SDPA kernel of the ``'global'`` and PVT
  attentions): same formula as the CUDA SDPA kernels, ``2 * B*h*L*S*d`` MACs.
* ``aten.addcmul`` / ``aten.addcmul_`` of two maps: one MAC per output element.  SAN's patchwise aggregation
  (``acmix.patchwise`` loop path) is ``K^2`` of these per output.  With a one-element factor it is ACmix's mix
  (``conv + rate1 * attn``, in place), which is not counted.

Counts are of the model as defined, with ``fc`` and ``dep_conv`` counted separately as in the paper:
``ShiftGroupConv.fold_fc`` (which runs the two as one kernel when that is cheaper) is off while counting.
Counts are for the default implementation (``impl='auto'``).  ``impl='reference'`` paths do their window sums with
elementwise multiply + sum, which no counter sees: count with the default path.
"""
import math
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from acmix.conv_path import ShiftGroupConv

__all__ = ['count_params', 'count_macs', 'mac_formulas']


def _local_attention_flops(qkv_shape, key_bias_shape, heads, kernel_size, *args, out_shape=None, **kwargs) -> int:
    b, c, ho, wo = out_shape[0]  # c = G * D
    return 2 * (2 * b * c * kernel_size * kernel_size * ho * wo)  # FLOPs = 2 * MACs


def _shift_conv_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    c_out, taps, k, _ = w_shape
    b, _, h, w = out_shape
    return 2 * b * c_out * taps * k * k * h * w  # FLOPs = 2 * MACs


def _tokens_fc_flops(tokens_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(out_shape) * w_shape[1]  # FLOPs = 2 * MACs


def _sdpa_cpu_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


def _addcmul_flops(self_shape, t1_shape, t2_shape, *args, out_shape=None, **kwargs) -> int:
    if math.prod(t1_shape) == 1 or math.prod(t2_shape) == 1:  # a scalar times a map: ACmix's mix, not counted
        return 0
    return 2 * math.prod(self_shape)


def mac_formulas() -> Dict[Any, Any]:
    """Extra ``FlopCounterMode`` formulas (FLOPs) for ops the counter does not know; see the module docstring."""
    table = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
        torch.ops.aten.addcmul: _addcmul_flops,
        torch.ops.aten.addcmul_: _addcmul_flops,
    }
    import acmix.kernels  # noqa: F401  (defines the acmix:: custom ops)
    import acmix.kernels.shift_conv  # noqa: F401
    if hasattr(torch.ops.acmix, 'local_attention_fwd'):
        table[torch.ops.acmix.local_attention_fwd] = _local_attention_flops
    table[torch.ops.acmix.shift_conv_fwd] = _shift_conv_flops
    table[torch.ops.acmix.tokens_fc_to_planes] = _tokens_fc_flops
    return table


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(
        model: nn.Module,
        input_size: Tuple[int, int, int] = (3, 224, 224),
        per_op: bool = False,
) -> Any:
    """MACs of one forward pass of one image.

    Args:
        model: any module taking ``(1, *input_size)``; put in eval mode for the count and restored afterwards.
        input_size: ``(C, H, W)``.
        per_op: also return ``{op name: MACs}``.

    Returns:
        total MACs (int), or ``(total, {op: MACs})`` if ``per_op``.
    """
    was_training = model.training
    model.eval()
    p = next(model.parameters(), None)
    x = torch.zeros(1, *input_size, device=p.device if p is not None else None,
                    dtype=p.dtype if p is not None else None)
    folding = [m for m in model.modules() if isinstance(m, ShiftGroupConv) and m.fold_fc]
    try:
        for m in folding:
            m.fold_fc = False
        with FlopCounterMode(display=False, custom_mapping=mac_formulas()) as counter:
            model(x)
    finally:
        model.train(was_training)
        for m in folding:
            m.fold_fc = True
    total = counter.get_total_flops() // 2
    if not per_op:
        return total
    return total, {str(k): v // 2 for k, v in counter.get_flop_counts()['Global'].items()}
