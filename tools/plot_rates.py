"""Plot ACmix's path weights per layer: |alpha|, |beta| and log|alpha/beta|, as in the paper's figure.

    python tools/plot_rates.py work_dirs/acmix_swin_tiny/best.pth --out rates.png
    python tools/plot_rates.py acmix_swin_tiny.pth --out rates.png --model "Swin-T-ACmix (authors)" --csv rates.csv

``F_out = alpha * F_att + beta * F_conv`` with alpha = ``rate1`` and beta = ``rate2``.  The script reads the state
dict only (no model is built), so it works for any family: it takes every pair of keys ``<layer>.rate1`` /
``<layer>.rate2``.  Accepted files (``torch.load(weights_only=True)``):

* our classification checkpoints ``{'model': state_dict, 'ema': ..., 'model_name': ..., ...}``
  (``--ema`` plots the EMA weights);
* the authors' Swin-ACmix release ``{'model': state_dict}`` (keys ``layers.i.blocks.j.attn.rate1``);
* ``{'state_dict': ...}`` and plain state dicts, with or without DDP ``module.`` prefixes.

Layers are ordered by their names with numbers compared as numbers (``layers.2.blocks.10`` after
``layers.2.blocks.9``), which is the forward order of every family here; the first numbered component of a name
(``layer3``, ``layers.2``, ``stages.1``) is its stage, and stages are separated in the plot.
A log ratio > 0 means the attention path dominates that layer, < 0 the convolution path.
"""
from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from models._checkpoint import CheckpointError, read_checkpoint, unwrap_state_dict  # noqa: E402


class NoRatesError(ValueError):
    """The checkpoint holds no ACmix ``rate1``/``rate2`` pairs."""


def load_state_dict(path: str | Path, ema: bool = False) -> Tuple[Dict[str, torch.Tensor], Optional[str]]:
    """(state dict without wrapper prefixes, model name stored in the checkpoint or None).

    Raises:
        CheckpointError: no such file, or not readable with ``torch.load(weights_only=True)``.
        NoRatesError: ``ema`` asked for but the checkpoint has no EMA weights.
    """
    ckpt: Any = read_checkpoint(path)
    name = ckpt.get('model_name') if isinstance(ckpt, Mapping) else None
    if ema:
        if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get('ema'), Mapping):
            raise NoRatesError(f'{path}: --ema given but the checkpoint has no EMA weights ("ema" entry)')
        ckpt = ckpt['ema']
    try:
        sd = unwrap_state_dict(ckpt)
    except CheckpointError as e:
        raise NoRatesError(f'{path}: {e}') from None
    return sd, name if isinstance(name, str) else None


def _natural_key(name: str) -> List[Any]:
    return [(0, int(t), '') if t.isdigit() else (1, 0, t) for t in re.split(r'(\d+)', name) if t]


def stage_of(layer: str) -> str:
    """The name up to its first number: ``layers.2.blocks.0.attn`` -> ``layers.2``, ``layer3.1.conv2`` -> ``layer3``."""
    m = re.match(r'\D*\d+', layer)
    return m.group(0) if m else layer


def extract_rates(state_dict: Mapping[str, Any], source: str = 'checkpoint') -> List[Tuple[str, float, float]]:
    """``[(layer, |alpha|, |beta|), ...]`` in layer order; a rate with several elements is averaged in magnitude.

    Raises:
        NoRatesError: no ``*.rate1``/``*.rate2`` pair, or a ``rate1`` without its ``rate2`` (names the layer).
    """
    # layer name -> tensor; a bare ACmix module's keys are just 'rate1' / 'rate2' (layer '')
    r1 = {k[:-len('rate1')].rstrip('.'): v for k, v in state_dict.items() if k.endswith('.rate1') or k == 'rate1'}
    r2 = {k[:-len('rate2')].rstrip('.'): v for k, v in state_dict.items() if k.endswith('.rate2') or k == 'rate2'}
    if not r1 and not r2:
        some = ', '.join(list(state_dict)[:5])
        raise NoRatesError(f'{source}: no ACmix rates (keys ending in rate1/rate2) among {len(state_dict)} keys '
                           f'(first: {some}); is this an ACmix model with mix="learnable" or "fixed"?')
    unpaired = sorted(set(r1) ^ set(r2))
    if unpaired:
        raise NoRatesError(f'{source}: rate1 and rate2 are not paired for layer(s) {unpaired[:5]}')
    out = []
    for layer in sorted(r1, key=_natural_key):
        a, b = (torch.as_tensor(r[layer]).detach().float().abs().mean().item() for r in (r1, r2))
        out.append((layer, a, b))
    return out


def log_ratio(alpha: float, beta: float) -> float:
    """``log(|alpha| / |beta|)`` (natural log); +-inf when one path is switched off exactly."""
    if beta == 0:
        return math.inf if alpha > 0 else math.nan
    if alpha == 0:
        return -math.inf
    return math.log(alpha / beta)


def plot(rates: Sequence[Tuple[str, float, float]], out: str | Path, title: str = '') -> Path:
    """Two panels sharing the layer axis: |alpha| and |beta| bars, then log|alpha/beta| bars (sign-coloured).

    Returns:
        the written image path.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    n = len(rates)
    x = list(range(n))
    alphas = [a for _, a, _ in rates]
    betas = [b for _, _, b in rates]
    logs = [log_ratio(a, b) for _, a, b in rates]
    finite = [v for v in logs if math.isfinite(v)]
    clip = max([abs(v) for v in finite] + [1.0]) * 1.1  # draw +-inf (a path switched off) at the axis edge
    shown = [max(-clip, min(clip, v)) if not math.isnan(v) else 0.0 for v in logs]

    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(max(6.0, 0.28 * n + 2), 5.5),
                                   gridspec_kw=dict(height_ratios=[3, 2]))
    w = 0.4
    ax1.bar([i - w / 2 for i in x], alphas, w, label=r'$|\alpha|$ (attention)', color='tab:orange')
    ax1.bar([i + w / 2 for i in x], betas, w, label=r'$|\beta|$ (convolution)', color='tab:blue')
    ax1.set_ylabel('magnitude')
    ax1.legend(loc='upper left', bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax2.bar(x, shown, 0.7, color=['tab:orange' if v > 0 else 'tab:blue' for v in shown])
    ax2.axhline(0.0, color='black', linewidth=0.6)
    ax2.set_ylabel(r'$\log|\alpha/\beta|$')
    ax2.set_xlabel('layer')
    stages = [stage_of(layer) for layer, _, _ in rates]
    for i in range(1, n):
        if stages[i] != stages[i - 1]:
            for ax in (ax1, ax2):
                ax.axvline(i - 0.5, color='grey', linestyle=':', linewidth=0.8)
    ax2.set_xticks(x)
    ax2.set_xticklabels([layer or '(module)' for layer, _, _ in rates], rotation=90, fontsize=6)
    if title:
        ax1.set_title(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def write_csv(rates: Sequence[Tuple[str, float, float]], path: str | Path) -> None:
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['layer', 'stage', 'abs_alpha', 'abs_beta', 'log_abs_alpha_over_beta'])
        for layer, a, b in rates:
            w.writerow([layer, stage_of(layer), f'{a:.6g}', f'{b:.6g}', f'{log_ratio(a, b):.6g}'])


def main(argv: Optional[Sequence[str]] = None) -> List[Tuple[str, float, float]]:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('checkpoint', help='our checkpoint, the authors\' {"model": ...} release, or a state dict')
    p.add_argument('--out', default='rates.png', help='image file (.png, .pdf, .svg; default rates.png)')
    p.add_argument('--model', help='title of the plot (default: the model name stored in the checkpoint)')
    p.add_argument('--ema', action='store_true', help='plot the EMA weights of one of our checkpoints')
    p.add_argument('--csv', help='also write the numbers to this CSV file')
    args = p.parse_args(argv)
    try:
        sd, stored_name = load_state_dict(args.checkpoint, ema=args.ema)
        rates = extract_rates(sd, source=args.checkpoint)
    except (CheckpointError, NoRatesError) as e:
        raise SystemExit(f'error: {e}') from None
    title = args.model or stored_name or Path(args.checkpoint).stem
    path = plot(rates, args.out, title=f'{title}: ACmix path weights per layer')
    if args.csv:
        write_csv(rates, args.csv)
    print(f'{len(rates)} ACmix layers -> {path}')
    for layer, a, b in rates:
        print(f'  {layer:40s} |alpha| {a:.4f}  |beta| {b:.4f}  log|alpha/beta| {log_ratio(a, b):+.3f}')
    return rates


if __name__ == '__main__':
    main()
