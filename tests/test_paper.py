"""Reproduction tools: tools/paper_tables.py, tools/plot_rates.py, tools/collect_ablations.py and the ablation configs.

Cheap versions of every documented command (docs/REPRODUCING.md): the table script on one pair at a small size,
the figure from a checkpoint in each accepted format, every ablation config built (with shrunken depths) and
checked for the mixer arguments it promises, and the ablation collector on fake ``metrics.json`` files.
"""
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))

import collect_ablations  # noqa: E402
from models.paper import AUTHORS_CODE  # noqa: E402
import paper_tables  # noqa: E402
import plot_rates  # noqa: E402


# ------------------------------------------------------------------------------------------------------------
# tools/paper_tables.py
# ------------------------------------------------------------------------------------------------------------
def test_paper_numbers_cover_every_pair():
    for family, acmix_name, base_name in paper_tables.PAIRS:
        acmix, base = paper_tables.PAPER[acmix_name], paper_tables.PAPER[base_name]
        assert None not in (acmix.top1, acmix.params_m, acmix.gflops, base.top1), acmix_name
        assert acmix.top1 > base.top1, f'{family}: the paper reports ACmix above its baseline'


def test_select_pairs_by_prefix_and_short_name():
    assert paper_tables.select_pairs(['acmix_resnet26']) == [('ResNet', 'acmix_resnet26', 'conv_resnet26')]
    assert [p[1] for p in paper_tables.select_pairs(['acmix_swin_tiny', 'resnet50'])] == [
        'acmix_resnet50', 'acmix_swin_tiny_patch4_window7_224']  # paper order, baseline names select too
    assert len(paper_tables.select_pairs(None)) == len(paper_tables.PAIRS)
    with pytest.raises(SystemExit, match='acmix_nonet'):
        paper_tables.select_pairs(['acmix_nonet'])


def test_time_alternating_interleaves_and_takes_median():
    calls = []
    medians = paper_tables.time_alternating([lambda: calls.append('a'), lambda: calls.append('b')],
                                            torch.device('cpu'), warmup=1, reps=3)
    assert calls == ['a', 'b'] + ['a', 'b'] * 3  # warm-up each, then one of each per rep
    assert len(medians) == 2 and all(m >= 0 for m in medians)


def test_paper_tables_counts_top1_and_speed(tmp_path):
    """One pair at 32 px: exact parameter counts (size-independent), top-1 from metrics.json, a speed row."""
    results = tmp_path / 'results'
    (results / 'acmix_resnet26').mkdir(parents=True)
    (results / 'acmix_resnet26' / 'metrics.json').write_text(json.dumps({'top1': 12.5, 'top5': 40.0}))
    out = tmp_path / 'out'
    tables = paper_tables.main(['--models', 'acmix_resnet26', '--img-size', '32', '--batch', '2', '--warmup', '0',
                                '--reps', '1', '--results', str(results), '--out', str(out)])
    rows = {r['model']: r for r in tables['imagenet']}
    assert set(rows) == {'acmix_resnet26', 'conv_resnet26'}
    # our models match the authors' code exactly (paper-facts.md)
    assert round(rows['acmix_resnet26']['params_m'] * 1e6) == AUTHORS_CODE['acmix_resnet26'][0]
    assert round(rows['conv_resnet26']['params_m'] * 1e6) == AUTHORS_CODE['conv_resnet26'][0]
    assert rows['acmix_resnet26']['gmacs'] > 0
    assert rows['acmix_resnet26']['top1'] == 12.5 and rows['conv_resnet26']['top1'] is None
    assert rows['acmix_resnet26']['paper_top1'] == 76.1
    (speed,) = tables['speed']
    for k in ('infer_acmix', 'infer_base', 'train_acmix', 'train_base'):
        assert speed[k] > 0
    assert speed['infer_ratio'] == pytest.approx(speed['infer_acmix'] / speed['infer_base'])
    for name in ('imagenet.csv', 'speed.csv', 'tables.md'):
        assert (out / name).stat().st_size > 0
    csv_text = (out / 'imagenet.csv').read_text()
    assert csv_text.splitlines()[0].startswith('family,model,role,params_m,gmacs')
    assert f"{AUTHORS_CODE['acmix_resnet26'][0] / 1e6:.6f}" in csv_text


def test_paper_tables_bad_metrics_file(tmp_path):
    (tmp_path / 'acmix_resnet26').mkdir()
    (tmp_path / 'acmix_resnet26' / 'metrics.json').write_text('{"acc": 1}')
    with pytest.raises(SystemExit, match='top1'):
        paper_tables.read_top1(tmp_path, 'acmix_resnet26')
    assert paper_tables.read_top1(tmp_path, 'conv_resnet26') is None


# ------------------------------------------------------------------------------------------------------------
# tools/plot_rates.py
# ------------------------------------------------------------------------------------------------------------
def _authors_swin_state_dict():
    """Keys of the authors' Swin-ACmix release (with 12 blocks' rates) plus a few other tensors."""
    sd = {'patch_embed.proj.weight': torch.zeros(96, 3, 4, 4), 'head.weight': torch.zeros(1000, 768)}
    depths = (2, 2, 6, 2)
    for i, depth in enumerate(depths):
        for j in range(depth):
            sd[f'layers.{i}.blocks.{j}.attn.qkv.weight'] = torch.zeros(3, 3)
            sd[f'layers.{i}.blocks.{j}.attn.rate1'] = torch.tensor([0.1 * (i + 1)])      # attention grows with depth
            sd[f'layers.{i}.blocks.{j}.attn.rate2'] = torch.tensor([0.4 - 0.1 * i])
    return sd


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 1000


def test_plot_rates_authors_release_with_ddp_prefix(tmp_path, capsys):
    ckpt = tmp_path / 'acmix_swin_tiny.pth'
    torch.save({'model': {f'module.{k}': v for k, v in _authors_swin_state_dict().items()}}, ckpt)
    rates = plot_rates.main([str(ckpt), '--out', str(tmp_path / 'rates.png'), '--csv', str(tmp_path / 'r.csv')])
    _check_png(tmp_path / 'rates.png')
    assert [layer for layer, _, _ in rates][:3] == ['layers.0.blocks.0.attn', 'layers.0.blocks.1.attn',
                                                    'layers.1.blocks.0.attn']
    assert len(rates) == 12
    assert rates[0][1:] == pytest.approx((0.1, 0.4)) and rates[-1][1:] == pytest.approx((0.4, 0.1))
    assert len((tmp_path / 'r.csv').read_text().splitlines()) == 13
    assert '12 ACmix layers' in capsys.readouterr().out


def test_plot_rates_our_checkpoint_and_plain_state_dict(tmp_path):
    """A real (small) stack of ACmix modules saved as our training checkpoint, with EMA, and as a bare state dict."""
    from acmix import ACmix
    torch.manual_seed(0)
    net = nn.Sequential(*[ACmix(8, 8, kernel_att=3, head=2) for _ in range(11)])
    with torch.no_grad():
        net[10].rate1.fill_(-2.0)  # sign is dropped: |alpha|
    sd = net.state_dict()
    ours = tmp_path / 'epoch_001.pth'
    torch.save({'model': sd, 'ema': {k: v * 0 + 1 for k, v in sd.items()}, 'epoch': 1, 'best_top1': 0.0,
                'model_name': 'tiny_acmix_stack', 'config': 'MODEL:\n  NAME: tiny\n'}, ours)
    rates = plot_rates.main([str(ours), '--out', str(tmp_path / 'ours.png')])
    _check_png(tmp_path / 'ours.png')
    assert [layer for layer, _, _ in rates] == [str(i) for i in range(11)]  # natural order: 10 after 9
    assert rates[-1][1] == pytest.approx(2.0) and rates[0][1:] == pytest.approx((0.5, 0.5))
    ema = plot_rates.main([str(ours), '--ema', '--out', str(tmp_path / 'ema.png')])
    assert all(a == b == 1.0 for _, a, b in ema)

    plain = tmp_path / 'plain.pth'
    torch.save(sd, plain)
    assert plot_rates.main([str(plain), '--out', str(tmp_path / 'plain.pth.png')]) == rates
    _check_png(tmp_path / 'plain.pth.png')


def test_plot_rates_errors(tmp_path):
    no_rates = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'module.conv1.weight': torch.zeros(1)}}, no_rates)
    with pytest.raises(SystemExit, match='no ACmix rates'):
        plot_rates.main([str(no_rates), '--out', str(tmp_path / 'x.png')])
    unpaired = tmp_path / 'unpaired.pth'
    torch.save({'a.rate1': torch.ones(1), 'a.rate2': torch.ones(1), 'b.rate1': torch.ones(1)}, unpaired)
    with pytest.raises(SystemExit, match=r"\['b'\]"):
        plot_rates.main([str(unpaired), '--out', str(tmp_path / 'x.png')])
    with pytest.raises(SystemExit, match='--ema'):
        plot_rates.main([str(unpaired), '--ema', '--out', str(tmp_path / 'x.png')])
    with pytest.raises(SystemExit, match='not found'):
        plot_rates.main([str(tmp_path / 'missing.pth')])
    assert not (tmp_path / 'x.png').exists()


def test_log_ratio_and_stage():
    assert plot_rates.log_ratio(1.0, 1.0) == 0.0
    assert plot_rates.log_ratio(0.0, 1.0) == float('-inf')  # attention switched off
    assert plot_rates.stage_of('layers.2.blocks.10.attn') == 'layers.2'
    assert plot_rates.stage_of('layer3.1.conv2') == 'layer3'


# ------------------------------------------------------------------------------------------------------------
# Ablation configs and tools/collect_ablations.py
# ------------------------------------------------------------------------------------------------------------
def test_ablation_configs_are_the_generated_ones():
    expected = collect_ablations.configs()
    on_disk = {p.name: p.read_text() for p in collect_ablations.CONFIG_DIR.glob('*.yaml')}
    assert on_disk == expected, 'run: python tools/collect_ablations.py --write-configs'
    assert len(expected) == 14  # 2 models x (4 mix + 3 non-default shift) runs


# Shrunken depths/widths keep the build cheap; the mixer arguments still come from the config.
_SMALL = {'acmix_swin_tiny_patch4_window7_224': dict(depths=(1, 1, 1, 1), embed_dim=24),
          'acmix_resnet26': dict(layers=(1, 1, 1, 1), base_width=16)}


@pytest.mark.parametrize('name', sorted(collect_ablations.configs()))
def test_ablation_config_builds_its_model(name):
    from classification.build import build_model
    from classification.config import load_config
    spec = next(a for a in collect_ablations.ABLATIONS if f'{a.run}.yaml' == name)
    cfg = load_config(collect_ablations.CONFIG_DIR / name, opts=['DATA.IMG_SIZE', 64])
    assert cfg.MODEL.NAME == spec.model
    assert dict(cfg.MODEL.MIXER_ARGS) == spec.mixer_args
    torch.manual_seed(0)
    model = build_model(cfg, **_SMALL[spec.model]).eval()
    mixers = [m for m in model.modules() if isinstance(getattr(m, 'shift', None), str)]
    assert mixers, f'{name}: no ACmix module in {spec.model}'
    for key, value in spec.mixer_args.items():
        assert {getattr(m, key) for m in mixers} == {value}, f'{name}: {key} did not reach every ACmix module'
    has_conv = any(hasattr(m, 'dep_conv') for m in mixers)
    assert has_conv == (spec.mixer_args.get('mix') != 'attn_only')
    with torch.no_grad():
        y = model(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, cfg.MODEL.NUM_CLASSES) and torch.isfinite(y).all()


def test_collect_ablations(tmp_path):
    res = tmp_path / 'ablations'

    def run(stem, top1, config=None):
        (res / stem).mkdir(parents=True)
        (res / stem / 'metrics.json').write_text(json.dumps({'top1': top1, 'top5': 90.0}))
        if config is not None:
            (res / stem / 'config.yaml').write_text(config)

    run('acmix_swin_tiny_mix_learnable', 80.0,
        'MODEL:\n  NAME: acmix_swin_tiny_patch4_window7_224\n  MIXER_ARGS:\n    mix: learnable\n    shift: group_conv\n')
    run('acmix_swin_tiny_mix_attn_only', 79.0)
    run('acmix_resnet26_shift_tensor', 70.0)
    run('something_else', 1.0)
    rows = collect_ablations.main([str(res)])
    cell = {(r['table'], r['model'][:15], r['variant']): r for r in rows}
    assert cell['mix', 'acmix_swin_tiny', 'learnable']['top1'] == 80.0
    assert cell['shift', 'acmix_swin_tiny', 'group_conv']['top1'] == 80.0  # the default run fills both tables
    assert cell['mix', 'acmix_swin_tiny', 'attn_only']['paper_top1'] == 81.3  # = the Swin-T baseline
    assert cell['mix', 'acmix_swin_tiny', 'learnable']['paper_top1'] == 81.9
    assert cell['shift', 'acmix_resnet26', 'tensor']['top1'] == 70.0
    assert cell['mix', 'acmix_resnet26', 'fixed']['top1'] is None
    assert len(rows) == 16
    md = (res / 'ablations.md').read_text()
    assert md.count('| (a) tensor shifts |') == 1 and '70.00' in md
    assert len((res / 'ablations.csv').read_text().splitlines()) == 17


def test_collect_ablations_rejects_misfiled_run(tmp_path):
    d = tmp_path / 'acmix_resnet26_mix_fixed'
    d.mkdir()
    (d / 'metrics.json').write_text('{"top1": 1.0}')
    (d / 'config.yaml').write_text('MODEL:\n  NAME: acmix_resnet26\n  MIXER_ARGS:\n    mix: conv_only\n')
    with pytest.raises(SystemExit, match='expects'):
        collect_ablations.collect(tmp_path)
