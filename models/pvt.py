"""PVT v1 (Pyramid Vision Transformer) and PVT-ACmix, on timm.

Papers: Wang et al., "Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without
Convolutions", ICCV 2021 (PVT v1; PVT-Tiny 13.2M, PVT-Small 24.5M params); Pan et al., "On the Integration of
Self-Attention and Convolution", CVPR 2022 (ACmix; PVT-T / PVT-S with ACmix: 13M / 25M, 2.0G / 3.9G FLOPs).
timm ships only PVT v2, and the ACmix authors never released their PVT code.

Architecture (facts from ``whai362/PVT`` ``classification/pvt.py``):
    * 4 stages; each starts with a non-overlapping patch embedding (conv, kernel = stride = 4, 2, 2, 2, then
      LayerNorm with eps 1e-5) and a learned absolute position embedding (trunc-normal, std 0.02) on its grid;
    * embed dims [64, 128, 320, 512], heads [1, 2, 5, 8], MLP ratios [8, 8, 4, 4], spatial-reduction ratios
      [8, 4, 2, 1], qkv bias; depths Tiny [2, 2, 2, 2], Small [3, 4, 6, 3];
    * pre-norm blocks (LayerNorm eps 1e-6): ``x + attn(norm1(x))``, ``x + mlp(norm2(x))`` (GELU MLP);
      spatial-reduction attention: keys/values from a ``sr x sr`` strided conv + LayerNorm of the tokens;
    * a final LayerNorm and a linear classifier.

Mixer (one ``Block`` class): ``mixer='attn'`` is ``acmix.ACmixSRAttention(mix='attn_only')``, exactly PVT v1's
attention (parameter names ``q, kv, proj, sr, norm``); ``mixer='acmix'`` is the same class with
``mix='learnable'`` (conv path: ``fc``, ``dep_conv``, ``rate1``, ``rate2``).  Everything else is shared.

Decisions where PVT v1 or the ACmix paper leave room:
    * No class token; global average pooling over the last stage's tokens (as timm's PVT v2).  PVT v1 prepends a
      class token in stage 4, but ACmix's conv path needs the tokens to form an ``H x W`` map, so both the
      baseline and the twin pool instead (1,024 parameters fewer than PVT v1: the token and its position entry).
    * Any input size: each patch embedding zero-pads its input on the right/bottom to a multiple of its patch
      size (timm ``PatchEmbed(dynamic_img_pad=True)``), so a stage has ``ceil`` of the previous size; this is
      PVT v1 exactly for sizes divisible by 32.  Position embeddings are stored for the 224 grid (56, 28, 14, 7)
      and resampled bilinearly (no antialias, PVT v1's own choice) to other grids with
      ``timm.layers.resample_abs_pos_embed``; the grid also follows ``img_size`` when given.
    * ``checkpoint_filter_fn`` maps PVT v1's released layout (``patch_embed{i}``, ``pos_embed{i}``,
      ``block{i}.{j}``, ``attn.*``, ``norm``, ``head``) onto ours; its class token and the token's position
      entry are dropped, so released PVT v1 weights load as a backbone (the head was trained on the class token).
    * Init as PVT v1: trunc-normal(0.02) for linear layers and position embeddings, LayerNorm 1/0; convolutions
      keep PyTorch's default (the ACmix conv path keeps its shift initialisation).
    * Counts (entrypoint docstrings): MACs = ``FlopCounterMode`` FLOPs / 2, measured under the math SDPA backend
      (the counter has no formula for the fused CPU attention kernel, which would silently count 0).
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import re

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, PatchEmbed, calculate_drop_path_rates, resample_abs_pos_embed, \
    to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint

from acmix import ACmixSRAttention

from ._checkpoint import filter_state_dict, unwrap_state_dict

__all__ = ['PVTBlock', 'PVTStage', 'PVT']

_MIXERS = {'attn': 'attn_only', 'acmix': 'learnable'}


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


class PVTBlock(nn.Module):
    """Pre-norm transformer block with spatial-reduction attention (one class for PVT and PVT-ACmix).

    Args:
        dim: token width C.
        num_heads, sr_ratio, mlp_ratio, qkv_bias: PVT v1 hyper-parameters.
        mixer: ``'attn'`` (PVT v1 attention = ``ACmixSRAttention(mix='attn_only')``) or ``'acmix'``
            (``mix='learnable'``).
        mixer_args: extra keyword arguments for ``ACmixSRAttention`` (``kernel_conv``, ``shift``, or ``mix`` to
            override the mixer's default, e.g. for the ``'fixed'`` / ``'conv_only'`` ablations).
        proj_drop, attn_drop, drop_path: dropout rates.

    Shapes: ``forward(x (B, H*W, C), H, W) -> (B, H*W, C)``.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, mlp_ratio: float = 4., qkv_bias: bool = True,
                 mixer: str = 'attn', mixer_args: Optional[Dict[str, Any]] = None, proj_drop: float = 0.,
                 attn_drop: float = 0., drop_path: float = 0.) -> None:
        super().__init__()
        if mixer not in _MIXERS:
            raise ValueError(f'mixer {mixer!r} not in {tuple(_MIXERS)}')
        margs = dict(dict(mix=_MIXERS[mixer]), **(mixer_args or {}))
        self.norm1 = _layer_norm(dim)
        self.attn = ACmixSRAttention(dim, num_heads, sr_ratio=sr_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                     proj_drop=proj_drop, **margs)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PVTStage(nn.Module):
    """Patch embedding + position embedding + blocks.

    Args:
        in_dim, dim: input channels and token width.
        patch_size: patch-embedding kernel = stride.
        grid_size: (H, W) grid the position embedding is stored for.
        depth: number of blocks; ``block_args``: ``PVTBlock`` arguments; ``drop_path``: one rate per block.
        pos_drop: dropout after adding the position embedding.

    Shapes: ``(B, in_dim, H, W) -> (B, dim, ceil(H/p), ceil(W/p))``.
    """

    def __init__(self, in_dim: int, dim: int, patch_size: int, grid_size: Tuple[int, int], depth: int,
                 block_args: Dict[str, Any], drop_path: Sequence[float], pos_drop: float = 0.) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(
            img_size=(grid_size[0] * patch_size, grid_size[1] * patch_size), patch_size=patch_size, in_chans=in_dim,
            embed_dim=dim, norm_layer=nn.LayerNorm, flatten=False, output_fmt='NHWC', strict_img_size=False,
            dynamic_img_pad=True)
        self.grid_size = tuple(grid_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid_size[0] * grid_size[1], dim))
        self.pos_drop = nn.Dropout(pos_drop)
        self.blocks = nn.ModuleList([PVTBlock(dim, drop_path=drop_path[i], **block_args) for i in range(depth)])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)                                           # (B, H, W, C)
        b, h, w, c = x.shape
        pos = resample_abs_pos_embed(self.pos_embed, new_size=(h, w), old_size=self.grid_size,
                                     num_prefix_tokens=0, interpolation='bilinear', antialias=False)
        x = self.pos_drop(x.reshape(b, h * w, c) + pos)                   # (B, H*W, C)
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, h, w)
            else:
                x = blk(x, h, w)
        return x.transpose(1, 2).reshape(b, c, h, w)


class PVT(nn.Module):
    """PVT v1 / PVT-ACmix classifier.

    Args:
        img_size: size the position embeddings are stored for (any input size still works).
        patch_sizes, embed_dims, num_heads, mlp_ratios, sr_ratios, depths: per-stage PVT v1 hyper-parameters.
        qkv_bias: bias in ``q`` / ``kv``.
        mixer, mixer_args: see ``PVTBlock``.
        in_chans, num_classes, global_pool (``'avg'`` or ``''``), drop_rate, proj_drop_rate, attn_drop_rate,
        drop_path_rate: timm conventions.

    Shapes: ``(B, in_chans, H, W)`` (any H, W >= 1) -> ``(B, num_classes)``.
    """

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_sizes: Sequence[int] = (4, 2, 2, 2),
            embed_dims: Sequence[int] = (64, 128, 320, 512),
            num_heads: Sequence[int] = (1, 2, 5, 8),
            mlp_ratios: Sequence[float] = (8., 8., 4., 4.),
            sr_ratios: Sequence[int] = (8, 4, 2, 1),
            depths: Sequence[int] = (2, 2, 2, 2),
            qkv_bias: bool = True,
            mixer: str = 'attn',
            mixer_args: Optional[Dict[str, Any]] = None,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ) -> None:
        super().__init__()
        n = len(depths)
        if not all(len(s) == n for s in (patch_sizes, embed_dims, num_heads, mlp_ratios, sr_ratios)):
            raise ValueError('patch_sizes, embed_dims, num_heads, mlp_ratios, sr_ratios and depths need one entry '
                             f'per stage, got depths {depths}')
        if global_pool not in ('avg', ''):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.num_classes, self.in_chans, self.global_pool = num_classes, in_chans, global_pool
        img_size = to_2tuple(img_size)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)  # per stage, per block
        stages, self.feature_info, prev, reduction = [], [], in_chans, 1
        for i in range(n):
            reduction *= patch_sizes[i]
            grid = (-(-img_size[0] // reduction), -(-img_size[1] // reduction))
            block_args = dict(num_heads=num_heads[i], sr_ratio=sr_ratios[i], mlp_ratio=mlp_ratios[i],
                              qkv_bias=qkv_bias, mixer=mixer, mixer_args=mixer_args, proj_drop=proj_drop_rate,
                              attn_drop=attn_drop_rate)
            stages.append(PVTStage(prev, embed_dims[i], patch_sizes[i], grid, depths[i], block_args, dpr[i],
                                   pos_drop=drop_rate))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=reduction, module=f'stages.{i}'))
            prev = embed_dims[i]
        self.stages = nn.Sequential(*stages)
        self.norm = _layer_norm(prev)
        self.num_features = self.head_hidden_size = prev
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(prev, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """PVT v1's init: trunc-normal(0.02) linear weights and position embeddings, zero biases, LayerNorm 1/0."""
        for s in self.stages:
            trunc_normal_(s.pos_embed, std=.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {f'stages.{i}.pos_embed' for i in range(len(self.stages))}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stages\.0\.(?:patch_embed|pos_embed)', blocks=[
            (r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.blocks\.(\d+)', None),
            (r'^stages\.(\d+)\.(?:patch_embed|pos_embed)', (0,)),
            (r'^norm', (99999,)),
        ])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for s in self.stages:
            s.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ('avg', ''):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs as (B, C, H, W) maps.

        Args:
            x: (B, C, H, W) images.
            indices: last n stages if int, all if None, else the stage indices to return.
            norm: apply the final LayerNorm to the last stage's map when it is returned.
            stop_early: stop after the last requested stage.
            output_fmt: only ``'NCHW'``.
            intermediates_only: return only the list.

        Returns:
            the intermediates, or (final normalised map (B, C, H, W), intermediates).
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[:max_index + 1] if stop_early and not torch.jit.is_scripting() else self.stages
        last = len(self.stages) - 1
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(self._norm_map(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        return self._norm_map(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop stages after the last requested one (and the final norm / head when asked or implied)."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def _norm_map(self, x: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm over the channels of a (B, C, H, W) map."""
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> normalised last-stage map (B, C, H/32, W/32) (ceil)."""
        return self._norm_map(self.stages(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'avg':
            x = x.mean(dim=(-2, -1))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _rename_original(key: str) -> str:
    """PVT v1's released layout -> ours (identity for our own keys)."""
    key = re.sub(r'^patch_embed(\d)\.', lambda m: f'stages.{int(m.group(1)) - 1}.patch_embed.', key)
    key = re.sub(r'^pos_embed(\d)$', lambda m: f'stages.{int(m.group(1)) - 1}.pos_embed', key)
    key = re.sub(r'^block(\d)\.(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.', key)
    return key


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Accept our layout or PVT v1's released one, plain or wrapped (``{'model': sd}``, ``{'state_dict': sd}``,
    ``module.`` prefixes); raise ``KeyError`` naming missing, unexpected or mis-shaped keys.

    From PVT v1's layout the class token and the class token's entry of ``pos_embed4`` are dropped (we pool).
    """
    sd = unwrap_state_dict(state_dict)
    if 'patch_embed1.proj.weight' in sd:  # PVT v1's original layout
        out = {}
        for k, v in sd.items():
            if k == 'cls_token':
                continue
            k = _rename_original(k)
            if k.endswith('pos_embed') and k in model.state_dict() and \
                    v.shape[1] == model.state_dict()[k].shape[1] + 1:
                v = v[:, 1:]  # the class token's position entry
            out[k] = v
        sd = out
    return filter_state_dict(sd, model)


def _create_pvt(variant: str, pretrained: bool = False, **kwargs: Any) -> PVT:
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3))
    return build_model_with_cfg(
        PVT, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=out_indices), **kwargs)


def _cfg(url: str = '', **kwargs: Any) -> Dict[str, Any]:
    return {
        'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic', 'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stages.0.patch_embed.proj', 'classifier': 'head', 'fixed_input_size': False,
        'min_input_size': (3, 32, 32),
        'license': 'apache-2.0', 'paper_ids': 'arXiv:2102.12122', **kwargs,
    }


# PVT v1's released weights use a class token (see checkpoint_filter_fn); ACmix-PVT weights were never released.
default_cfgs = generate_default_cfgs({
    'pvt_v1_tiny.untrained': _cfg(),
    'pvt_v1_small.untrained': _cfg(),
    'acmix_pvt_tiny.untrained': _cfg(paper_ids='arXiv:2111.14556'),
    'acmix_pvt_small.untrained': _cfg(paper_ids='arXiv:2111.14556'),
})


@register_model
def pvt_v1_tiny(pretrained: bool = False, **kwargs: Any) -> PVT:
    """PVT v1 Tiny, avg-pooled: 13,228,264 params, 1.93 GMACs at 224 (PVT: 13.2M, 1.9G)."""
    model_args = dict(depths=(2, 2, 2, 2), mixer='attn')
    return _create_pvt('pvt_v1_tiny', pretrained, **dict(model_args, **kwargs))


@register_model
def pvt_v1_small(pretrained: bool = False, **kwargs: Any) -> PVT:
    """PVT v1 Small, avg-pooled: 24,484,840 params, 3.81 GMACs at 224 (PVT: 24.5M, 3.8G)."""
    model_args = dict(depths=(3, 4, 6, 3), mixer='attn')
    return _create_pvt('pvt_v1_small', pretrained, **dict(model_args, **kwargs))


@register_model
def acmix_pvt_tiny(pretrained: bool = False, **kwargs: Any) -> PVT:
    """PVT-Tiny with ACmix: 13,395,104 params, 2.19 GMACs at 224 (paper: 13M, 2.0G)."""
    model_args = dict(depths=(2, 2, 2, 2), mixer='acmix')
    return _create_pvt('acmix_pvt_tiny', pretrained, **dict(model_args, **kwargs))


@register_model
def acmix_pvt_small(pretrained: bool = False, **kwargs: Any) -> PVT:
    """PVT-Small with ACmix: 24,823,731 params, 4.38 GMACs at 224 (paper: 25M, 3.9G)."""
    model_args = dict(depths=(3, 4, 6, 3), mixer='acmix')
    return _create_pvt('acmix_pvt_small', pretrained, **dict(model_args, **kwargs))
