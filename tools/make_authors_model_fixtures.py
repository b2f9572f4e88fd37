"""Model-level reference fixtures from the ACmix authors' own networks (run once; the outputs are committed).

    python tools/make_authors_model_fixtures.py --authors-repo /work/.mirror/LeapLabTHU+ACmix/repo \
        [--out tests/fixtures/authors_models] [--full-check]

The authors' files are read from their (bare) git repository with ``git show`` into a temporary directory and
imported from there; nothing of theirs is copied into this repository.  Their ResNet imports
``torchvision.models.utils`` (gone from torchvision), which is stubbed in ``sys.modules`` for the import.

Written under ``--out``:
    ``keys_<name>.json``  ``{key: shape}`` of the authors' full state dicts: ACmix-ResNet-26/38/50 (their
                          ``ResNet(Bottleneck, layers)``) and ACmix-Swin-T/S (their ``SwinTransformer_acmix``, 224).
    ``<case>.pt``         a small network of theirs with synthetic weights, in plain data
                          (``torch.load(weights_only=True)``)::

        {'arch': str, 'authors_kwargs': {...}, 'our_model': timm name, 'our_kwargs': {...}, 'format': 'resnet'|'swin',
         'seed': int, 'shapes': {key: [..]}, 'kept': {key: tensor}, 'input': Tensor, 'output': Tensor, 'source': str}

      Weights are not stored: ``synth_state_dict(shapes, seed, kept)`` regenerates them deterministically (one
      seeded generator per key), so even the 64 px ACmix-ResNet [1,1,1,1] case stays a few kB.  ``kept`` holds the
      non-learned buffers the authors' state dict carries (``relative_position_index``, ``attn_mask``,
      ``num_batches_tracked``) verbatim, so the test exercises our filter dropping or loading them.

``--full-check`` (not run by the tests: minutes on CPU) builds the authors' full ACmix-ResNet-50 and ACmix-Swin-T,
fills them with synthetic weights, saves them in the authors' formats (ResNet training script:
``{'state_dict': sd}`` with DDP ``module.`` keys; Swin release: ``{'model': sd}``), loads them with
``timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=...))`` and prints the max relative
output difference at 224x224.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import types
import zlib
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
AUTHORS_FILES = {
    'test_bottleneck.py': 'ResNet/test_bottleneck.py',
    'ResNet_ImageNet.py': 'ResNet/ResNet_ImageNet.py',
    'swin_transformer_acmix.py': 'Swin-Transformer/models/swin_transformer_acmix.py',
}
RESNET_LAYERS = {'acmix_resnet26': (1, 2, 4, 1), 'acmix_resnet38': (2, 3, 5, 2), 'acmix_resnet50': (3, 4, 6, 3)}
SWIN_DEPTHS = {'acmix_swin_tiny_patch4_window7_224': (2, 2, 6, 2), 'acmix_swin_small_patch4_window7_224': (2, 2, 18, 2)}

# Small cases: authors' constructor kwargs, our timm name + kwargs, input shape.
CASES = {
    'swin_tiny_config': dict(
        arch='swin', format='swin', seed=1,
        authors_kwargs=dict(img_size=32, patch_size=4, num_classes=10, embed_dim=16, depths=[2, 2], num_heads=[1, 2],
                            window_size=4, drop_path_rate=0.0),
        our_model='acmix_swin_tiny_patch4_window7_224',
        our_kwargs=dict(img_size=32, num_classes=10, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                        drop_path_rate=0.0),
        input=(2, 3, 32, 32)),
    'resnet_1111_64px': dict(
        arch='resnet', format='resnet', seed=2,
        authors_kwargs=dict(layers=[1, 1, 1, 1], num_classes=10),
        our_model='acmix_resnet26',
        our_kwargs=dict(layers=(1, 1, 1, 1), num_classes=10),
        input=(2, 3, 64, 64)),
}


# ----------------------------------------------------------------------------------------------------------------
# synthetic weights, shared with tests/test_resnet_swin.py

def _synth(key: str, shape: Tuple[int, ...], seed: int) -> torch.Tensor:
    """One tensor, from a generator seeded by (seed, key): order-independent and reproducible on any CPU."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    n = torch.randn(shape, generator=g)
    leaf = key.rsplit('.', 1)[-1]
    if leaf == 'running_var':
        return 0.5 + n.abs() * 0.5
    if leaf == 'running_mean':
        return 0.1 * n
    if leaf in ('rate1', 'rate2'):
        return 0.5 + 0.2 * n  # rate1 != rate2 != 0.5
    if len(shape) <= 1:
        return 1.0 + 0.1 * n if leaf == 'weight' else 0.1 * n  # norm scales / biases
    if 'relative_position_bias_table' in key:
        return 0.5 * n
    fan_in = math.prod(shape[1:])
    return n / math.sqrt(fan_in)


def synth_state_dict(shapes: Mapping[str, Any], seed: int, kept: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rebuild a fixture's weights: ``kept`` buffers verbatim, every other key synthesised from its shape."""
    return {k: kept[k].clone() if k in kept else _synth(k, tuple(s), seed) for k, s in shapes.items()}


def _learned(model: nn.Module) -> set:
    """Keys that are synthesised: parameters and BN running statistics (other buffers are kept verbatim)."""
    keys = set(dict(model.named_parameters()))
    keys |= {k for k in model.state_dict() if k.endswith(('running_mean', 'running_var'))}
    return keys


def randomize(model: nn.Module, seed: int) -> Tuple[Dict[str, list], Dict[str, torch.Tensor]]:
    """Fill ``model`` with synthetic weights; return (shapes, kept buffers)."""
    sd = model.state_dict()
    learned = _learned(model)
    shapes = {k: list(v.shape) for k, v in sd.items()}
    kept = {k: v.clone() for k, v in sd.items() if k not in learned}
    model.load_state_dict(synth_state_dict(shapes, seed, kept))
    return shapes, kept


def authors_format(state_dict: Mapping[str, torch.Tensor], fmt: str) -> Dict[str, Any]:
    """Wrap a state dict the way the authors saved it: ResNet script (DDP) or Swin release."""
    if fmt == 'resnet':
        return {'state_dict': {f'module.{k}': v for k, v in state_dict.items()}, 'epoch': 100}
    if fmt == 'swin':
        return {'model': dict(state_dict)}
    raise ValueError(f'unknown format {fmt!r}')


# ----------------------------------------------------------------------------------------------------------------
# the authors' code

def load_authors(repo: str) -> Tuple[types.ModuleType, types.ModuleType, str]:
    """Import the authors' ResNet and Swin modules from ``repo`` (bare git dir); returns (resnet, swin, commit)."""
    commit = subprocess.run(['git', '-C', repo, 'rev-parse', 'HEAD'], check=True, capture_output=True,
                            text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix='acmix_authors_')
    for name, path in AUTHORS_FILES.items():
        src = subprocess.run(['git', '-C', repo, 'show', f'HEAD:{path}'], check=True, capture_output=True).stdout
        Path(tmp, name).write_bytes(src)
    stub = types.ModuleType('torchvision.models.utils')
    stub.load_state_dict_from_url = torch.hub.load_state_dict_from_url
    sys.modules.setdefault('torchvision.models.utils', stub)
    sys.path.insert(0, tmp)
    try:
        import ResNet_ImageNet as resnet_mod  # noqa: E402  (authors' file, imports their test_bottleneck)
        import swin_transformer_acmix as swin_mod  # noqa: E402
    finally:
        sys.path.remove(tmp)
    return resnet_mod, swin_mod, commit


def build_authors(mods, arch: str, kwargs: Dict[str, Any]) -> nn.Module:
    resnet_mod, swin_mod = mods
    if arch == 'resnet':
        kw = dict(kwargs)
        return resnet_mod.ResNet(resnet_mod.Bottleneck, kw.pop('layers'), **kw).eval()
    return swin_mod.SwinTransformer_acmix(**kwargs).eval()


def _ours():
    """Our ``models`` package (entrypoints registered) and checkpoint writers, importable from the repository root."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import models  # noqa: F401
    from models import _checkpoint
    return _checkpoint


def build_ours(name: str, path: str, kwargs: Dict[str, Any]) -> nn.Module:
    """Our model with the authors'-format file loaded through timm's standard pretrained mechanism."""
    import timm
    _ours()
    overlay = dict(file=path, num_classes=kwargs.get('num_classes', 1000))
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--authors-repo', required=True)
    parser.add_argument('--out', type=Path, default=ROOT / 'tests/fixtures/authors_models')
    parser.add_argument('--full-check', action='store_true', help='also compare full ACmix-ResNet-50 / Swin-T at 224')
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    resnet_mod, swin_mod, commit = load_authors(args.authors_repo)
    mods = (resnet_mod, swin_mod)
    args.out.mkdir(parents=True, exist_ok=True)

    for name, layers in RESNET_LAYERS.items():
        sd = build_authors(mods, 'resnet', dict(layers=list(layers))).state_dict()
        shapes = {k: list(v.shape) for k, v in sd.items()}
        _ours().atomic_write_text(json.dumps(shapes, indent=0), args.out / f'keys_{name}.json')
    for name, depths in SWIN_DEPTHS.items():
        sd = build_authors(mods, 'swin', dict(depths=list(depths))).state_dict()
        shapes = {k: list(v.shape) for k, v in sd.items()}
        _ours().atomic_write_text(json.dumps(shapes, indent=0), args.out / f'keys_{name}.json')

    for case, c in CASES.items():
        model = build_authors(mods, c['arch'], c['authors_kwargs'])
        shapes, kept = randomize(model, c['seed'])
        x = torch.randn(c['input'], generator=torch.Generator().manual_seed(c['seed']))
        with torch.no_grad():
            y = model(x)
        src = {'resnet': 'ResNet/ResNet_ImageNet.py', 'swin': AUTHORS_FILES['swin_transformer_acmix.py']}[c['arch']]
        blob = dict(arch=c['arch'], format=c['format'], seed=c['seed'], authors_kwargs=c['authors_kwargs'],
                    our_model=c['our_model'], our_kwargs=c['our_kwargs'], shapes=shapes, kept=kept, input=x,
                    output=y, source=f'LeapLabTHU/ACmix@{commit}:{src}')
        _ours().atomic_save(blob, args.out / f'{case}.pt')
        # self-check through our models, the same way the test does
        with tempfile.TemporaryDirectory() as d:
            ck = os.path.join(d, 'ck.pth')
            torch.save(authors_format(synth_state_dict(shapes, c['seed'], kept), c['format']), ck)
            with torch.no_grad():
                ours = build_ours(c['our_model'], ck, c['our_kwargs'])(x)
        print(f'{case}: output {tuple(y.shape)}, max rel diff ours vs authors {rel_diff(ours, y):.2e}')

    if args.full_check:
        for arch, name, kw, fmt in (
                ('resnet', 'acmix_resnet50', dict(layers=[3, 4, 6, 3]), 'resnet'),
                ('swin', 'acmix_swin_tiny_patch4_window7_224', dict(depths=[2, 2, 6, 2], drop_path_rate=0.2), 'swin')):
            model = build_authors(mods, arch, kw)
            shapes, kept = randomize(model, 7)
            x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
            with torch.no_grad():
                y = model(x)
            with tempfile.TemporaryDirectory() as d:
                ck = os.path.join(d, 'ck.pth')
                torch.save(authors_format(model.state_dict(), fmt), ck)
                with torch.no_grad():
                    ours = build_ours(name, ck, {})(x)
            print(f'full-size {name} @224: max rel diff ours vs authors {rel_diff(ours, y):.2e}')


if __name__ == '__main__':
    main()
