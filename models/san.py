"""SAN (patchwise self-attention networks) and SAN-ACmix, on timm.

Papers: Zhao, Jia and Koltun, "Exploring Self-attention for Image Recognition", CVPR 2020 (SAN);
Pan et al., "On the Integration of Self-Attention and Convolution", CVPR 2022 (ACmix), which reports SAN-10/15/19
with ACmix at 12.1M / 16.6M / 21.2M parameters against patchwise SAN's 11.8M / 16.2M / 20.5M (SAN's README;
10.5M / 14.1M / 17.6M are its *pairwise* models).  The ACmix authors never released their SAN code.

Architecture (facts from SAN's ``model/san.py`` and ``config/imagenet/*_patchwise.yaml``):
    * stem: 1x1 conv 3 -> 64 (no bias) + BN + ReLU at full resolution;
    * 5 stages, widths [64, 256, 512, 1024, 2048], footprints [3, 7, 7, 7, 7], blocks SAN-10 [2, 1, 2, 4, 1],
      SAN-15 [3, 2, 3, 5, 2], SAN-19 [3, 3, 4, 6, 3]; each stage is a transition (2x2 max-pool, stride 2, then a
      1x1 conv, no bias, to the stage width), its blocks, then BN + ReLU;
    * residual pre-activation block on width P: BN, ReLU, SA module P -> P/4, BN, ReLU, 1x1 conv P/4 -> P (bias),
      plus the identity;
    * SAN's SA module (``mixer='san'``): phi, psi = 1x1 convs P -> P/16, beta = 1x1 conv P -> P/4 (all with bias),
      then ``acmix.PatchwiseAttention`` (gamma + aggregation, one head, 8 value channels per weight channel);
    * global average pooling and a linear classifier.

ACmix twin (``mixer='acmix'``), where the paper is silent beyond "Stage I costs what self-attention costs":
    * One class for both: the SA module is ``acmix.ACmix(P, P/4, kernel_att=K, head=1, qk_planes=P/16,
      attn_mode='patchwise')``; ``mix='attn_only'`` is SAN's SA module key for key (phi, psi, beta = ``conv1``,
      ``conv2``, ``conv3``; gamma = ``attn.conv_w``), ``mix='learnable'`` adds ACmix's convolution path on the
      same Stage I maps and the rates.  Stage I and the attention path are SAN's, unchanged.
    * Conv path: q and k (P/16 channels each) and v (P/4) are split into maps of P/16 channels (1 + 1 + 4);
      ``fc`` mixes the 6 maps into k_c^2 = 9 per channel index, ``dep_conv`` (group conv, shift-initialised)
      maps them to P/4.  It adds 81 * P/4 + 56 parameters per block: +0.15M / +0.23M / +0.31M over SAN-10/15/19,
      where the paper's rounded totals (12.1M / 16.6M / 21.2M against SAN's 11.8M / 16.2M / 20.5M) suggest
      +0.3M / +0.4M / +0.7M; our totals are within 2 % of the paper's (see the entrypoints).  An earlier design
      reduced P -> P/4 with an extra 1x1 conv before a full-width ACmix(P/4, P/4): +0.54M on SAN-10.

Other decisions:
    * Max-pools use ``ceil_mode=True``: identical to SAN at every size divisible by 32, and a map never shrinks
      to zero, so any input size works (32 px gives 1x1 at the last stage; 17x23 works too).
    * Weights keep PyTorch's default init (as SAN does); ACmix modules keep their own shift init.
    * ``checkpoint_filter_fn`` also maps SAN's released layout (``conv_in``, ``bn_in``, ``conv{i}``, ``bn{i}``,
      ``layer{i}.{j}.sam.*``, ``fc``) onto ours, so SAN's published patchwise weights load into ``san*``.
    * Counts (entrypoint docstrings): parameters as ``sum(p.numel())``; MACs = ``FlopCounterMode`` FLOPs / 2 plus
      the aggregation's ``K*K`` MACs per output element (an index/multiply-add loop the counter does not see).
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import re

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath, calculate_drop_path_rates, get_device_dtype
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._manipulate import checkpoint_seq

from acmix import ACmix

from ._checkpoint import filter_state_dict, unwrap_state_dict
from ._staged import StagedModel

__all__ = ['SANBlock', 'SANStage', 'SAN']

_MIXERS = ('san', 'acmix')
_MODEL_ARGS = {  # per entrypoint (end of file); the caller's keyword arguments override them
    'san10': dict(layers=(2, 1, 2, 4, 1), mixer='san'),
    'san15': dict(layers=(3, 2, 3, 5, 2), mixer='san'),
    'san19': dict(layers=(3, 3, 4, 6, 3), mixer='san'),
    'acmix_san10': dict(layers=(2, 1, 2, 4, 1), mixer='acmix'),
    'acmix_san15': dict(layers=(3, 2, 3, 5, 2), mixer='acmix'),
    'acmix_san19': dict(layers=(3, 3, 4, 6, 3), mixer='acmix'),
}


class SANBlock(nn.Module):
    """Residual pre-activation SA block on width ``dim`` (one class for SAN and SAN-ACmix).

    Args:
        dim: block width P (input = output).
        kernel_size: attention footprint K.
        mixer: ``'san'`` (SAN's SA module ``P -> P/4``: ``ACmix(mix='attn_only')``) or ``'acmix'`` (the same
            module with the convolution path, ``mix='learnable'``).
        mixer_args: extra keyword arguments for ``ACmix`` (e.g. ``qk_planes`` (default P/16), ``share_planes``
            (8), ``head`` (1), ``kernel_conv``, ``shift``, or ``mix`` for the ablations).
        drop_path: stochastic depth rate of the residual branch.

    Shapes: ``(B, P, H, W) -> (B, P, H, W)``.
    """

    def __init__(self, dim: int, kernel_size: int = 7, mixer: str = 'san',
                 mixer_args: Optional[Dict[str, Any]] = None, drop_path: float = 0.) -> None:
        super().__init__()
        if mixer not in _MIXERS:
            raise ValueError(f'mixer {mixer!r} not in {_MIXERS}')
        if dim % 16:
            raise ValueError(f'block width {dim} must be a multiple of 16')
        mid = dim // 4
        margs = dict(dict(head=1, qk_planes=dim // 16, share_planes=8, kernel_conv=3, attn_mode='patchwise',
                          mix='attn_only' if mixer == 'san' else 'learnable'), **(mixer_args or {}))
        self.bn1 = nn.BatchNorm2d(dim)
        self.mixer = ACmix(dim, mid, kernel_att=kernel_size, **margs)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv = nn.Conv2d(mid, dim, kernel_size=1)
        self.act = nn.ReLU(inplace=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(x))
        out = self.mixer(out)
        out = self.conv(self.act(self.bn2(out)))
        return x + self.drop_path(out)


class SANStage(nn.Module):
    """Transition (2x2 max-pool, 1x1 conv) + blocks + BN + ReLU.

    Shapes: ``(B, in_dim, H, W) -> (B, dim, ceil(H/2), ceil(W/2))``.
    """

    def __init__(self, in_dim: int, dim: int, depth: int, kernel_size: int, mixer: str,
                 mixer_args: Optional[Dict[str, Any]] = None, drop_path: Union[float, Sequence[float]] = 0.) -> None:
        super().__init__()
        dpr = [drop_path] * depth if isinstance(drop_path, float) else list(drop_path)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self.conv = nn.Conv2d(in_dim, dim, kernel_size=1, bias=False)
        self.blocks = nn.Sequential(*[
            SANBlock(dim, kernel_size, mixer, mixer_args, drop_path=dpr[i]) for i in range(depth)])
        self.bn = nn.BatchNorm2d(dim)
        self.act = nn.ReLU(inplace=True)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pool(x))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.act(self.bn(x))


class SAN(StagedModel, nn.Module):
    """SAN / SAN-ACmix classifier.

    Args:
        layers: blocks per stage (5 stages).
        kernels: footprint per stage.
        widths: stage widths.
        mixer: ``'san'`` or ``'acmix'`` (see ``SANBlock``).
        mixer_args: forwarded to every block's mixer.
        stem_width: stem output width.
        in_chans, num_classes, global_pool, drop_rate, drop_path_rate: timm conventions.
        device, dtype: timm's factory arguments (the model is built, then moved there).

    Shapes: ``(B, in_chans, H, W)`` (any H, W >= 1) -> ``(B, num_classes)``; stage ``i`` has stride ``2**(i+1)``.
    """

    def __init__(
            self,
            layers: Sequence[int] = (2, 1, 2, 4, 1),
            kernels: Sequence[int] = (3, 7, 7, 7, 7),
            widths: Sequence[int] = (64, 256, 512, 1024, 2048),
            mixer: str = 'san',
            mixer_args: Optional[Dict[str, Any]] = None,
            stem_width: int = 64,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        if not len(layers) == len(kernels) == len(widths):
            raise ValueError(f'layers {layers}, kernels {kernels} and widths {widths} must have one entry per stage')
        super().__init__()
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.stem = nn.Sequential()
        self.stem.add_module('conv', nn.Conv2d(in_chans, stem_width, kernel_size=1, bias=False))
        self.stem.add_module('bn', nn.BatchNorm2d(stem_width))
        self.stem.add_module('act', nn.ReLU(inplace=True))
        dpr = calculate_drop_path_rates(drop_path_rate, list(layers), stagewise=True)  # per stage
        stages, self.feature_info, prev = [], [], stem_width
        for i, (depth, k, w) in enumerate(zip(layers, kernels, widths)):
            stages.append(SANStage(prev, w, depth, k, mixer, mixer_args, drop_path=dpr[i]))
            self.feature_info.append(dict(num_chs=w, reduction=2 ** (i + 1), module=f'stages.{i}'))
            prev = w
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = prev
        self.head = ClassifierHead(prev, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.to(device=device, dtype=dtype)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else [
            (r'^stages\.(\d+)\.blocks\.(\d+)', None),
            (r'^stages\.(\d+)\.(?:conv|pool)', (0,)),
            (r'^stages\.(\d+)\.bn', (99999,)),
        ])

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, **get_device_dtype(self))  # the new head where the model is

    def _forward_stages(self, x: torch.Tensor, stages: nn.Sequential, take_indices: List[int], norm: bool,
                        features: bool) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """``forward_intermediates``' loop: the intermediates are stage outputs after each stage's BN + ReLU
        (``norm`` is unused: they are normalised already), the features the last stage's map (always: it is free)."""
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        return x, intermediates

    def _prune_tail(self, prune_norm: bool, prune_head: bool) -> None:
        if prune_head:  # the stages end in BN + ReLU: no final norm to prune
            self.head = ClassifierHead(self.num_features, 0, pool_type='')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# SAN's released names -> ours: (pattern, replacement), applied in order
_ORIGINAL_NAMES = (
    (r'^conv_in\.', 'stem.conv.'),
    (r'^bn_in\.', 'stem.bn.'),
    (r'^conv(\d)\.', r'stages.\1.conv.'),
    (r'^bn(\d)\.', r'stages.\1.bn.'),
    (r'^layer(\d)\.(\d+)\.sam\.conv_w\.', r'stages.\1.blocks.\2.mixer.attn.conv_w.'),
    (r'^layer(\d)\.(\d+)\.sam\.', r'stages.\1.blocks.\2.mixer.'),
    (r'^layer(\d)\.(\d+)\.', r'stages.\1.blocks.\2.'),
    (r'^fc\.', 'head.fc.'),
)


def _rename_original(key: str) -> str:
    """SAN's released layout -> ours (identity for our own keys)."""
    for pattern, replacement in _ORIGINAL_NAMES:
        key = re.sub(pattern, replacement, key)
    return key


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Accept our layout or SAN's released one, plain or wrapped (``{'model': sd}``, ``{'state_dict': sd}``,
    ``module.`` prefixes); raise ``KeyError`` naming missing, unexpected or mis-shaped keys."""
    sd = unwrap_state_dict(state_dict)
    if 'conv_in.weight' in sd:  # SAN's original layout
        sd = {_rename_original(k): v for k, v in sd.items()}
    return filter_state_dict(sd, model)


def _cfg(url: str = '', **kwargs: Any) -> Dict[str, Any]:
    return {
        'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear', 'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.conv', 'classifier': 'head.fc', 'min_input_size': (3, 32, 32),
        'fixed_input_size': False, 'license': 'mit', 'paper_ids': 'arXiv:2004.13621', **kwargs,
    }


# SAN's weights live on Google Drive (no stable URL); ACmix-SAN weights were never released.  Load a local file
# with pretrained_cfg_overlay=dict(file=PATH).
default_cfgs = generate_default_cfgs({
    'san10.untrained': _cfg(),
    'san15.untrained': _cfg(),
    'san19.untrained': _cfg(),
    'acmix_san10.untrained': _cfg(paper_ids='arXiv:2111.14556'),
    'acmix_san15.untrained': _cfg(paper_ids='arXiv:2111.14556'),
    'acmix_san19.untrained': _cfg(paper_ids='arXiv:2111.14556'),
})


def _create_san(variant: str, pretrained: bool = False, **kwargs: Any) -> SAN:
    kwargs = dict(_MODEL_ARGS[variant], **kwargs)
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3, 4))
    return build_model_with_cfg(
        SAN, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices), **kwargs)


@register_model
def san10(pretrained: bool = False, **kwargs: Any) -> SAN:
    """SAN-10, patchwise: 11,841,124 params, 1.79 GMACs at 224 (SAN reports 11.8M, 1.9G)."""
    return _create_san('san10', pretrained, **kwargs)


@register_model
def san15(pretrained: bool = False, **kwargs: Any) -> SAN:
    """SAN-15, patchwise: 16,181,310 params, 2.48 GMACs at 224 (SAN reports 16.2M, 2.6G)."""
    return _create_san('san15', pretrained, **kwargs)


@register_model
def san19(pretrained: bool = False, **kwargs: Any) -> SAN:
    """SAN-19, patchwise: 20,518,470 params, 3.13 GMACs at 224 (SAN reports 20.5M, 3.3G)."""
    return _create_san('san19', pretrained, **kwargs)


@register_model
def acmix_san10(pretrained: bool = False, **kwargs: Any) -> SAN:
    """SAN-10 with ACmix: 11,994,612 params, 1.89 GMACs at 224 (paper: 12.1M, 1.9G)."""
    return _create_san('acmix_san10', pretrained, **kwargs)


@register_model
def acmix_san15(pretrained: bool = False, **kwargs: Any) -> SAN:
    """SAN-15 with ACmix: 16,414,134 params, 2.63 GMACs at 224 (paper: 16.6M, 2.7G)."""
    return _create_san('acmix_san15', pretrained, **kwargs)


@register_model
def acmix_san19(pretrained: bool = False, **kwargs: Any) -> SAN:
    """SAN-19 with ACmix: 20,829,278 params, 3.32 GMACs at 224 (paper: 21.2M, 3.4G)."""
    return _create_san('acmix_san19', pretrained, **kwargs)
