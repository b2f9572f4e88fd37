"""Swin-ACmix, on timm's ``SwinTransformer``.

Paper: Pan et al., "On the Integration of Self-Attention and Convolution", CVPR 2022 (ACmix), Sec. 4.1: Swin-T/S
whose window attention is replaced by ACmix (shared qkv projection, shifted-window attention with relative
position bias, plus a conv path: ``fc`` 3N->9 and a shift-initialised group conv).  Released weights
(``{'model': state_dict}``, original Swin layout) load through timm's file mechanism.

Design: timm builds the whole network (patch embed, stages, merging, head, feature_info, forward_intermediates);
only the token mixer differs.  ``mixer='attn'`` is exactly timm's ``SwinTransformer`` (the baselines are timm's own
``swin_tiny_patch4_window7_224`` / ``swin_small_patch4_window7_224``); ``mixer='acmix'`` swaps each block's
``attn`` for ``acmix.ACmixWindowAttention``.  Its conv path needs the full (rolled) feature map, not windows, so the
block's ``_attn`` hands it the whole ``(B, H, W, C)`` map with the shift and mask; the operator does roll, conv
path, padding, partition, masked attention, reverse, crop, mix and the reverse roll itself.

Window rule, ``window_rule='classification'`` (default; the authors' code and timm): a stage whose feature map is
not larger than the window uses the map size as window and no shift; at 224x224 the last stage (7x7, window 7)
therefore never shifts.  The rule is fixed by ``img_size`` at construction.  With ``strict_img_size=False`` (our
entrypoints' default) any input size is accepted: maps are rolled, then padded to window multiples (timm's order),
and the shift masks are built per forward for the padded size.

``window_rule='detection'`` is the backbone of Swin's detection and segmentation code
(SwinTransformer/Swin-Transformer-Object-Detection ``mmdet/models/backbones/swin_transformer.py``; mmdet's
``SwinTransformer`` is its port): every block keeps the full window and every odd block shifts by window // 2
whatever the map size, maps are padded to window multiples *before* the roll, and the mask is built per forward
for the padded size.  Both mixers then run their window step through ``ACmixWindowAttention(pad_first=True)``
(``mixer='attn'`` as ``mix='attn_only'``: the parameters of timm's ``WindowAttention``, key for key).  That code
also puts a LayerNorm on every output stage: ``models.mm_backbone.ACmixBackbone(out_norm=True)`` adds it.
"""
from functools import partial
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import PatchEmbed
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._manipulate import named_apply
from timm.models.swin_transformer import (
    SwinTransformer, SwinTransformerBlock, checkpoint_filter_fn as _timm_swin_filter)
from timm.models.vision_transformer import get_init_weights_vit

from acmix import ACmixWindowAttention

from ._checkpoint import filter_state_dict

__all__ = ['ACmixSwinTransformerBlock', 'ACmixSwinTransformer']

_MIXERS = ('attn', 'acmix')
_WINDOW_RULES = ('classification', 'detection')
_SWIN_ARGS = dict(patch_size=4, window_size=7, embed_dim=96, num_heads=(3, 6, 12, 24), strict_img_size=False,
                  mixer='acmix')
_MODEL_ARGS = {  # per entrypoint (end of file); the caller's keyword arguments override them
    'acmix_swin_tiny_patch4_window7_224': dict(_SWIN_ARGS, depths=(2, 2, 6, 2), drop_path_rate=0.2),
    'acmix_swin_small_patch4_window7_224': dict(_SWIN_ARGS, depths=(2, 2, 18, 2), drop_path_rate=0.3),
}


class ACmixSwinTransformerBlock(SwinTransformerBlock):
    """timm's Swin block whose mixer sees the full ``(B, H, W, C)`` map.

    Adds no state to ``SwinTransformerBlock``: only ``_attn`` changes.  timm's stages instantiate
    ``SwinTransformerBlock`` by name, so ``ACmixSwinTransformer`` builds them with timm and then re-types each block
    to this class after replacing its ``attn`` (exact, since nothing is added).
    """

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C) -> (B, H, W, C)``: roll, conv path, pad, windows, mask, mix, unroll, all in ``attn``.

        With ``dynamic_mask`` (no precomputed ``attn_mask``) the operator builds the shift mask for the padded
        map itself (``acmix.window.shifted_window_mask``, equal to timm's ``get_attn_mask``), inside the FX leaf.
        """
        return self.attn(x, shift_size=self.shift_size, attn_mask=self.attn_mask)


class ACmixSwinTransformer(SwinTransformer):
    """timm ``SwinTransformer`` with a choice of token mixer (one class for Swin and Swin-ACmix).

    Args:
        mixer: ``'attn'`` (plain Swin: timm's ``WindowAttention``, or ``ACmixWindowAttention(mix='attn_only')``
            under ``window_rule='detection'``) or ``'acmix'`` (``ACmixWindowAttention``).
        mixer_args: extra keyword arguments for ``ACmixWindowAttention`` (``kernel_conv``, ``mix``, ``shift``).
        window_rule: ``'classification'`` (timm's and the authors' windows and shifts, fixed from ``img_size``) or
            ``'detection'`` (Swin's detection/segmentation code: shift in every odd block at any size, pad before
            the roll; implies ``strict_img_size=False``); see the module docstring.
        dynamic_img_pad: pad inputs to a multiple of the patch size (default: on when ``strict_img_size=False``).
        **kwargs: timm ``SwinTransformer`` arguments (``img_size``, ``embed_dim``, ``depths``, ``num_heads``,
            ``window_size``, ``strict_img_size``, ``drop_path_rate``, ``weight_init``, ...).

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``; ``forward_features`` gives ``(B, H/32, W/32, C)`` (NHWC).
    """

    def __init__(
            self,
            mixer: str = 'acmix',
            mixer_args: Optional[Dict[str, Any]] = None,
            window_rule: str = 'classification',
            dynamic_img_pad: Optional[bool] = None,
            **kwargs: Any,
    ):
        if window_rule not in _WINDOW_RULES:
            raise ValueError(f'window_rule {window_rule!r} not in {_WINDOW_RULES}')
        if window_rule == 'detection':
            for key, value in (('strict_img_size', False), ('always_partition', True)):
                if kwargs.get(key, value) != value:
                    raise ValueError(f'window_rule="detection" needs {key}={value}, got {kwargs[key]}')
                kwargs[key] = value  # full windows and shifts at every stage, masks per forward
        if dynamic_img_pad is None:  # any input size: pad the image to a patch multiple too, not just windows
            dynamic_img_pad = not kwargs.get('strict_img_size', True) or kwargs.get('dynamic_img_size', False)
        if dynamic_img_pad:
            kwargs['embed_layer'] = partial(kwargs.get('embed_layer', PatchEmbed), dynamic_img_pad=True)
        if mixer not in _MIXERS:
            raise ValueError(f'mixer {mixer!r} not in {_MIXERS}')
        if mixer == 'attn' and mixer_args:
            raise ValueError(f'mixer_args {sorted(mixer_args)} given for mixer="attn"')
        if (mixer == 'acmix' or window_rule == 'detection') and kwargs.get('head_dim') is not None:
            raise ValueError(f'head_dim={kwargs["head_dim"]}: ACmixWindowAttention uses head_dim = dim // num_heads')
        super().__init__(**kwargs)
        self.mixer = mixer
        self.window_rule = window_rule
        if mixer == 'attn':
            if window_rule == 'classification':
                return
            mixer_args = dict(mix='attn_only')
        init_fn = None
        if kwargs.get('weight_init', '') != 'skip':
            # timm's init for the new modules: Linear trunc-normal(0.02); the operator's own init stays for its
            # conv path (shift-initialised dep_conv, rate1 = rate2 = 0.5), as in the authors' Swin.
            init_fn = get_init_weights_vit(self.weight_init_mode, needs_reset=False)
        for stage in self.layers:
            for blk in stage.blocks:
                old = blk.attn
                blk.attn = ACmixWindowAttention(
                    old.qkv.in_features,
                    old.num_heads,
                    window_size=blk.window_size,
                    qkv_bias=old.qkv.bias is not None,
                    attn_drop=old.attn_drop.p,
                    proj_drop=old.proj_drop.p,
                    pad_first=window_rule == 'detection',
                    **(mixer_args or {}),
                ).to(device=old.qkv.weight.device, dtype=old.qkv.weight.dtype)  # as timm's device/dtype kwargs
                if init_fn is not None:
                    named_apply(init_fn, blk.attn)
                blk.__class__ = ACmixSwinTransformerBlock


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Load the ACmix-Swin release ``{'model': sd}`` (original Swin layout), DDP-prefixed or timm-layout dicts.

    timm's Swin filter does the layout remap (downsample at stage end -> start, ``head`` -> ``head.fc``,
    relative-position-table resize); the shared helper unwraps first and checks every key afterwards.
    """
    return filter_state_dict(
        state_dict, model, drop=('relative_position_index', 'attn_mask'), convert=_timm_swin_filter)


def _cfg(url: str = '', **kwargs: Any) -> Dict[str, Any]:
    return {
        'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': .875, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head.fc', 'min_input_size': (3, 32, 32),
        'license': 'mit', 'paper_ids': 'arXiv:2111.14556', **kwargs,
    }


# The authors' release (Tsinghua cloud links in their README) is not fetched here: pass the downloaded file with
# pretrained_cfg_overlay=dict(file=PATH).  crop_pct 0.875 = their test transform (resize 256, centre crop 224).
default_cfgs = generate_default_cfgs({
    'acmix_swin_tiny_patch4_window7_224.in1k': _cfg(),
    'acmix_swin_small_patch4_window7_224.in1k': _cfg(),
})


def _create_swin(variant: str, pretrained: bool = False, **kwargs: Any) -> ACmixSwinTransformer:
    kwargs = dict(_MODEL_ARGS[variant], **kwargs)
    out_indices = kwargs.pop('out_indices', tuple(range(len(kwargs['depths']))))
    return build_model_with_cfg(
        ACmixSwinTransformer, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs)


@register_model
def acmix_swin_tiny_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> ACmixSwinTransformer:
    """Swin-T with ACmix (28,649,908 params); baseline: timm ``swin_tiny_patch4_window7_224``."""
    return _create_swin('acmix_swin_tiny_patch4_window7_224', pretrained, **kwargs)


@register_model
def acmix_swin_small_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> ACmixSwinTransformer:
    """Swin-S with ACmix (50,345,080 params); baseline: timm ``swin_small_patch4_window7_224``."""
    return _create_swin('acmix_swin_small_patch4_window7_224', pretrained, **kwargs)
