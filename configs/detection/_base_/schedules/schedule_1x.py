# 1x: 12 epochs, lr x0.1 after epochs 8 and 11, linear warm-up from 0.001 x lr over the first 500 iterations.
# Source: the same schedule in mmdet (configs/_base_/schedules/schedule_1x.py), whai362/PVT (detection/configs/
# _base_/schedules/schedule_1x.py) and SwinTransformer/Swin-Transformer-Object-Detection (configs/_base_/
# schedules/schedule_1x.py, used by its 1x configs). mmdet 3.x's Swin port warms up over 1000 iterations; we
# keep Swin's 500. The optimizers live in schedules/optim_*.py.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
