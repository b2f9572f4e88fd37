# 12 epochs, lr x0.1 after epochs 8 and 11, linear warm-up over the first 500 iterations.
# Optimizer: AdamW lr 1e-4, wd 1e-4 (PVT's detection recipe); configs change lr / wd / warm-up where their
# recipe differs (Mask R-CNN with PVT-style backbones 2e-4, Swin wd 0.05 and 1000 warm-up iterations).
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001))

# lr is for 16 images per iteration (8 GPUs x 2); --opts auto_scale_lr.enable=True rescales it
auto_scale_lr = dict(enable=False, base_batch_size=16)
