# 3x: 36 epochs, lr x0.1 after epochs 27 and 33, linear warm-up from 0.001 x lr over the first 500 iterations.
# Source: SwinTransformer/Swin-Transformer-Object-Detection configs/swin/*_adamw_3x_coco.py (lr_config
# step=[27, 33], max_epochs=36 on top of its schedule_1x.py warm-up). mmdet 3.x's Swin port warms up over 1000
# iterations; we keep Swin's 500. The optimizers live in schedules/optim_*.py.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=36, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
