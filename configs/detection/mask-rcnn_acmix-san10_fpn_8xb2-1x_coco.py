# Mask R-CNN 1x on COCO with SAN-10-ACmix (patchwise attention + conv path).
# Recipe: mmdet's R-50 1x (open-mmlab/mmdetection configs/mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py): SGD lr 0.02,
# momentum 0.9, wd 1e-4, 500 warm-up iterations, 12 epochs (x0.1 after 8 and 11), 1333x800 + flip, 8 GPUs x 2
# images, stem and stage 1 frozen, BatchNorm statistics frozen. Ours: the paper trains no ACmix-ResNet/SAN detector,
# so the ACmix and SAN backbones take the recipe of their ResNet-50 twin.
# ImageNet weights: checkpoints/imagenet/acmix_san10.pth, e.g. tools/train.py on
# configs/classification/acmix_san10.yaml; change with --opts model.backbone.init_cfg.checkpoint=PATH, or train from
# scratch with --opts model.backbone.init_cfg=None.
_base_ = [
    '_base_/models/mask-rcnn_fpn.py', '_base_/datasets/coco_instance.py',
    '_base_/schedules/schedule_1x.py', '_base_/schedules/optim_sgd.py', '_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        model_name='acmix_san10',
        frozen_stages=1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_san10.pth')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
