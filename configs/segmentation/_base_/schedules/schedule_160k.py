# 160k iterations: linear warm-up from 1e-6 x lr over 1500 iterations, then linear (poly power 1) decay to 0.
# Source: SwinTransformer/Swin-Transformer-Semantic-Segmentation configs/swin/
# upernet_swin_{tiny,small}_patch4_window7_512x512_160k_ade20k.py (lr_config) and _base_/schedules/schedule_160k.py.
# Deviation, as mmseg 1.x's port of these configs: the poly decay runs from iteration 1500 to 160k; Swin's mmcv
# hook decays over 0..160k and scales the warm-up by it (at most 1 % of the base lr apart).
# The optimizers live in schedules/optim_*.py.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
