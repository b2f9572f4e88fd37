"""Write small reference fixtures from the ACmix authors' own modules (run once; the outputs are committed).

    python tools/make_authors_fixtures.py --authors-repo /work/.mirror/LeapLabTHU+ACmix/repo \
        --out tests/fixtures/authors

The authors' files are read from the (bare) git repository with ``git show`` into a temporary directory and
imported from there; nothing of theirs is copied into this repository.  Each fixture is a ``.pt`` file holding
plain data, loadable with ``torch.load(weights_only=True)``::

    {'kind': 'resnet_acmix' | 'swin_window_acmix', 'config': {...}, 'state_dict': {...},
     'input': Tensor, 'output': Tensor, 'source': 'LeapLabTHU/ACmix@<commit>:<path>', ...}

``resnet_acmix``: the authors' ``ACmix`` (ResNet/test_bottleneck.py), input (B, C, H, W).
``swin_window_acmix``: the authors' ``WindowAttention_acmix`` as their ``SwinTransformerBlock`` drives it (cyclic
roll by ``-shift``, their attention mask, roll back; no norm / MLP), input and output (B, H, W, C); the fixture
also stores ``shift_size`` and their ``attn_mask`` (or None).

Every parameter is randomised (rates included, so that rate1 != rate2 != 0.5 and ``dep_conv`` is not a shift).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch

RESNET_PATH = 'ResNet/test_bottleneck.py'
SWIN_PATH = 'Swin-Transformer/models/swin_transformer_acmix.py'

# name -> ACmix constructor kwargs (authors' positional names) and input shape (B, C, H, W)
RESNET_CASES = {
    'resnet_acmix_s1': (dict(in_planes=16, out_planes=16, kernel_att=7, head=4, kernel_conv=3, stride=1),
                        (1, 16, 12, 10)),
    'resnet_acmix_s2': (dict(in_planes=16, out_planes=16, kernel_att=7, head=4, kernel_conv=3, stride=2),
                        (1, 16, 12, 10)),
    'resnet_acmix_in8_k5': (dict(in_planes=8, out_planes=16, kernel_att=5, head=2, kernel_conv=3, stride=1),
                            (2, 8, 6, 7)),
}
# name -> (dim, num_heads, window, shift, input shape (B, H, W, C))
SWIN_CASES = {
    'swin_window_acmix_noshift': (16, 2, 4, 0, (1, 8, 8, 16)),
    'swin_window_acmix_shift': (16, 2, 4, 2, (1, 8, 12, 16)),
}


def load_authors_module(repo: Path, path: str, tmp: Path) -> tuple[ModuleType, str]:
    """``git show HEAD:<path>`` from the bare repo into ``tmp`` and import it; returns (module, source tag)."""
    commit = subprocess.run(['git', '--git-dir', str(repo), 'rev-parse', 'HEAD'], check=True,
                            capture_output=True, text=True).stdout.strip()
    text = subprocess.run(['git', '--git-dir', str(repo), 'show', f'HEAD:{path}'], check=True,
                          capture_output=True, text=True).stdout
    name = 'authors_' + Path(path).stem
    file = tmp / f'{name}.py'
    file.write_text(text)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, f'LeapLabTHU/ACmix@{commit}:{path}'


@torch.no_grad()
def randomise_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Overwrite every parameter with N(0, 0.3^2) noise; rates get distinct values away from 0.5."""
    for name, p in module.named_parameters():
        if name in ('rate1', 'rate2'):
            p.copy_(torch.rand(p.shape, generator=generator) * 0.6 + (0.1 if name == 'rate1' else 0.8))
        else:
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def resnet_fixtures(module: ModuleType, source: str, generator: torch.Generator) -> dict[str, dict]:
    out = {}
    for name, (config, shape) in RESNET_CASES.items():
        m = module.ACmix(**config).eval()
        randomise_(m, generator)
        x = torch.randn(shape, generator=generator)
        with torch.no_grad():
            y = m(x)  # x on CPU -> the authors' position(h, w, is_cuda=False) path
        out[name] = dict(kind='resnet_acmix', config=config, state_dict=m.state_dict(), input=x, output=y,
                         source=source)
    return out


def swin_fixtures(module: ModuleType, source: str, generator: torch.Generator) -> dict[str, dict]:
    out = {}
    for name, (dim, heads, window, shift, shape) in SWIN_CASES.items():
        _, h, w, _ = shape
        block = module.SwinTransformerBlock(dim, input_resolution=(h, w), num_heads=heads, window_size=window,
                                            shift_size=shift).eval()
        attn = block.attn
        randomise_(attn, generator)
        x = torch.randn(shape, generator=generator)
        with torch.no_grad():  # the attention part of their block's forward: roll, attn with mask, roll back
            shifted = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2)) if shift else x
            y = attn(shifted, h, w, mask=block.attn_mask)
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2)) if shift else y
        config = dict(dim=dim, num_heads=heads, window_size=window)
        out[name] = dict(kind='swin_window_acmix', config=config, state_dict=attn.state_dict(), input=x, output=y,
                         shift_size=shift, attn_mask=block.attn_mask, source=source)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--authors-repo', required=True, type=Path, help='bare git repo of LeapLabTHU/ACmix')
    parser.add_argument('--out', required=True, type=Path, help='output folder for the .pt fixtures')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.authors_repo / 'HEAD').exists() and not (args.authors_repo / '.git').exists():
        parser.error(f'--authors-repo {args.authors_repo} is not a git repository')

    generator = torch.Generator().manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fixtures = {}
        resnet, source = load_authors_module(args.authors_repo, RESNET_PATH, Path(tmp))
        fixtures.update(resnet_fixtures(resnet, source, generator))
        swin, source = load_authors_module(args.authors_repo, SWIN_PATH, Path(tmp))
        fixtures.update(swin_fixtures(swin, source, generator))
    for name, data in fixtures.items():
        path = args.out / f'{name}.pt'
        fd, tmp_path = tempfile.mkstemp(dir=args.out, suffix='.tmp')
        os.close(fd)
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600
        torch.save(data, tmp_path)
        os.replace(tmp_path, path)
        print(f'wrote {path} ({path.stat().st_size} bytes)')


if __name__ == '__main__':
    sys.exit(main())
