"""ImageNet-style classification: configs, the train/test command lines, checkpoints, resume and bad input.

Runs use tiny generated data (3 shape classes, 16 px) and tiny models so the file takes about a minute;
the full demo (>= 90 % top-1) is marked slow.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from classification import build, cli, demo_data, engine
from classification import checkpoint as ckpt_lib
from classification.config import ConfigError, load_config
from classification.data import DataError, build_dataset, build_loader, build_transform
from tools._dispatch import main as run_tool

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / 'configs' / 'classification'
CONFIGS = sorted(CONFIG_DIR.rglob('*.yaml'))  # with ablations/
CLASSES = ('circle', 'square', 'triangle')

# A tiny timm model and a short, fully random regime (RandAugment, mixup/cutmix, random erasing, drop-path, EMA)
# so that resume-equality really exercises every random number generator.
TINY = dict(
    MODEL=dict(NAME='test_resnet', NUM_CLASSES=3, DROP_PATH=0.1),
    DATA=dict(IMG_SIZE=16, BATCH_SIZE=4, NUM_WORKERS=0),
    TRAIN=dict(EPOCHS=2, WARMUP_EPOCHS=1, BASE_LR=0.01, OPTIMIZER=dict(NAME='adamw')),
    AMP=dict(ENABLE=False), EMA=dict(ENABLE=True, DECAY=0.9),
    AUG=dict(AUTO_AUGMENT='rand-m9-mstd0.5-inc1', MIXUP=0.8, CUTMIX=1.0, REPROB=0.25),
    TEST=dict(CROP_PCT=1.0), PRINT_FREQ=2, SAVE_FREQ=0, CPU_THREADS=1,
)


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('shapes')
    return demo_data.make(root, seed=0, per_class={'train': 4, 'val': 2}, classes=CLASSES, size=16)


@pytest.fixture
def tiny_cfg(tmp_path) -> Path:
    return _write_yaml(tmp_path / 'tiny.yaml', TINY)


def _train(cfg: Path, data: Path, work: Path, *extra: str) -> None:
    run_tool('train', [str(cfg), '--data-path', str(data), '--work-dir', str(work), *extra])


def _exit_code_and_err(capsys, fn, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        fn(*args)
    return info.value.code, capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------
# Instant run through the real scripts
# --------------------------------------------------------------------------------------------------------
def test_train_then_test_scripts(tmp_path, data_root):
    """tools/train.py then tools/test.py on an ACmix model: checkpoint pointer, config, TensorBoard, metrics."""
    cfg = _write_yaml(tmp_path / 'acmix.yaml', {**TINY, 'MODEL': dict(NAME='acmix_resnet26', NUM_CLASSES=3),
                                               'TRAIN': dict(EPOCHS=1, WARMUP_EPOCHS=0, BASE_LR=0.01),
                                               'EMA': dict(ENABLE=False)})
    work = tmp_path / 'work'
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    run = subprocess.run([sys.executable, 'tools/train.py', str(cfg), '--data-path', str(data_root),
                          '--work-dir', str(work)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert 'img/s' in run.stdout
    last = Path((work / 'last_checkpoint').read_text().strip())
    assert last.is_file() and last.name == 'epoch_001.pth'
    assert (work / 'best.pth').is_file()
    assert load_config(work / 'config.yaml').MODEL.NAME == 'acmix_resnet26'
    ckpt = torch.load(last, map_location='cpu', weights_only=True)
    assert ckpt['epoch'] == 1 and ckpt['model_name'] == 'acmix_resnet26'

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = EventAccumulator(str(work / 'tb')).Reload().Tags()['scalars']
    assert {'train/loss', 'train/lr', 'val/top1'} <= set(tags)
    rate_tags = [t for t in tags if t.startswith('acmix/')]
    assert rate_tags and any(t.endswith('/rate1') for t in rate_tags) and any(t.endswith('/rate2') for t in rate_tags)

    run = subprocess.run([sys.executable, 'tools/test.py', str(cfg), str(last), '--data-path', str(data_root),
                          '--work-dir', str(tmp_path / 'eval')], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert 0 <= metrics['top1'] <= 100 and metrics['top5'] == pytest.approx(100.0)  # 3 classes: top-5 = top-3
    assert metrics['top1'] == pytest.approx(ckpt['val']['top1'])
    assert 'top-1' in run.stdout


# --------------------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------------------
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, data_root, tiny_cfg, monkeypatch):
    _train(tiny_cfg, data_root, tmp_path / 'straight')

    real = engine.train_one_epoch

    def interrupt_in_second_epoch(*args, **kwargs):
        if args[5] == 1:  # epoch index
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, 'train_one_epoch', interrupt_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        _train(tiny_cfg, data_root, tmp_path / 'resumed')
    assert ckpt_lib.read_last_checkpoint(tmp_path / 'resumed').name == 'epoch_001.pth'
    monkeypatch.setattr(cli, 'train_one_epoch', real)
    _train(tiny_cfg, data_root, tmp_path / 'resumed', '--resume')

    a = torch.load(tmp_path / 'straight' / 'epoch_002.pth', weights_only=True)
    b = torch.load(tmp_path / 'resumed' / 'epoch_002.pth', weights_only=True)
    assert not (tmp_path / 'resumed' / 'epoch_001.pth').exists()  # SAVE_FREQ 0 keeps only the newest
    for part in ('model', 'ema'):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=0, msg=f'{part}.{k}')
    assert a['num_updates'] == b['num_updates'] and a['val'] == b['val']
    for s_a, s_b in zip(a['optimizer']['state'].values(), b['optimizer']['state'].values()):
        torch.testing.assert_close(s_a['exp_avg'], s_b['exp_avg'], rtol=0, atol=0)


def test_resume_explicit_path_and_missing(tmp_path, data_root, tiny_cfg, capsys):
    code, err = _exit_code_and_err(capsys, _train, tiny_cfg, data_root, tmp_path / 'w', '--resume')
    assert code == 2 and 'last_checkpoint' in err and 'nothing to resume' in err
    code, err = _exit_code_and_err(capsys, _train, tiny_cfg, data_root, tmp_path / 'w', '--resume',
                                   str(tmp_path / 'nope.pth'))
    assert code == 2 and 'nope.pth' in err


# --------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('path', CONFIGS, ids=[str(p.relative_to(CONFIG_DIR)) for p in CONFIGS])
def test_every_config_loads_and_builds(path):
    cfg = load_config(path)
    with torch.device('meta'):  # structure only: no weight init cost
        model = build.build_model(cfg)
    assert model.num_classes == cfg.MODEL.NUM_CLASSES
    # attn_only / conv_only ablations have a single path and no rates
    if path.stem.startswith(('acmix_', 'demo')) and cfg.MODEL.MIXER_ARGS.get('mix', 'learnable') in ('learnable', 'fixed'):
        assert any(hasattr(m, 'rate1') and hasattr(m, 'rate2') for m in model.modules()), \
            f'{cfg.MODEL.NAME} has no rate1/rate2 modules'


def test_model_args_reach_the_model_and_clashes_are_named():
    cfg = load_config(CONFIG_DIR / 'conv_resnet26.yaml', ['MODEL.NUM_CLASSES', '4'])
    assert cfg.MODEL.MODEL_ARGS.zero_init_last is False  # the authors' zero_init_residual=False
    model = build.build_model(cfg)
    assert all(bool((b.bn3.weight != 0).all()) for b in model.modules() if hasattr(b, 'bn3'))
    cfg.defrost()
    cfg.MODEL.MODEL_ARGS.num_classes = 7
    with pytest.raises(ConfigError, match=r"MODEL.MODEL_ARGS \['num_classes'\]"):
        build.build_model(cfg)


def test_config_names_match_models():
    """Each model YAML is named after its model (the recipes are checked in tests/test_recipes.py)."""
    for path in CONFIG_DIR.glob('*.yaml'):
        if path.stem.startswith('_base_') or path.stem == 'demo':
            continue
        assert load_config(path).MODEL.NAME == path.stem


def test_unknown_config_key_in_file_and_opts(tmp_path):
    bad = _write_yaml(tmp_path / 'bad.yaml', {'TRAIN': {'EPOHCS': 3}})
    with pytest.raises(ConfigError, match=r"TRAIN\.EPOHCS.*TRAIN\.EPOCHS"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"--opts: unknown config key 'DATA.IMGSIZE'"):
        load_config(None, ['DATA.IMGSIZE', '32'])
    with pytest.raises(ConfigError, match='odd number'):
        load_config(None, ['DATA.IMG_SIZE'])
    assert load_config(None, ['DATA.IMG_SIZE', '32']).DATA.IMG_SIZE == 32


def test_base_inheritance_and_cli_error(tmp_path, data_root, capsys):
    base = _write_yaml(tmp_path / 'base.yaml', {'TRAIN': {'EPOCHS': 7, 'BASE_LR': 0.3}})
    child = _write_yaml(tmp_path / 'child.yaml', {'_BASE_': 'base.yaml', 'TRAIN': {'BASE_LR': 0.1}})
    cfg = load_config(child)
    assert (cfg.TRAIN.EPOCHS, cfg.TRAIN.BASE_LR) == (7, 0.1)
    del base
    code, err = _exit_code_and_err(capsys, _train, child, data_root, tmp_path / 'w', '--opts', 'TRAIN.NOPE', '1')
    assert code == 2 and 'TRAIN.NOPE' in err


def test_unregistered_model_suggests_close_names(tmp_path):
    cfg = load_config(None, ['MODEL.NAME', 'acmix_resnet_26'])
    with pytest.raises(build.ModelNameError, match='acmix_resnet26'):
        build.build_model(cfg)


def test_optimizer_no_decay_and_lr_scaling():
    cfg = load_config(ROOT / 'configs/classification/acmix_swin_tiny_patch4_window7_224.yaml',
                      ['DATA.IMG_SIZE', '64', 'DATA.BATCH_SIZE', '64', 'TRAIN.ACCUM_STEPS', '2'])
    assert build.scaled_lrs(cfg, world_size=4)[0] == pytest.approx(5e-4 * 64 * 4 * 2 / 512)
    model = build.build_model(cfg)
    opt = build.build_optimizer(cfg, model, lr=1e-3)
    no_decay = {id(p) for g in opt.param_groups if g['weight_decay'] == 0 for p in g['params']}
    names = {n for n, p in model.named_parameters() if id(p) in no_decay}
    assert any('relative_position_bias_table' in n for n in names)
    assert any(n.endswith('rate1') for n in names) and any(n.endswith('.bias') for n in names)
    assert all(p.ndim > 1 for n, p in model.named_parameters()
               if id(p) not in no_decay), 'a 1-D parameter gets weight decay'


# --------------------------------------------------------------------------------------------------------
# Bad data
# --------------------------------------------------------------------------------------------------------
def test_missing_data_dir(tmp_path, tiny_cfg, capsys):
    code, err = _exit_code_and_err(capsys, _train, tiny_cfg, tmp_path / 'no_such_dir', tmp_path / 'w')
    assert code == 2 and 'no_such_dir' in err


def test_empty_class_folder_and_class_count(tmp_path, data_root):
    root = tmp_path / 'd'
    demo_data.make(root, seed=1, per_class={'train': 1, 'val': 1}, classes=CLASSES, size=16)
    (root / 'train' / 'hexagon').mkdir()
    cfg = load_config(None, ['DATA.DATA_PATH', str(root), 'MODEL.NUM_CLASSES', '4'])
    with pytest.raises(DataError, match='without images.*hexagon'):
        build_dataset(cfg, 'train', True)
    cfg = load_config(None, ['DATA.DATA_PATH', str(data_root), 'MODEL.NUM_CLASSES', '5'])
    with pytest.raises(DataError, match='3 class folders but MODEL.NUM_CLASSES is 5'):
        build_dataset(cfg, 'train', True)


def test_corrupt_images_skipped_with_warning_or_error(tmp_path):
    root = tmp_path / 'd'
    demo_data.make(root, seed=1, per_class={'train': 3}, classes=CLASSES, size=16)
    good = root / 'train' / 'square' / 'square_0000.png'
    bad = root / 'train' / 'circle' / 'circle_0001.png'
    bad.write_bytes(good.read_bytes()[:60])  # truncated PNG
    (root / 'train' / 'circle' / 'notes.png').write_text('not an image')
    cfg = load_config(None, ['DATA.DATA_PATH', str(root), 'MODEL.NUM_CLASSES', '3', 'DATA.NUM_WORKERS', '0'])
    with pytest.warns(UserWarning, match=r'skipping 2 unreadable image\(s\) of 10'):
        ds = build_dataset(cfg, 'train', True)
    assert len(ds) == 8 and str(bad) not in {p for p, _ in ds.samples}
    cfg = load_config(None, ['DATA.DATA_PATH', str(root), 'MODEL.NUM_CLASSES', '3', 'DATA.ON_CORRUPT', 'error'])
    with pytest.raises(DataError, match='circle_0001.png'):
        build_dataset(cfg, 'train', True)
    # without the scan, the loader names the file when it reaches it
    cfg = load_config(None, ['DATA.DATA_PATH', str(root), 'MODEL.NUM_CLASSES', '3', 'DATA.SCAN_IMAGES', 'False'])
    ds = build_dataset(cfg, 'train', True)
    with pytest.raises(DataError, match='circle_0001.png'):
        ds[[p for p, _ in ds.samples].index(str(bad))]


def test_randaugment_posterize_zero_bits_does_not_crash():
    """rand-m9-mstd0.5-inc1 can ask posterize for 0 bits; Pillow >= 13 rejects that (see classification/data.py).
    Our training transform gives a black image instead; timm's own module is left untouched."""
    from PIL import Image
    from timm.data import auto_augment as aa
    img = Image.new('RGB', (8, 8), (200, 100, 50))
    transform = build_transform(load_config(None, ['AUG.AUTO_AUGMENT', 'rand-m9-mstd0.5-inc1']), is_training=True)
    (rand_augment,) = [t for t in transform.transforms if isinstance(t, aa.RandAugment)]
    (op,) = [op for op in rand_augment.ops if op.name == 'PosterizeIncreasing']
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0  # level 10 -> 4 - 4 = 0 bits
    assert op(img).getextrema() == ((0, 0), (0, 0), (0, 0))
    op.magnitude = 5  # 4 - 2 = 2 bits: timm's posterize as before
    assert op(img).getpixel((0, 0)) == (192, 64, 0)
    assert aa.NAME_TO_OP['PosterizeIncreasing'] is aa.posterize  # process-wide state unchanged


# --------------------------------------------------------------------------------------------------------
# Bad checkpoints, NaN loss, full disk
# --------------------------------------------------------------------------------------------------------
def test_checkpoint_from_a_different_model(tmp_path, data_root, tiny_cfg, capsys):
    work = tmp_path / 'w'
    _train(tiny_cfg, data_root, work, '--opts', 'TRAIN.EPOCHS', '1')
    last = ckpt_lib.read_last_checkpoint(work)
    other = _write_yaml(tmp_path / 'other.yaml', {**TINY, 'MODEL': dict(NAME='resnet10t', NUM_CLASSES=3)})
    code, err = _exit_code_and_err(capsys, run_tool, 'test', [str(other), str(last), '--data-path', str(data_root)])
    assert code == 2 and "'test_resnet'" in err and "'resnet10t'" in err
    # a bare state dict of another model: the mismatched keys are named
    bare = tmp_path / 'bare.pth'
    torch.save({'fc.weight': torch.zeros(3, 8), 'stem.conv.weight': torch.zeros(1)}, bare)
    model = build.build_model(load_config(tiny_cfg))
    with pytest.raises(ckpt_lib.CheckpointError,
                       match=r'bare.pth does not fit test_resnet: missing keys \(\d+\): .*; unexpected keys \(1\): '
                             r'stem.conv.weight; shape mismatches \(1\): fc.weight: checkpoint \(3, 8\) vs model'):
        ckpt_lib.load_model_weights(model, ckpt_lib.extract_state_dict(torch.load(bare)), str(bare))


def test_authors_style_checkpoint_loads_through_timm_filter(tmp_path, data_root):
    """test.py evaluates a foreign {'model': state_dict} file (the authors' Swin-ACmix format)."""
    cfg_path = _write_yaml(tmp_path / 'swin.yaml', {**TINY, 'MODEL': dict(
        NAME='acmix_swin_tiny_patch4_window7_224', NUM_CLASSES=3), 'DATA': dict(IMG_SIZE=32, BATCH_SIZE=4,
                                                                               NUM_WORKERS=0)})
    cfg = load_config(cfg_path)
    model = build.build_model(cfg).eval()
    file = tmp_path / 'acmix_swin_t.pth'
    torch.save({'model': {f'module.{k}': v for k, v in model.state_dict().items()}}, file)
    loaded = ckpt_lib.load_for_test(cfg, file).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    run_tool('test', [str(cfg_path), str(file), '--data-path', str(data_root), '--work-dir', str(tmp_path / 'e')])
    assert {'top1', 'top5'} <= json.loads((tmp_path / 'e' / 'metrics.json').read_text()).keys()


@pytest.mark.parametrize('name,fmt', [('acmix_swin_tiny_patch4_window7_224', 'swin'), ('acmix_resnet26', 'resnet')])
def test_authors_release_layout_loads_for_test(tmp_path, name, fmt):
    """The authors' full key layout (tests/fixtures/authors_models, recorded from their code) in their file format:
    Swin release {'model': ...} and ResNet script {'state_dict': {'module.*'}}, loaded by test.py's loader."""
    from tools.make_authors_model_fixtures import authors_format
    shapes = json.loads((ROOT / 'tests/fixtures/authors_models' / f'keys_{name}.json').read_text())
    gen = torch.Generator().manual_seed(0)
    theirs = {k: torch.randn(s, generator=gen) if 'index' not in k else torch.zeros(s, dtype=torch.long)
              for k, s in shapes.items()}
    file = tmp_path / f'{name}.pth'
    torch.save(authors_format(theirs, fmt), file)
    cfg = load_config(CONFIG_DIR / f'{name}.yaml', ['MODEL.NUM_CLASSES', '1000'])
    model = ckpt_lib.load_for_test(cfg, file)
    ours = model.state_dict()
    shared = [k for k in ('patch_embed.proj.weight', 'conv1.weight', 'fc.weight') if k in theirs and k in ours]
    assert shared
    for k in shared:
        torch.testing.assert_close(ours[k], theirs[k])
    rates = [k for k in ours if k.endswith('rate1')]
    assert rates and all(torch.equal(ours[k], theirs[k]) for k in rates if k in theirs)
    if fmt == 'resnet':  # a ResNet-26 file given to the ResNet-38 config: a clean error naming the keys
        cfg = load_config(CONFIG_DIR / 'acmix_resnet38.yaml', ['MODEL.NUM_CLASSES', '1000'])
        with pytest.raises(ckpt_lib.CheckpointError, match=r'does not fit acmix_resnet38: missing keys.*layer1\.1\.'):
            ckpt_lib.load_for_test(cfg, file)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_root, tiny_cfg, monkeypatch, capsys):
    real = engine.train_one_epoch

    def nan_in_second_epoch(model, loader, criterion, *args, **kwargs):
        if args[2] == 1:
            criterion = lambda out, tgt: out.sum() * float('nan')  # noqa: E731
        return real(model, loader, criterion, *args, **kwargs)

    monkeypatch.setattr(cli, 'train_one_epoch', nan_in_second_epoch)
    work = tmp_path / 'w'
    code, err = _exit_code_and_err(capsys, _train, tiny_cfg, data_root, work)
    assert code == 3 and 'loss is nan at epoch 2' in err
    last = ckpt_lib.read_last_checkpoint(work)
    assert last.name == 'epoch_001.pth' and torch.load(last, weights_only=True)['epoch'] == 1
    assert not (work / 'epoch_002.pth').exists()


@pytest.mark.parametrize('target', ['save', 'replace'])
def test_disk_full_keeps_previous_checkpoint(tmp_path, data_root, tiny_cfg, monkeypatch, capsys, target):
    calls = {'n': 0}
    real_save, real_replace = torch.save, os.replace

    def failing(real):
        def fn(*args, **kwargs):
            if any(str(a).endswith('epoch_002.pth.tmp') for a in args):  # torch.save(obj, f) / os.replace(src, dst)
                calls['n'] += 1
                raise OSError(errno.ENOSPC, 'No space left on device')
            return real(*args, **kwargs)
        return fn

    if target == 'save':
        monkeypatch.setattr(torch, 'save', failing(real_save))
    else:
        monkeypatch.setattr(os, 'replace', failing(real_replace))
    work = tmp_path / 'w'
    code, err = _exit_code_and_err(capsys, _train, tiny_cfg, data_root, work)
    assert calls['n'] == 1
    assert code == 2 and 'disk full' in err and 'epoch_002.pth' in err
    last = ckpt_lib.read_last_checkpoint(work)
    assert last.name == 'epoch_001.pth' and torch.load(last, weights_only=True)['epoch'] == 1
    assert not list(work.glob('*.tmp')) and not (work / 'epoch_002.pth').exists()


# --------------------------------------------------------------------------------------------------------
# Demo
# --------------------------------------------------------------------------------------------------------
def test_demo_data_is_deterministic(tmp_path):
    a = demo_data.make(tmp_path / 'a', seed=3, per_class={'val': 2}, size=16)
    b = demo_data.make(tmp_path / 'b', seed=3, per_class={'val': 2}, size=16)
    files = sorted(p.relative_to(a) for p in a.rglob('*.png'))
    assert len(files) == 2 * len(demo_data.CLASSES)
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


# --------------------------------------------------------------------------------------------------------
# Recipe options and the common command line
# --------------------------------------------------------------------------------------------------------
def _optimizer(*opts: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    cfg = load_config(None, ['MODEL.NAME', 'test_resnet', 'MODEL.NUM_CLASSES', '3', 'TRAIN.WEIGHT_DECAY', '1e-4',
                             *opts])
    model = build.build_model(cfg)
    return model, build.build_optimizer(cfg, model, lr=0.1)


def test_momentum_is_classical_sgd_and_sgd_is_nesterov():
    _, opt = _optimizer('TRAIN.OPTIMIZER.NAME', 'momentum')
    assert type(opt) is torch.optim.SGD
    assert all(g['nesterov'] is False and g['momentum'] == 0.9 for g in opt.param_groups)
    _, opt = _optimizer('TRAIN.OPTIMIZER.NAME', 'sgd')
    assert type(opt) is torch.optim.SGD and all(g['nesterov'] is True for g in opt.param_groups)


def test_weight_decay_all_params():
    model, opt = _optimizer('TRAIN.OPTIMIZER.NAME', 'momentum', 'TRAIN.WEIGHT_DECAY_ALL_PARAMS', 'True')
    decay = {id(p): g['weight_decay'] for g in opt.param_groups for p in g['params']}
    assert decay == {id(p): 1e-4 for p in model.parameters()}  # biases and norms included
    model, opt = _optimizer('TRAIN.OPTIMIZER.NAME', 'momentum')  # default: 1-D parameters without decay
    decay = {id(p): g['weight_decay'] for g in opt.param_groups for p in g['params']}
    assert {decay[id(p)] for p in model.parameters() if p.ndim == 1} == {0.0}
    assert {decay[id(p)] for p in model.parameters() if p.ndim > 1} == {1e-4}


@pytest.mark.parametrize('world_size', [1, 2])
def test_repeated_augmentation_sampler(data_root, world_size):
    from timm.data.distributed_sampler import RepeatAugSampler
    cfg = load_config(None, ['DATA.DATA_PATH', str(data_root), 'MODEL.NUM_CLASSES', '3', 'DATA.BATCH_SIZE', '2',
                             'DATA.NUM_WORKERS', '0', 'DATA.REPEATED_AUG', 'True'])
    dataset = build_dataset(cfg, 'train', True)  # 12 images
    loaders = [build_loader(cfg, dataset, True, world_size, rank) for rank in range(world_size)]
    assert all(isinstance(loader.sampler, RepeatAugSampler) for loader in loaders)
    for loader in loaders:
        loader.sampler.set_epoch(3)
    epoch = [i for loader in loaders for i in loader.sampler]
    # each rank sees len(dataset) / world_size indices; together the first third of the shuffled images x 3 copies
    assert [len(loader.sampler) for loader in loaders] == [len(dataset) // world_size] * world_size
    counts = {i: epoch.count(i) for i in set(epoch)}
    assert set(counts.values()) == {3} and len(counts) == len(dataset) // 3
    loaders[0].sampler.set_epoch(4)
    assert list(loaders[0].sampler) != epoch[:len(loaders[0].sampler)]  # the order follows the epoch
    plain = build_loader(load_config(None, ['DATA.BATCH_SIZE', '2', 'DATA.NUM_WORKERS', '0']), dataset, True)
    assert not isinstance(plain.sampler, RepeatAugSampler)


def test_common_options_map_onto_the_config(tiny_cfg, capsys):
    """The same flags as detection/segmentation; --opts takes yacs pairs and mmengine items, mixed."""
    from tools._dispatch import parse
    task_cli, args = parse('train', [str(tiny_cfg), '--opts', 'DATA.IMG_SIZE=32', 'SEED', '-1',
                                     '--amp', '--skip-data-check', '--launcher', 'none'])
    assert task_cli is cli and args.launcher == 'none'
    cfg = cli._config(args, 'w')
    assert (cfg.DATA.IMG_SIZE, cfg.SEED, cfg.AMP.ENABLE, cfg.DATA.SCAN_IMAGES, cfg.OUTPUT) == (32, -1, True, False, 'w')
    code, err = _exit_code_and_err(capsys, run_tool, 'train', [str(tiny_cfg), '--opts', 'DATA.IMG_SIZE'])
    assert code == 2 and "key 'DATA.IMG_SIZE' has no value" in err
    code, err = _exit_code_and_err(capsys, run_tool, 'train', ['nope.yaml'])
    assert code == 2 and 'config file not found: nope.yaml' in err


@pytest.mark.parametrize('n_images', [7, 100])
def test_steps_per_epoch_fixes_the_epoch_whatever_the_data_size(n_images):
    """TRAIN.STEPS_PER_EPOCH: every epoch is that many batches, from successive shuffled passes over the split
    (fewer or more images than one pass), the order a function of SEED and the epoch."""
    cfg = load_config(None, ['DATA.BATCH_SIZE', '4', 'DATA.NUM_WORKERS', '0', 'TRAIN.STEPS_PER_EPOCH', '5'])
    loader = build_loader(cfg, list(range(n_images)), True)
    epochs = []
    for epoch in (0, 0, 1):
        loader.sampler.set_epoch(epoch)
        epochs.append(torch.cat(list(loader)).tolist())
    assert len(loader) == 5 and all(len(e) == 20 for e in epochs)
    assert epochs[0] == epochs[1] != epochs[2]
    first_pass = epochs[0][:n_images]
    assert len(set(first_pass)) == len(first_pass)  # every image once before any repeats
    assert len(set(epochs[0])) == min(n_images, 20)


@pytest.mark.parametrize('n_images, steps', [(7, 1), (17, 4), (100, 5)])
def test_max_steps_per_epoch_caps_a_full_pass(n_images, steps):
    """TRAIN.MAX_STEPS_PER_EPOCH: one full pass per epoch (full batches) when the split is small, at most that many
    steps when it is large; combined with STEPS_PER_EPOCH it is an error naming both keys."""
    cfg = load_config(None, ['DATA.BATCH_SIZE', '4', 'DATA.NUM_WORKERS', '0', 'TRAIN.MAX_STEPS_PER_EPOCH', '5'])
    loader = build_loader(cfg, list(range(n_images)), True)
    loader.sampler.set_epoch(0)
    batch_items = torch.cat(list(loader)).tolist()
    assert len(loader) == steps and len(batch_items) == 4 * steps
    assert len(set(batch_items)) == len(batch_items)  # no image twice within the epoch
    cfg.defrost()
    cfg.TRAIN.STEPS_PER_EPOCH = 3
    with pytest.raises(DataError, match='TRAIN.STEPS_PER_EPOCH 3 and TRAIN.MAX_STEPS_PER_EPOCH 5'):
        build_loader(cfg, list(range(n_images)), True)
