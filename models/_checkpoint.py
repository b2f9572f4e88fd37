"""Checkpoint files, defined once for the whole project: read, unwrap, check strictly, write atomically.

Every part that touches a checkpoint goes through here: the families' ``checkpoint_filter_fn`` (timm's
``pretrained_cfg_overlay=dict(file=...)`` path), the mmdet/mmseg adapter (``models.mm_backbone``), classification
training and testing (``classification.checkpoint``), mmtask's ``last_checkpoint`` / ``metrics.json`` and
``tools/plot_rates.py``.

* Reading: ``read_checkpoint`` is ``torch.load(weights_only=True)`` on the CPU (local file or URL), with an error
  naming the file.  Checkpoints are plain data; nothing else is unpickled.
* Unwrapping: ``unwrap_state_dict`` accepts

      plain ``state_dict``                                   (timm's ``save``, our backbone files)
      ``{'model': state_dict, ...}``                         (Swin / ACmix-Swin release, our training checkpoints)
      ``{'state_dict': state_dict, ...}`` with ``module.*``  (the authors' ResNet training script, DDP)

  and strips every leading ``module.`` / ``_orig_mod.`` (DDP, ``torch.compile``).  EMA entries are not preferred
  here (timm's file reader prefers them itself; classification picks ``'ema'`` explicitly).
* Checking: ``check_state_dict`` raises one ``CheckpointMismatchError`` listing missing, unexpected and mis-shaped
  keys, in one format wherever it is raised.  It is never stricter than ``load_state_dict(strict=True)``: a missing
  ``num_batches_tracked`` buffer is accepted, as torch accepts it.  timm loads with ``strict=True`` *except* when
  it drops a classifier whose class count differs, where it silently goes non-strict; every family's filter ends
  with ``check_state_dict``, which closes that gap.
* Writing: ``atomic_save`` / ``atomic_write_text`` write ``<file>.tmp`` and rename it with ``os.replace``, so a
  crash or a full disk leaves the previous file intact.  ``<work_dir>/last_checkpoint`` (mmengine's convention,
  also used by classification) names the newest complete checkpoint and is written the same way.
"""
from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

__all__ = ['CheckpointError', 'CheckpointMismatchError', 'LAST_CHECKPOINT', 'read_checkpoint', 'unwrap_state_dict',
           'check_state_dict', 'filter_state_dict', 'atomic_save', 'atomic_write_text', 'read_last_checkpoint',
           'write_last_checkpoint', 'resume_source']

_WRAPPER_KEYS = ('model', 'state_dict')
_PREFIXES = ('module.', '_orig_mod.')
# buffers torch's own strict load accepts when absent (BatchNorm fills in num_batches_tracked)
_MAY_BE_ABSENT = ('num_batches_tracked',)
_SHOWN = 20  # keys listed per kind in a mismatch message
LAST_CHECKPOINT = 'last_checkpoint'


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or written, or holds no state dict; the message names the file."""


class CheckpointMismatchError(CheckpointError, KeyError):
    """A state dict whose keys or shapes do not fit the model; the message lists them.

    Also a ``KeyError``, the exception timm's loading path and the families' filters have always raised.
    """

    def __str__(self) -> str:  # KeyError would print the repr, newlines escaped
        return str(self.args[0]) if self.args else ''


# ------------------------------------------------------------------------------------------------- reading
def read_checkpoint(path: Union[str, os.PathLike]) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)``; ``path`` may be an http(s) URL.

    Raises:
        CheckpointError: the file does not exist, or cannot be read as plain data (names the file and the cause).
    """
    path = str(path)
    if path.startswith(('http://', 'https://')):
        return torch.hub.load_state_dict_from_url(path, map_location='cpu', weights_only=True)
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        raise CheckpointError(f'cannot read checkpoint {path} with torch.load(weights_only=True) '
                              f'({type(e).__name__}: {first})') from e


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """Return the tensor mapping inside a checkpoint, without wrapper prefixes.

    Args:
        checkpoint: a state dict, or a dict holding one under ``'model'`` or ``'state_dict'`` (nesting allowed).

    Returns:
        ``{key: tensor}`` with every leading ``module.`` / ``_orig_mod.`` removed (DDP, torch.compile, either order).

    Raises:
        CheckpointError: no mapping of tensors inside (names the non-tensor entries).
    """
    sd: Any = checkpoint
    while isinstance(sd, Mapping):
        inner = next((sd[k] for k in _WRAPPER_KEYS if isinstance(sd.get(k), Mapping)), None)
        if inner is None:
            break
        sd = inner
    if not isinstance(sd, Mapping):
        raise CheckpointError(f'checkpoint holds no state dict (got {type(sd).__name__})')
    out = {}
    for k, v in sd.items():
        while k.startswith(_PREFIXES):
            k = k[len(next(p for p in _PREFIXES if k.startswith(p))):]
        out[k] = v
    bad = [k for k, v in out.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f'checkpoint entries are not tensors: {bad[:10]}')
    return out


# ------------------------------------------------------------------------------------------------- checking
def _listing(items: Sequence[str]) -> str:
    shown = ', '.join(items[:_SHOWN])
    return f'{shown} ... ({len(items)} in all)' if len(items) > _SHOWN else shown


def check_state_dict(
        state_dict: Mapping[str, torch.Tensor],
        expected: Union[nn.Module, Mapping[str, Sequence[int]]],
        ignore: Iterable[str] = (),
        *,
        optional: Iterable[str] = (),
        source: str = 'checkpoint',
) -> None:
    """Raise unless ``state_dict`` has exactly the expected keys and shapes (as ``load_state_dict(strict=True)``).

    Args:
        state_dict: filtered checkpoint.
        expected: the module it is meant for (its persistent ``state_dict()`` is the reference), or
            ``{key: shape}``.
        ignore: key prefixes left unchecked (a classifier that timm drops and re-initialises when ``num_classes``
            differs from the checkpoint's, including a headless ``num_classes=0`` model).
        optional: keys of ``expected`` that may be absent (when present, their shape is checked), besides
            ``num_batches_tracked`` buffers, which torch also accepts when absent.
        source: what the state dict is (a file name) for the message.

    Raises:
        CheckpointMismatchError: ``<source> does not fit <model>: missing keys (n): ...; unexpected keys (n): ...;
            shape mismatches (n): <key>: checkpoint <shape> vs model <shape>``.
    """
    if isinstance(expected, nn.Module):  # named as registered with timm where it is a timm model
        target = (getattr(expected, 'pretrained_cfg', None) or {}).get('architecture') or type(expected).__name__
        expected = {k: tuple(v.shape) for k, v in expected.state_dict().items()}
    else:
        target = 'the model'
        expected = {k: tuple(s) for k, s in expected.items()}
    ignore, optional = tuple(ignore), set(optional)
    ref = {k: s for k, s in expected.items() if not (ignore and k.startswith(ignore))}
    got = {k: v for k, v in state_dict.items() if not (ignore and k.startswith(ignore))}
    missing = sorted(k for k in set(ref) - set(got) if k not in optional and not k.endswith(_MAY_BE_ABSENT))
    unexpected = sorted(set(got) - set(ref))
    wrong = [f'{k}: checkpoint {tuple(got[k].shape)} vs model {ref[k]}'
             for k in sorted(set(ref) & set(got)) if tuple(got[k].shape) != ref[k]]
    if missing or unexpected or wrong:
        parts = [f'{kind} ({len(keys)}): {_listing(keys)}' for kind, keys in
                 (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', wrong)) if keys]
        raise CheckpointMismatchError(f'{source} does not fit {target}: ' + '; '.join(parts))


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
        CheckpointMismatchError: see ``check_state_dict``.
    """
    drop = tuple(drop)
    out = {k: v for k, v in unwrap_state_dict(checkpoint).items() if not (drop and any(d in k for d in drop))}
    if convert is not None:
        out = convert(out, model)
    check_state_dict(out, model, ignore=_classifier_prefixes(model))
    return out


# ------------------------------------------------------------------------------------------------- writing
def _atomic(write: Callable[[Path], None], path: Union[str, os.PathLike]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        what = 'disk full' if e.errno == errno.ENOSPC else f'{type(e).__name__}: {e}'
        raise CheckpointError(f'could not write {path} ({what}); the previous file is intact') from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Union[str, os.PathLike]) -> None:
    """``torch.save(obj, path)`` through ``<path>.tmp`` + ``os.replace``.

    Raises:
        CheckpointError: the write failed (a full disk is named as such); ``path`` is untouched, no temp file left.
    """
    _atomic(lambda tmp: torch.save(obj, tmp), path)


def atomic_write_text(text: str, path: Union[str, os.PathLike]) -> None:
    """Write a text file through ``<path>.tmp`` + ``os.replace`` (errors as ``atomic_save``)."""
    _atomic(lambda tmp: tmp.write_text(text), path)


def write_last_checkpoint(work_dir: Union[str, os.PathLike], checkpoint: Union[str, os.PathLike]) -> None:
    """Point ``<work_dir>/last_checkpoint`` at ``checkpoint`` (absolute path), atomically."""
    atomic_write_text(str(Path(checkpoint).resolve()), Path(work_dir) / LAST_CHECKPOINT)


def read_last_checkpoint(work_dir: Union[str, os.PathLike]) -> Optional[Path]:
    """The checkpoint named by ``<work_dir>/last_checkpoint``, or None if there is no such pointer.

    Raises:
        CheckpointError: the pointer names a file that does not exist.
    """
    pointer = Path(work_dir) / LAST_CHECKPOINT
    if not pointer.is_file():
        return None
    path = Path(pointer.read_text().strip())
    if not path.is_file():
        raise CheckpointError(f'{pointer} names {path}, which does not exist')
    return path


def resume_source(resume: Optional[str], work_dir: Union[str, os.PathLike]) -> Optional[Path]:
    """The checkpoint ``--resume`` means, for every task: None (no ``--resume``), ``'auto'`` (``--resume`` alone:
    the one ``<work_dir>/last_checkpoint`` names) or a path.

    Raises:
        CheckpointError: nothing to resume (no pointer), or the named file does not exist.
    """
    if resume is None:
        return None
    path = read_last_checkpoint(work_dir) if resume == 'auto' else Path(resume)
    if path is None:
        raise CheckpointError(f'--resume: {Path(work_dir) / LAST_CHECKPOINT} not found '
                              f'(nothing to resume; pass a checkpoint path or drop --resume)')
    if not path.is_file():
        raise CheckpointError(f'--resume {resume}: no such checkpoint')
    return path
