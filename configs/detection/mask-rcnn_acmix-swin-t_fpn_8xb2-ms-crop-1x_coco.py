# Mask R-CNN 1x on COCO with Swin-T-ACmix (shifted windows + conv path).
# Swin's detection recipe: AdamW lr 1e-4, wd 0.05 (none on norms, position tables and ACmix's rate1/rate2),
# 1000 warm-up iterations, 12 epochs, 8 GPUs x 2 images.
# ImageNet weights: checkpoints/imagenet/<model_name>.pth (ours: {'model': state_dict}, as tools/train.py
# writes for classification, or the authors' Swin-ACmix release); change the path with
# --opts model.backbone.init_cfg.checkpoint=PATH, or train from scratch with --opts model.backbone.init_cfg=None.
_base_ = [
    '_base_/models/mask-rcnn_fpn.py', '_base_/datasets/coco_instance.py',
    '_base_/schedules/schedule_1x.py', '_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        model_name='acmix_swin_tiny_patch4_window7_224',
        drop_path_rate=0.2,
        strict_img_size=False,  # any input size (padded to windows)
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_swin_tiny_patch4_window7_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001, weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
        'rate1': dict(decay_mult=0.),
        'rate2': dict(decay_mult=0.),
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
