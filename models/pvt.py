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
    * a class token (trunc-normal, std 0.02) prepended to the stage-4 tokens; ``pos_embed4`` has one extra row,
      its first, for it (the rest is resampled to the grid, the token's row never);
    * a final LayerNorm and a linear classifier on the class token.

Mixer (one ``Block`` class): ``mixer='attn'`` is ``acmix.ACmixSRAttention(mix='attn_only')``, exactly PVT v1's
attention (parameter names ``q, kv, proj, sr, norm``); ``mixer='acmix'`` is the same class with
``mix='learnable'`` (conv path: ``fc``, ``dep_conv``, ``rate1``, ``rate2``).  Everything else is shared, the class
token included: ACmix's conv path shares Stage I (``q`` and the reduced ``k``/``v``, nearest-upsampled) and runs
on the spatial tokens only; the class token gets the attention term alone (see ``acmix/sr.py``).

Decisions where PVT v1 or the ACmix paper leave room:
    * ``class_token=False`` (``global_pool`` then defaults to ``'avg'``) gives the backbone of PVT's detection and
      segmentation code, whose stage 4 runs without the token; a checkpoint with the token loads into it with the
      token and its position row dropped, as that code does.  The default is PVT v1's classifier.
    * Any input size: each patch embedding zero-pads its input on the right/bottom to a multiple of its patch
      size (timm ``PatchEmbed(dynamic_img_pad=True)``), so a stage has ``ceil`` of the previous size; this is
      PVT v1 exactly for sizes divisible by 32.  Position embeddings are stored for the 224 grid (56, 28, 14, 7)
      and resampled bilinearly (no antialias, PVT v1's own choice) to other grids with
      ``timm.layers.resample_abs_pos_embed``; the grid also follows ``img_size`` when given.
    * ``checkpoint_filter_fn`` maps PVT v1's released layout (``patch_embed{i}``, ``pos_embed{i}``,
      ``block{i}.{j}``, ``attn.*``, ``cls_token``, ``norm``, ``head``) onto ours key for key and shape for shape
      (``cls_token`` is ``stages.3.cls_token`` here), so released PVT v1 weights give PVT v1's logits.
    * Init as PVT v1: trunc-normal(0.02) for linear layers, position embeddings and the class token, LayerNorm 1/0;
      convolutions keep PyTorch's default (the ACmix conv path keeps its shift initialisation).
    * Counts (entrypoint docstrings): MACs = ``FlopCounterMode`` FLOPs / 2, measured under the math SDPA backend
      (the counter has no formula for the fused CPU attention kernel, which would silently count 0).
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import re

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, PatchEmbed, calculate_drop_path_rates, get_device_dtype, \
    resample_abs_pos_embed, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._manipulate import checkpoint

from acmix import ACmixSRAttention

from ._checkpoint import filter_state_dict, unwrap_state_dict
from ._staged import StagedModel

__all__ = ['PVTBlock', 'PVTStage', 'PVT']

_MIXERS = {'attn': 'attn_only', 'acmix': 'learnable'}
_MODEL_ARGS = {  # per entrypoint (end of file); the caller's keyword arguments override them
    'pvt_v1_tiny': dict(depths=(2, 2, 2, 2), mixer='attn'),
    'pvt_v1_small': dict(depths=(3, 4, 6, 3), mixer='attn'),
    'acmix_pvt_tiny': dict(depths=(2, 2, 2, 2), mixer='acmix'),
    'acmix_pvt_small': dict(depths=(3, 4, 6, 3), mixer='acmix'),
}


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
        num_prefix_tokens: class tokens before the spatial ones (needs ``sr_ratio == 1``).
        proj_drop, attn_drop, drop_path: dropout rates.

    Shapes: ``forward(x (B, P + H*W, C), H, W) -> (B, P + H*W, C)`` with P = ``num_prefix_tokens``.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, mlp_ratio: float = 4., qkv_bias: bool = True,
                 mixer: str = 'attn', mixer_args: Optional[Dict[str, Any]] = None, num_prefix_tokens: int = 0,
                 proj_drop: float = 0., attn_drop: float = 0., drop_path: float = 0.) -> None:
        super().__init__()
        if mixer not in _MIXERS:
            raise ValueError(f'mixer {mixer!r} not in {tuple(_MIXERS)}')
        margs = dict(dict(mix=_MIXERS[mixer]), **(mixer_args or {}))
        self.norm1 = _layer_norm(dim)
        self.attn = ACmixSRAttention(dim, num_heads, sr_ratio=sr_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                     proj_drop=proj_drop, num_prefix_tokens=num_prefix_tokens, **margs)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PVTStage(nn.Module):
    """Patch embedding + (class token) + position embedding + blocks.

    Args:
        in_dim, dim: input channels and token width.
        patch_size: patch-embedding kernel = stride.
        grid_size: (H, W) grid the position embedding is stored for.
        depth: number of blocks; ``block_args``: ``PVTBlock`` arguments; ``drop_path``: one rate per block.
        pos_drop: dropout after adding the position embedding.
        class_token: prepend a learned class token ``cls_token`` (1, 1, dim); ``pos_embed`` then has one more row,
            the token's, first (PVT v1's last stage).

    Shapes: ``(B, in_dim, H, W) -> (map (B, dim, h, w), prefix tokens (B, P, dim))``, ``h, w = ceil(H/p),
    ceil(W/p)``, ``P = num_prefix_tokens`` (0 or 1).
    """

    def __init__(self, in_dim: int, dim: int, patch_size: int, grid_size: Tuple[int, int], depth: int,
                 block_args: Dict[str, Any], drop_path: Sequence[float], pos_drop: float = 0.,
                 class_token: bool = False) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(
            img_size=(grid_size[0] * patch_size, grid_size[1] * patch_size), patch_size=patch_size, in_chans=in_dim,
            embed_dim=dim, norm_layer=nn.LayerNorm, flatten=False, output_fmt='NHWC', strict_img_size=False,
            dynamic_img_pad=True)
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = 1 if class_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + grid_size[0] * grid_size[1], dim))
        self.pos_drop = nn.Dropout(pos_drop)
        self.blocks = nn.ModuleList([PVTBlock(dim, drop_path=drop_path[i], num_prefix_tokens=self.num_prefix_tokens,
                                              **block_args) for i in range(depth)])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embed(x)                                           # (B, h, w, C)
        b, h, w, c = x.shape
        pos = resample_abs_pos_embed(self.pos_embed, new_size=(h, w), old_size=self.grid_size,
                                     num_prefix_tokens=self.num_prefix_tokens, interpolation='bilinear',
                                     antialias=False)                     # (1, P + h*w, C)
        x = x.reshape(b, h * w, c)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = self.pos_drop(x + pos)                                        # (B, P + h*w, C)
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, h, w)
            else:
                x = blk(x, h, w)
        p = self.num_prefix_tokens
        return x[:, p:].transpose(1, 2).reshape(b, c, h, w), x[:, :p]


class PVT(StagedModel, nn.Module):
    """PVT v1 / PVT-ACmix classifier.

    Args:
        img_size: size the position embeddings are stored for (any input size still works).
        patch_sizes, embed_dims, num_heads, mlp_ratios, sr_ratios, depths: per-stage PVT v1 hyper-parameters.
        qkv_bias: bias in ``q`` / ``kv``.
        mixer, mixer_args: see ``PVTBlock``.
        class_token: PVT v1's class token in the last stage (``stages.{-1}.cls_token``).
        global_pool: ``'token'`` (the class token, PVT v1), ``'avg'`` (mean of the spatial tokens) or ``''``;
            ``None``: ``'token'`` with a class token, else ``'avg'``.
        in_chans, num_classes, drop_rate, proj_drop_rate, attn_drop_rate, drop_path_rate: timm conventions.
        device, dtype: timm's factory arguments (the model is built, then moved there).

    Shapes: ``(B, in_chans, H, W)`` (any H, W >= 1) -> ``(B, num_classes)``; ``forward_features`` gives the
    normalised last-stage tokens ``(B, P + h*w, C)``, class token first (``P = num_prefix_tokens``).
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
            class_token: bool = True,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: Optional[str] = None,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        n = len(depths)
        if not all(len(s) == n for s in (patch_sizes, embed_dims, num_heads, mlp_ratios, sr_ratios)):
            raise ValueError('patch_sizes, embed_dims, num_heads, mlp_ratios, sr_ratios and depths need one entry '
                             f'per stage, got depths {depths}')
        self.num_prefix_tokens = 1 if class_token else 0
        self.num_classes, self.in_chans = num_classes, in_chans
        self.global_pool = self._check_pool(('token' if class_token else 'avg') if global_pool is None else global_pool)
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
                                   pos_drop=drop_rate, class_token=class_token and i == n - 1))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=reduction, module=f'stages.{i}'))
            prev = embed_dims[i]
        self.stages = nn.ModuleList(stages)  # not Sequential: a stage returns (map, prefix tokens)
        self.norm = _layer_norm(prev)
        self.num_features = self.head_hidden_size = prev
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(prev, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()
        self.to(device=device, dtype=dtype)

    @torch.no_grad()
    def init_weights(self) -> None:
        """PVT v1's init: trunc-normal(0.02) linear weights, position embeddings and class token, zero biases,
        LayerNorm 1/0."""
        for s in self.stages:
            trunc_normal_(s.pos_embed, std=.02)
            if s.cls_token is not None:
                trunc_normal_(s.cls_token, std=.02)
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
        """PVT v1's: the class token only (position embeddings are decayed)."""
        return {f'stages.{i}.cls_token' for i, s in enumerate(self.stages) if s.cls_token is not None}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stages\.0\.(?:patch_embed|pos_embed)', blocks=[
            (r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.blocks\.(\d+)', None),
            (r'^stages\.(\d+)\.(?:patch_embed|pos_embed|cls_token)', (0,)),
            (r'^norm', (99999,)),
        ])

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = self._check_pool(global_pool)
        dd = get_device_dtype(self)  # the new head where the model is, in its train/eval mode
        self.head = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)

    def _check_pool(self, global_pool: str) -> str:
        pools = ('token', 'avg', '') if self.num_prefix_tokens else ('avg', '')
        if global_pool not in pools:
            raise ValueError(f'global_pool must be one of {pools} (class_token={bool(self.num_prefix_tokens)}), '
                             f'got {global_pool!r}')
        return global_pool

    def _forward_stages(self, x: torch.Tensor, stages: nn.ModuleList, take_indices: List[int], norm: bool,
                        features: bool) -> Tuple[Optional[torch.Tensor], List[torch.Tensor]]:
        """``forward_intermediates``' loop: the intermediates are the stages' spatial maps (class token excluded;
        ``norm``: the final LayerNorm on the last stage's), the features (with ``features``)
        ``forward_features``' normalised tokens (B, P + h*w, C)."""
        last = len(self.stages) - 1
        intermediates = []
        prefix = x[:, :0]  # (B, 0, ...): replaced by every stage's prefix tokens
        for i, stage in enumerate(stages):
            x, prefix = stage(x)
            if i in take_indices:
                intermediates.append(self._norm_map(x) if norm and i == last else x)
        return (self.norm(self._tokens(x, prefix)) if features else None), intermediates

    def _prune_tail(self, prune_norm: bool, prune_head: bool) -> None:
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')

    def _norm_map(self, x: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm over the channels of a (B, C, H, W) map (per token, so the class token is irrelevant)."""
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    @staticmethod
    def _tokens(x: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) map and (B, P, C) prefix tokens -> (B, P + h*w, C), prefix first."""
        return torch.cat([prefix, x.flatten(2).transpose(1, 2)], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> normalised last-stage tokens (B, P + h*w, C), h, w = ceil(H/32), ceil(W/32)."""
        prefix = x[:, :0]  # replaced by every stage's prefix tokens
        for stage in self.stages:
            x, prefix = stage(x)
        return self.norm(self._tokens(x, prefix))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, P + h*w, C) tokens -> logits (B, num_classes), or the pooled (B, C) with ``pre_logits``."""
        if self.global_pool == 'token':
            x = x[:, 0]
        elif self.global_pool == 'avg':
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _rename_original(key: str, last: int) -> str:
    """PVT v1's released layout -> ours (identity for our own keys); ``last``: index of the last stage."""
    key = re.sub(r'^patch_embed(\d)\.', lambda m: f'stages.{int(m.group(1)) - 1}.patch_embed.', key)
    key = re.sub(r'^pos_embed(\d)$', lambda m: f'stages.{int(m.group(1)) - 1}.pos_embed', key)
    key = re.sub(r'^block(\d)\.(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.', key)
    return re.sub(r'^cls_token$', f'stages.{last}.cls_token', key)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Accept our layout or PVT v1's released one, plain or wrapped (``{'model': sd}``, ``{'state_dict': sd}``,
    ``module.`` prefixes); raise ``KeyError`` naming missing, unexpected or mis-shaped keys.

    Into a model built with ``class_token=False`` (PVT's detection / segmentation backbone), a checkpoint's class
    token and its row of the last ``pos_embed`` are dropped, as PVT's dense-prediction code does; nothing else is.
    """
    sd = unwrap_state_dict(state_dict)
    last = len(model.stages) - 1
    if 'patch_embed1.proj.weight' in sd:  # PVT v1's original layout
        sd = {_rename_original(k, last): v for k, v in sd.items()}
    cls_key, pos_key = f'stages.{last}.cls_token', f'stages.{last}.pos_embed'
    if not model.num_prefix_tokens and cls_key in sd and pos_key in sd:
        sd = dict(sd)
        del sd[cls_key]
        sd[pos_key] = sd[pos_key][:, 1:]
    return filter_state_dict(sd, model)


def _cfg(url: str = '', **kwargs: Any) -> Dict[str, Any]:
    return {
        'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic', 'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stages.0.patch_embed.proj', 'classifier': 'head', 'fixed_input_size': False,
        'min_input_size': (3, 32, 32),
        'license': 'apache-2.0', 'paper_ids': 'arXiv:2102.12122', **kwargs,
    }


# PVT v1's released weights (GitHub release files) load with pretrained_cfg_overlay=dict(file=PATH); ACmix-PVT
# weights were never released.
default_cfgs = generate_default_cfgs({
    'pvt_v1_tiny.untrained': _cfg(),
    'pvt_v1_small.untrained': _cfg(),
    'acmix_pvt_tiny.untrained': _cfg(paper_ids='arXiv:2111.14556'),
    'acmix_pvt_small.untrained': _cfg(paper_ids='arXiv:2111.14556'),
})


def _create_pvt(variant: str, pretrained: bool = False, **kwargs: Any) -> PVT:
    kwargs = dict(_MODEL_ARGS[variant], **kwargs)
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3))
    return build_model_with_cfg(
        PVT, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=out_indices), **kwargs)


@register_model
def pvt_v1_tiny(pretrained: bool = False, **kwargs: Any) -> PVT:
    """PVT v1 Tiny: 13,229,288 params (as the original code), 1.93 GMACs at 224 (PVT: 13.2M, 1.9G)."""
    return _create_pvt('pvt_v1_tiny', pretrained, **kwargs)


@register_model
def pvt_v1_small(pretrained: bool = False, **kwargs: Any) -> PVT:
    """PVT v1 Small: 24,485,864 params (as the original code), 3.82 GMACs at 224 (PVT: 24.5M, 3.8G)."""
    return _create_pvt('pvt_v1_small', pretrained, **kwargs)


@register_model
def acmix_pvt_tiny(pretrained: bool = False, **kwargs: Any) -> PVT:
    """PVT-Tiny with ACmix: 13,396,128 params, 2.02 GMACs at 224 (paper: 13M, 2.0G)."""
    return _create_pvt('acmix_pvt_tiny', pretrained, **kwargs)


@register_model
def acmix_pvt_small(pretrained: bool = False, **kwargs: Any) -> PVT:
    """PVT-Small with ACmix: 24,824,755 params, 3.97 GMACs at 224 (paper: 25M, 3.9G)."""
    return _create_pvt('acmix_pvt_small', pretrained, **kwargs)
