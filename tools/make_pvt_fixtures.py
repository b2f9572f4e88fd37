"""Reference fixtures from the original PVT v1 code (run once; the outputs are committed).

    python tools/make_pvt_fixtures.py --pvt-repo /work/.mirror/whai362+PVT/repo [--out tests/fixtures/pvt]

``classification/pvt.py`` is read from the (bare) git repository of whai362/PVT with ``git show`` into a temporary
directory and imported from there; nothing of it is copied into this repository.  It imports timm's deprecated
``timm.models.layers`` / ``timm.models.registry`` aliases, which timm 1.0 still provides (with a FutureWarning).

Written under ``--out``:
    ``keys_pvt_v1_tiny.json``, ``keys_pvt_v1_small.json``: ``{key: shape}`` of the original full ``pvt_tiny`` /
        ``pvt_small`` state dicts at 224 (what a released PVT v1 checkpoint holds).
    ``pvt_v1_small_config.pt``: a small PVT v1 of the original code (PVT-Tiny's ratios, narrower and shallower,
        64 px grid) with synthetic weights (``tools/make_authors_model_fixtures.randomize``), in plain data
        (``torch.load(weights_only=True)``)::

            {'source': str, 'original_kwargs': {...}, 'our_model': timm name, 'our_kwargs': {...},
             'state_dict': the original model's state dict (its key layout),
             'inputs': {name: (B, 3, H, W)}, 'logits': {name: (B, num_classes)}}

      Inputs: ``'grid'`` (64 x 64, the stored position grid) and ``'resampled'`` (64 x 96: every position
      embedding is resampled, the class token's row is not).

``--full-check`` (not run by the tests: a minute on CPU) fills the original full ``pvt_tiny`` and ``pvt_small``
with synthetic weights, saves them as released (plain state dict), loads them into ``pvt_v1_tiny`` /
``pvt_v1_small`` through timm and prints the max relative logit difference at 224 x 224.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from models._checkpoint import atomic_save, atomic_write_text  # noqa: E402
from tools.make_authors_model_fixtures import randomize, rel_diff  # noqa: E402

SOURCE_FILE = 'classification/pvt.py'
FULL = {'pvt_v1_tiny': 'pvt_tiny', 'pvt_v1_small': 'pvt_small'}  # ours -> the original entrypoint
SMALL_CONFIG = dict(embed_dims=[16, 16, 32, 32], num_heads=[1, 1, 2, 2], depths=[1, 1, 1, 2], num_classes=10)
IMG_SIZE, SEED = 64, 3
INPUTS = {'grid': (2, 3, 64, 64), 'resampled': (2, 3, 64, 96)}


def load_original(repo: str):
    """Import the original ``classification/pvt.py`` from ``repo`` (bare git dir); returns (module, commit)."""
    commit = subprocess.run(['git', '-C', repo, 'rev-parse', 'HEAD'], check=True, capture_output=True,
                            text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix='pvt_original_')
    src = subprocess.run(['git', '-C', repo, 'show', f'HEAD:{SOURCE_FILE}'], check=True, capture_output=True).stdout
    Path(tmp, 'pvt_original.py').write_bytes(src)
    sys.path.insert(0, tmp)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)  # timm's deprecated import paths
            import pvt_original  # noqa: E402
    finally:
        sys.path.remove(tmp)
    return pvt_original, commit


def build_small_original(module) -> nn.Module:
    """PVT-Tiny's hyper-parameters (``pvt_tiny`` in the original file) at ``SMALL_CONFIG`` widths and depths."""
    return module.PyramidVisionTransformer(
        img_size=IMG_SIZE, patch_size=4, mlp_ratios=[8, 8, 4, 4], qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), sr_ratios=[8, 4, 2, 1], **SMALL_CONFIG).eval()


def our_kwargs() -> dict:
    c = SMALL_CONFIG
    return dict(img_size=IMG_SIZE, embed_dims=tuple(c['embed_dims']), num_heads=tuple(c['num_heads']),
                depths=tuple(c['depths']), num_classes=c['num_classes'])


def load_ours(path: str, name: str = 'pvt_v1_tiny', small: bool = True) -> nn.Module:
    """Our ``name`` (at the fixture's config if ``small``) with the file at ``path`` loaded through timm."""
    import timm
    import models  # noqa: F401  (registers the entrypoints)
    kwargs = our_kwargs() if small else {}
    overlay = dict(file=path, num_classes=kwargs.get('num_classes', 1000))
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pvt-repo', required=True, help='git directory of github.com/whai362/PVT')
    parser.add_argument('--out', type=Path, default=ROOT / 'tests/fixtures/pvt')
    parser.add_argument('--full-check', action='store_true', help='also compare full PVT-Tiny / Small at 224')
    args = parser.parse_args(argv)
    module, commit = load_original(args.pvt_repo)
    args.out.mkdir(parents=True, exist_ok=True)

    for ours, original in FULL.items():
        sd = getattr(module, original)().state_dict()  # real tensors: its __init__ calls .item()
        shapes = {k: list(v.shape) for k, v in sd.items()}
        atomic_write_text(json.dumps(shapes, indent=0), args.out / f'keys_{ours}.json')

    torch.manual_seed(SEED)
    model = build_small_original(module)
    randomize(model, SEED)
    inputs = {k: torch.randn(shape, generator=torch.Generator().manual_seed(SEED + i))
              for i, (k, shape) in enumerate(INPUTS.items())}
    with torch.no_grad():
        logits = {k: model(x) for k, x in inputs.items()}
    blob = dict(source=f'whai362/PVT@{commit}:{SOURCE_FILE}', original_kwargs=dict(SMALL_CONFIG, img_size=IMG_SIZE),
                our_model='pvt_v1_tiny', our_kwargs=our_kwargs(),
                state_dict={k: v.clone() for k, v in model.state_dict().items()}, inputs=inputs, logits=logits)
    path = args.out / 'pvt_v1_small_config.pt'
    atomic_save(blob, path)

    # self-check through our model, the way the test loads it
    with tempfile.TemporaryDirectory() as d:
        ck = os.path.join(d, 'pvt.pth')
        torch.save(blob['state_dict'], ck)
        with torch.no_grad():
            errs: Dict[str, float] = {k: rel_diff(load_ours(ck)(x), logits[k]) for k, x in inputs.items()}
    print(f'{path} ({path.stat().st_size} bytes): max rel diff ours vs original {errs}')

    if args.full_check:
        for ours_name, original in FULL.items():
            model = getattr(module, original)().eval()
            randomize(model, SEED)
            x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(SEED))
            with tempfile.TemporaryDirectory() as d, torch.no_grad():
                ck = os.path.join(d, 'pvt.pth')
                torch.save(model.state_dict(), ck)
                err = rel_diff(load_ours(ck, ours_name, small=False)(x), model(x))
            print(f'full-size {ours_name} @224: max rel diff ours vs original {err:.2e}')


if __name__ == '__main__':
    main()
