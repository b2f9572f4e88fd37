# Mask R-CNN 3x on COCO with Swin-T-ACmix (shifted windows + conv path), multi-scale training with crops.
# Swin's 3x recipe: AdamW lr 1e-4, wd 0.05, 36 epochs (lr x0.1 at 27 and 33), 8 GPUs x 2 images.
# ImageNet weights: checkpoints/imagenet/<model_name>.pth (ours: {'model': state_dict}, as tools/train.py
# writes for classification, or the authors' Swin-ACmix release); change the path with
# --opts model.backbone.init_cfg.checkpoint=PATH, or train from scratch with --opts model.backbone.init_cfg=None.
_base_ = [
    '_base_/models/mask-rcnn_fpn.py', '_base_/datasets/coco_instance_ms-crop.py',
    '_base_/schedules/schedule_3x.py', '_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        model_name='acmix_swin_tiny_patch4_window7_224',
        drop_path_rate=0.2,
        strict_img_size=False,  # any input size (padded to windows)
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_swin_tiny_patch4_window7_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
