"""One adapter that exposes any timm feature extractor (our ``acmix_*`` models included) to mmdet and mmseg.

``ACmixBackbone`` wraps ``timm.create_model(model_name, features_only=True, ...)`` and gives it the OpenMMLab
backbone contract: ``out_indices``, ``frozen_stages``, ``norm_eval``, ``init_cfg=dict(type='Pretrained',
checkpoint=...)`` and an ``out_channels`` list for the neck.  It is registered once, as ``ACmixBackbone``, in
both mmdet's and mmseg's ``MODELS`` registries; configs load it with
``custom_imports=dict(imports=['models.mm_backbone'], allow_failed_imports=False)``.

Stage indices are OpenMMLab-style, not timm's: stage 0 is the first feature map with stride 4, whatever the
model reports before it (a ResNet's stride-2 stem is timm feature 0 but is not a stage here).  So
``out_indices=(0, 1, 2, 3)`` means strides 4, 8, 16, 32 for every family, and configs never depend on how a
family numbers its features.

Pretrained weights are loaded in ``init_weights`` (as mmdet backbones do, so ``tools/test.py`` with a
trained checkpoint never needs the ImageNet file): the file is read and unwrapped by ``models._checkpoint``
(``torch.load(weights_only=True)``; ``{'model': sd}``, ``{'state_dict': sd}``, ``module.`` prefixes), passed
through the family's ``checkpoint_filter_fn`` (the same conversion timm applies to pretrained weights, e.g. the
authors' Swin-ACmix release), and then must cover every tensor of the feature extractor exactly: missing keys,
keys the model does not have, and shape mismatches all raise ``check_state_dict``'s one error that names them.
Classifier and final-norm weights, which a feature extractor drops, are ignored.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

import timm
import torch
from mmengine.model import BaseModule
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

import models  # noqa: F401  (registers the acmix_* entrypoints with timm)
from models._checkpoint import CheckpointMismatchError, check_state_dict, read_checkpoint, unwrap_state_dict

__all__ = ['ACmixBackbone', 'CheckpointMismatchError', 'stage_channels', 'load_backbone_state_dict']


def _meta_model(model_name: str, **model_kwargs: Any) -> nn.Module:
    """The headless classification model (``num_classes=0``), parameter-free on the meta device."""
    with torch.device('meta'):
        return timm.create_model(model_name, pretrained=False, **dict(model_kwargs, num_classes=0))


def _stage_info(model: nn.Module) -> list[dict]:
    """feature_info entries of the OpenMMLab stages (stride >= 4), in order."""
    return [f for f in model.feature_info if f['reduction'] >= 4]


def stage_channels(model_name: str, out_indices: Sequence[int] = (0, 1, 2, 3), **model_kwargs: Any) -> list[int]:
    """Channels ``ACmixBackbone(model_name, out_indices, **model_kwargs)`` returns, without building it."""
    stages = _stage_info(_meta_model(model_name, **model_kwargs))
    return [stages[i]['num_chs'] for i in out_indices]


def _checkpoint_filter(model_name: str):
    """The family's ``checkpoint_filter_fn(state_dict, model)`` (the one timm uses for pretrained weights).

    Looked up in the module that defines the model's entrypoint (``models.swin``, ``timm.models.resnet``, ...).
    """
    module = sys.modules[timm.models.model_entrypoint(model_name).__module__]
    return getattr(module, 'checkpoint_filter_fn', None)


def _candidates(name: str) -> list[str]:
    """Names a full-model module/parameter may have inside a timm feature wrapper.

    ``FeatureListNet(flatten_sequential=True)`` renames ``layers.0.x`` to ``layers_0.x``; ``FeatureGetterNet``
    keeps the model under ``model.``.
    """
    out = [name]
    parts = name.split('.')
    if len(parts) >= 2:
        out.append('_'.join(parts[:2]) + ('.' + '.'.join(parts[2:]) if len(parts) > 2 else ''))
    out.append('model.' + name)
    return out


def load_backbone_state_dict(body: nn.Module, full_keys: dict[str, tuple], state_dict: dict[str, torch.Tensor],
                             source: str) -> None:
    """Copy a full-model state dict into a timm feature extractor, strictly (``check_state_dict``'s message).

    Every tensor of the feature extractor must come from the checkpoint with its shape; keys of the full model
    that the extractor drops (classifier, final norm) may be present or absent; anything else is unexpected.

    Args:
        body: the ``features_only`` model.
        full_keys: ``{key: shape}`` of the full (classification) model's state dict.
        state_dict: filtered checkpoint in the full model's key space.
        source: file name for messages.
    """
    target = body.state_dict()
    dst = {k: next((c for c in _candidates(k) if c in target), None) for k in full_keys}
    covered = {d for d in dst.values() if d is not None}
    # in the full model's key space, plus any extractor tensor no full-model key maps to (then always missing)
    expected = {k: tuple(target[d].shape) if d is not None else tuple(full_keys[k]) for k, d in dst.items()}
    expected.update({k: tuple(v.shape) for k, v in target.items() if k not in covered})
    check_state_dict(state_dict, expected, optional=[k for k, d in dst.items() if d is None],
                     source=f'backbone checkpoint {source}')
    body.load_state_dict({dst[k]: v for k, v in state_dict.items() if dst[k] is not None}, strict=True)


class ACmixBackbone(BaseModule):
    """Any timm model with ``features_only`` support as an OpenMMLab backbone.

    Args:
        model_name: timm entrypoint, e.g. ``'acmix_resnet50'``, ``'acmix_swin_tiny_patch4_window7_224'``.
        out_indices: OpenMMLab stage indices to return (0 = first stride-4 stage).
        frozen_stages: as in mmdet's ResNet/Swin: ``-1`` freezes nothing, ``0`` the stem, ``k`` the stem and
            the first ``k`` stages; frozen parameters get ``requires_grad=False`` and their modules (norm
            layers included) stay in eval mode.
        norm_eval: keep every BatchNorm of the backbone in eval mode (frozen running statistics) in training.
        out_norm: a LayerNorm over the channels of every returned map (``out_norms[i]``, weight 1 and bias 0 at
            start, never in the classification checkpoint), as the ``norm{i}`` of Swin's detection/segmentation
            backbone and of mmdet's ``SwinTransformer``; frozen with its stage.
        pad_to: zero-pad the input on the right/bottom to a multiple of this before the model and crop each
            output back to ``ceil(H / stride)`` x ``ceil(W / stride)``, so patch-embedding families (Swin, PVT)
            take any size (mmseg's whole-image test feeds unpadded images) and every family returns the same
            sizes; ``None`` or 1 feeds the input as is.
        pretrained: deprecated alias of ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``.
        init_cfg: ``dict(type='Pretrained', checkpoint=path_or_url)`` to load a classification checkpoint.
        **model_kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ``strict_img_size``, ...).

    Input ``(B, 3, H, W)`` -> tuple of NCHW maps ``(B, C_i, ceil(H / s_i), ceil(W / s_i))``, one per
    ``out_indices``, with ``C_i = out_channels[i]`` and ``s_i = strides[i]``.
    """

    def __init__(self, model_name: str, out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, out_norm: bool = False, pad_to: int | None = 32,
                 pretrained: str | None = None,
                 init_cfg: dict | None = None, **model_kwargs: Any) -> None:
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('give either pretrained= or init_cfg=, not both')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        if init_cfg is not None and (init_cfg.get('type') != 'Pretrained' or 'checkpoint' not in init_cfg):
            raise ValueError(f"ACmixBackbone init_cfg must be dict(type='Pretrained', checkpoint=...), "
                             f'got {init_cfg}')
        super().__init__(init_cfg=None)
        self._pretrained = init_cfg   # handled by our init_weights, never by mmengine's initialisers
        if not timm.is_model(model_name):
            raise KeyError(f'unknown timm model {model_name!r} (is `import models` registering it?)')
        self.model_name = model_name
        self.model_kwargs = dict(model_kwargs)

        # Read the feature layout from a parameter-free copy of the full model (meta device: no memory, no init).
        full = _meta_model(model_name, **self.model_kwargs)
        info = list(full.feature_info)
        self._full_shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
        classifier = (getattr(full, 'pretrained_cfg', None) or {}).get('classifier') or ()
        self._classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        del full
        stage_ids = [i for i, f in enumerate(info) if f['reduction'] >= 4]
        out_indices = tuple(int(i) for i in out_indices)
        bad = [i for i in out_indices if not 0 <= i < len(stage_ids)]
        if bad or not out_indices:
            raise ValueError(f'{model_name}: out_indices {out_indices} out of range; it has {len(stage_ids)} '
                             f'stages with strides {[info[i]["reduction"] for i in stage_ids]}')
        if not -1 <= frozen_stages <= len(stage_ids):
            raise ValueError(f'{model_name}: frozen_stages must be in [-1, {len(stage_ids)}], got {frozen_stages}')
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        if pad_to is not None and pad_to < 1:
            raise ValueError(f'pad_to must be a positive int or None, got {pad_to}')
        self.pad_to = pad_to or 1
        self._stage_modules = [info[i]['module'] for i in stage_ids]

        self.body = timm.create_model(model_name, pretrained=False, features_only=True,
                                      out_indices=tuple(stage_ids[i] for i in out_indices), **model_kwargs)
        self._nhwc = str(getattr(self.body, 'output_fmt', 'NCHW')).upper().endswith('NHWC')
        self._out_channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction())
        self.out_norms = nn.ModuleList(nn.LayerNorm(c) for c in self._out_channels) if out_norm else None
        self._freeze_stages()

    @property
    def out_channels(self) -> list[int]:
        """Channels of each returned map, in ``out_indices`` order (the neck's ``in_channels``)."""
        return list(self._out_channels)

    # ----------------------------------------------------------------------------------------- freezing
    def _resolve(self, name: str) -> nn.Module:
        for cand in _candidates(name):
            try:
                return self.body.get_submodule(cand)
            except AttributeError:
                continue
        raise KeyError(f'{self.model_name}: feature module {name!r} not found in the feature extractor')

    def _frozen_modules(self) -> list[nn.Module]:
        """Modules of the stem and of the first ``frozen_stages`` stages (OpenMMLab semantics).

        Parameters are taken in registration order: the stem is everything registered before the first
        parameter of stage 0, and stage ``k`` extends the frozen prefix up to its own last parameter (so
        per-stage embeddings registered next to a stage, such as PVT's patch embeddings, go with it).
        """
        if self.frozen_stages < 0:
            return []
        params = list(self.body.parameters())
        stage0 = {id(p) for p in self._resolve(self._stage_modules[0]).parameters()}
        cut = next(i for i, p in enumerate(params) if id(p) in stage0)
        if self.frozen_stages > 0:
            last = {id(p) for p in self._resolve(self._stage_modules[self.frozen_stages - 1]).parameters()}
            cut = max(i for i, p in enumerate(params) if id(p) in last) + 1
        frozen = {id(p) for p in params[:cut]}
        # every module whose parameters are all frozen, containers included (their dropout/drop-path go to eval)
        modules = [m for m in self.body.modules()
                   if any(True for _ in m.parameters()) and all(id(p) in frozen for p in m.parameters())]
        if self.out_norms is not None:  # a frozen stage's output norm too (mmdet's Swin)
            modules += [n for n, i in zip(self.out_norms, self.out_indices) if i < self.frozen_stages]
        return modules

    def _freeze_stages(self) -> None:
        """``requires_grad=False`` and eval mode for the frozen prefix (re-applied after every ``train()``)."""
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> 'ACmixBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # ----------------------------------------------------------------------------------------- weights
    def init_weights(self) -> None:
        """Load ``init_cfg['checkpoint']`` (if any); the timm model keeps its own initialisation otherwise.

        Deliberately does not recurse into the timm modules: some have an ``init_weights`` of their own that
        would re-randomise them.
        """
        if self._pretrained is not None:
            path = str(self._pretrained['checkpoint'])
            state_dict = unwrap_state_dict(read_checkpoint(path))
            filter_fn = _checkpoint_filter(self.model_name)
            if filter_fn is not None:
                state_dict = filter_fn(state_dict, _meta_model(self.model_name, **self.model_kwargs))
            state_dict = {k: v for k, v in state_dict.items()
                          if not any(k.startswith(c + '.') for c in self._classifier)}
            load_backbone_state_dict(self.body, self._full_shapes, state_dict, path)
        self._is_init = True
        self._freeze_stages()

    # ----------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(B, 3, H, W)`` -> tuple of NCHW maps ``(B, C_i, ceil(H / s_i), ceil(W / s_i))``, ``s_i = strides[i]``."""
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.pad_to, -w % self.pad_to
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        feats = self.body(x)
        if self.out_norms is not None:  # over channels: last dim of NHWC maps
            feats = [norm(f) if self._nhwc else norm(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
                     for norm, f in zip(self.out_norms, feats)]
        if self._nhwc:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        if pad_h or pad_w:
            feats = [f[..., :-(-h // s), :-(-w // s)] for f, s in zip(feats, self.strides)]
        return tuple(f.contiguous() for f in feats)


def _register() -> None:
    """Register the adapter in every OpenMMLab MODELS registry that is installed (mmdet, mmseg)."""
    for pkg in ('mmdet', 'mmseg'):
        try:
            registry = __import__(f'{pkg}.registry', fromlist=['MODELS']).MODELS
        except ImportError:
            continue
        if 'ACmixBackbone' not in registry.module_dict:
            registry.register_module(name='ACmixBackbone', module=ACmixBackbone)


_register()
