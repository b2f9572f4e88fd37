# 40k iterations, poly decay (power 0.9) to 0, no warm-up: PVT's Semantic FPN schedule.
# Source: whai362/PVT segmentation/configs/sem_fpn/PVT/fpn_pvt_{t,s}_ade20k_40k.py and
# sem_fpn/fpn_r50_512x512_40k_ade20k.py (lr_config poly, power 0.9, min_lr 0, max_iters 80000 // 2 for 8 GPUs).
# The optimizers live in schedules/optim_*.py.
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
