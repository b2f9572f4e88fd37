"""Facts about the models, written once: the paper's ImageNet table, the counts of the authors' code and the
baseline each ACmix model is compared with.

Sources: the authors' README (github.com/LeapLabTHU/ACmix) and paper (Pan et al., CVPR 2022, Tables 1-2), and
counts measured on the authors' released code (``/shared/paper-facts.md``).  ``tools/model_table.py`` and
``tools/paper_tables.py`` print them next to our measurements; the tests compare our models against them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

__all__ = ['PAPER_COUNTS', 'PAPER_TOP1', 'AUTHORS_CODE', 'BASELINES', 'PAIRS', 'PAPER', 'PaperEntry', 'family',
           'baseline_of']

# ACmix rows of the authors' README: (params M, GFLOPs) at 224.
PAPER_COUNTS: Dict[str, Tuple[float, float]] = {
    'acmix_resnet26': (10.6, 2.3), 'acmix_resnet38': (14.6, 2.9), 'acmix_resnet50': (18.6, 3.6),
    'acmix_san10': (12.1, 1.9), 'acmix_san15': (16.6, 2.7), 'acmix_san19': (21.2, 3.4),
    'acmix_pvt_tiny': (13.0, 2.0), 'acmix_pvt_small': (25.0, 3.9),
    'acmix_swin_tiny_patch4_window7_224': (30.0, 4.6), 'acmix_swin_small_patch4_window7_224': (51.0, 9.0),
}

# ImageNet-1K top-1 (%) of the authors' README; for baselines, the number the paper compares against.
PAPER_TOP1: Dict[str, float] = {
    'acmix_resnet26': 76.1, 'acmix_resnet38': 77.4, 'acmix_resnet50': 77.8,
    'conv_resnet26': 73.6, 'conv_resnet38': 76.0, 'resnet50': 76.9,
    'acmix_san10': 77.6, 'acmix_san15': 78.4, 'acmix_san19': 78.7,
    'san10': 77.1, 'san15': 78.0, 'san19': 78.2,                      # patchwise SAN
    'acmix_pvt_tiny': 78.0, 'acmix_pvt_small': 81.7,
    'pvt_v1_tiny': 75.1, 'pvt_v1_small': 79.8,                         # PVT v1
    'acmix_swin_tiny_patch4_window7_224': 81.9, 'acmix_swin_small_patch4_window7_224': 83.5,
    'swin_tiny_patch4_window7_224': 81.3, 'swin_small_patch4_window7_224': 83.0,
}

# Measured on the authors' code: (exact params, GMACs at 224).  Our ResNet and Swin models have exactly these
# parameter counts.  Swin: their model.flops(), which also counts LayerNorms and pooling (C*H*W each, 3.8M MACs
# for Swin-T): the only difference from ours.  resnet50: torchvision's (= timm's) ResNet-50.
AUTHORS_CODE: Dict[str, Tuple[int, float]] = {
    'acmix_resnet26': (10_487_816, 2.22), 'acmix_resnet38': (14_410_896, 2.86), 'acmix_resnet50': (18_333_976, 3.50),
    'conv_resnet26': (13_696_552, 2.34), 'conv_resnet38': (19_626_792, 3.22), 'resnet50': (25_557_032, 4.09),
    'acmix_swin_tiny_patch4_window7_224': (28_649_908, 4.649),
    'acmix_swin_small_patch4_window7_224': (50_345_080, 8.999),
    'swin_tiny_patch4_window7_224': (28_288_354, 4.494), 'swin_small_patch4_window7_224': (49_606_258, 8.747),
}

# The baseline each ACmix model is compared with (a conv / attention twin of the same depth and width), in the
# paper's order.
BASELINES: Dict[str, str] = {
    'acmix_resnet26': 'conv_resnet26', 'acmix_resnet38': 'conv_resnet38', 'acmix_resnet50': 'resnet50',
    'acmix_san10': 'san10', 'acmix_san15': 'san15', 'acmix_san19': 'san19',
    'acmix_pvt_tiny': 'pvt_v1_tiny', 'acmix_pvt_small': 'pvt_v1_small',
    'acmix_swin_tiny_patch4_window7_224': 'swin_tiny_patch4_window7_224',
    'acmix_swin_small_patch4_window7_224': 'swin_small_patch4_window7_224',
}


@dataclass(frozen=True)
class PaperEntry:
    """One model's published numbers.  ``None`` = not published for this model.

    Attributes:
        top1: ImageNet-1K top-1 (%) in the paper's table (baselines: the number the paper compares against).
        params_m: parameters (millions) as printed by the paper (ACmix models only).
        gflops: FLOPs (G) as printed by the paper; the paper counts multiply-accumulates.
        code_params: exact parameter count of the authors' code at 224 (ResNet / Swin only).
        code_gmacs: GMACs of the authors' code at 224 (ResNet / Swin only).
    """
    top1: Optional[float] = None
    params_m: Optional[float] = None
    gflops: Optional[float] = None
    code_params: Optional[int] = None
    code_gmacs: Optional[float] = None


def family(name: str) -> str:
    """'ResNet', 'SAN', 'PVT' or 'Swin' for a model of the paper's table."""
    for key, fam in (('resnet', 'ResNet'), ('san', 'SAN'), ('pvt', 'PVT'), ('swin', 'Swin')):
        if key in name:
            return fam
    raise ValueError(f'no family for {name!r}')


def _entry(name: str) -> PaperEntry:
    params_m, gflops = PAPER_COUNTS.get(name, (None, None))
    code_params, code_gmacs = AUTHORS_CODE.get(name, (None, None))
    return PaperEntry(PAPER_TOP1.get(name), params_m, gflops, code_params, code_gmacs)


# (family, ACmix model, its baseline), in the paper's order; PAPER: every model of these pairs.
PAIRS: List[Tuple[str, str, str]] = [(family(a), a, b) for a, b in BASELINES.items()]
PAPER: Dict[str, PaperEntry] = {n: _entry(n) for _, a, b in PAIRS for n in (a, b)}


def baseline_of(name: str) -> Optional[str]:
    """The registered baseline of an ``acmix_*`` model: ``BASELINES``, else ``conv_<rest>`` / ``<rest>``."""
    import timm
    registered = set(timm.list_models())
    rest = name[len('acmix_'):]
    return next((c for c in (BASELINES.get(name), f'conv_{rest}', rest) if c in registered), None)
