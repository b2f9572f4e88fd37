# Mask R-CNN 1x on COCO with SAN-10-ACmix (patchwise attention + conv path).
# PVT's detection recipe for every backbone of this table: AdamW lr 2e-4, wd 1e-4, 12 epochs, 8 GPUs x 2 images.
# ImageNet weights: checkpoints/imagenet/<model_name>.pth (ours: {'model': state_dict}, as tools/train.py
# writes for classification, or the authors' Swin-ACmix release); change the path with
# --opts model.backbone.init_cfg.checkpoint=PATH, or train from scratch with --opts model.backbone.init_cfg=None.
_base_ = [
    '_base_/models/mask-rcnn_fpn.py', '_base_/datasets/coco_instance.py',
    '_base_/schedules/schedule_1x.py', '_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        model_name='acmix_san10',
        frozen_stages=1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_san10.pth')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
optim_wrapper = dict(optimizer=dict(lr=0.0002))
