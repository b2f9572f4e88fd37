"""Checkpoint helpers shared by every model family's ``checkpoint_filter_fn``.

timm loads a local file with ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))``.
Its file reader already unwraps ``{'state_dict': ...}`` / ``{'model': ...}`` and strips DDP / ``torch.compile``
prefixes, but a filter can also be handed a raw object (hub loads, tests, our own tools), so the unwrapping is
repeated here: it is idempotent.  timm then loads with ``strict=True`` *except* when it drops a classifier whose
class count differs (or cannot adapt the stem), where it silently goes non-strict.  ``check_state_dict`` closes
that gap: every family's filter ends with it, so a missing, unexpected or mis-shaped key is an error that names
the key, whatever timm does afterwards.

Formats handled (all after ``torch.load(weights_only=True)``):
    * plain ``state_dict``                              (our own checkpoints, timm's ``save``)
    * ``{'model': state_dict, ...}``                    (Swin / ACmix-Swin release, our training checkpoints)
    * ``{'state_dict': state_dict, ...}`` with keys ``module.*``   (the authors' ResNet training script, DDP)
    * ``{'model_ema' | 'state_dict_ema': ...}`` is *not* preferred here (timm's file reader prefers EMA itself).
"""
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

import torch
import torch.nn as nn

__all__ = ['unwrap_state_dict', 'check_state_dict', 'filter_state_dict']

_WRAPPER_KEYS = ('model', 'state_dict')
_PREFIXES = ('module.', '_orig_mod.')


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """Return the tensor mapping inside a checkpoint, without wrapper prefixes.

    Args:
        checkpoint: a state dict, or a dict holding one under ``'model'`` or ``'state_dict'`` (nesting allowed).

    Returns:
        ``{key: tensor}`` with every leading ``module.`` / ``_orig_mod.`` removed (DDP, torch.compile, either order).
    """
    sd: Any = checkpoint
    while isinstance(sd, Mapping):
        inner = next((sd[k] for k in _WRAPPER_KEYS if isinstance(sd.get(k), Mapping)), None)
        if inner is None:
            break
        sd = inner
    if not isinstance(sd, Mapping):
        raise TypeError(f'checkpoint holds no state dict (got {type(sd).__name__})')
    out = {}
    for k, v in sd.items():
        while k.startswith(_PREFIXES):
            k = k[len(next(p for p in _PREFIXES if k.startswith(p))):]
        out[k] = v
    bad = [k for k, v in out.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f'checkpoint entries are not tensors: {bad[:10]}')
    return out


def check_state_dict(
        state_dict: Mapping[str, torch.Tensor],
        model: nn.Module,
        ignore: Iterable[str] = (),
) -> None:
    """Raise unless ``state_dict`` has exactly the model's keys and shapes.

    Args:
        state_dict: filtered checkpoint.
        model: the module it is meant for (its persistent ``state_dict()`` is the reference).
        ignore: key prefixes left unchecked (a classifier that timm drops and re-initialises when ``num_classes``
            differs from the checkpoint's, including a headless ``num_classes=0`` model).

    Raises:
        KeyError: naming the missing keys, the unexpected keys and the mismatched shapes.
    """
    ignore = tuple(ignore)
    ref = {k: v for k, v in model.state_dict().items() if not (ignore and k.startswith(ignore))}
    got = {k: v for k, v in state_dict.items() if not (ignore and k.startswith(ignore))}
    missing = sorted(set(ref) - set(got))
    unexpected = sorted(set(got) - set(ref))
    wrong = [f'{k}: checkpoint {tuple(got[k].shape)} vs model {tuple(ref[k].shape)}'
             for k in sorted(set(ref) & set(got)) if got[k].shape != ref[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f'missing keys ({len(missing)}): {missing}')
        if unexpected:
            parts.append(f'unexpected keys ({len(unexpected)}): {unexpected}')
        if wrong:
            parts.append(f'shape mismatches ({len(wrong)}): {wrong}')
        raise KeyError(f'checkpoint does not match {type(model).__name__}: ' + '; '.join(parts))


def _classifier_prefixes(model: nn.Module) -> tuple:
    """Classifier module names of ``model`` when its class count differs from its pretrained cfg's."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    names = cfg.get('classifier')
    if not names or cfg.get('num_classes') == getattr(model, 'num_classes', None):
        return ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(n + '.' for n in names)


def filter_state_dict(
        checkpoint: Mapping[str, Any],
        model: nn.Module,
        drop: Iterable[str] = (),
        convert: Optional[Callable[[Dict[str, torch.Tensor], nn.Module], Dict[str, torch.Tensor]]] = None,
) -> Dict[str, torch.Tensor]:
    """Unwrap, drop recomputed buffers, convert, then strictly check: the body of every ``checkpoint_filter_fn``.

    Args:
        checkpoint: anything ``unwrap_state_dict`` accepts.
        model: target model, before timm's ``load_state_dict``.
        drop: substrings of keys to discard (e.g. ``relative_position_index``, ``attn_mask``: buffers the source
            saved but this model recomputes).
        convert: optional family-specific remapping ``(state_dict, model) -> state_dict`` (e.g. timm's Swin filter
            that moves the original layout's ``layers.i.downsample`` to ``layers.{i+1}`` and ``head`` to ``head.fc``).

    Returns:
        the state dict, guaranteed to match ``model`` key for key and shape for shape (the classifier excepted when
        ``num_classes`` differs from the pretrained cfg's: timm drops it afterwards).

    Raises:
        KeyError: see ``check_state_dict``.
    """
    drop = tuple(drop)
    out = {k: v for k, v in unwrap_state_dict(checkpoint).items() if not (drop and any(d in k for d in drop))}
    if convert is not None:
        out = convert(out, model)
    check_state_dict(out, model, ignore=_classifier_prefixes(model))
    return out
