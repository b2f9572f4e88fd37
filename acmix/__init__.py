"""ACmix operator: self-attention and convolution sharing one set of 1x1 projections (Pan et al., CVPR 2022).

``ACmix`` works on (B, C, H, W) maps (local / patchwise / global attention), ``ACmixWindowAttention`` is the Swin
(shifted window) flavour on (B, H, W, C) and ``ACmixSRAttention`` the PVT v1 (spatial-reduction) flavour on
(B, N, C) tokens.  Every class takes ``mix=`` (``MIX_MODES``) and ``shift=`` (``SHIFT_MODES``).
"""
from .acmix import ACmix, ATTN_MODES, position_grid
from .conv_path import MIX_MODES, SHIFT_MODES
from .sr import ACmixSRAttention
from .window import ACmixWindowAttention, shifted_window_mask

__all__ = ['ACmix', 'ACmixSRAttention', 'ACmixWindowAttention', 'ATTN_MODES', 'MIX_MODES', 'SHIFT_MODES',
           'position_grid', 'shifted_window_mask']
