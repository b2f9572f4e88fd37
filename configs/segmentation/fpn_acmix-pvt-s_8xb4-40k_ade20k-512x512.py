# Semantic FPN on ADE20K with PVT-Small-ACmix: PVT's recipe for every backbone of this table (AdamW lr 2e-4,
# wd 1e-4, poly decay, 40k iterations, 512x512 crops, 8 GPUs x 2 images).
# ImageNet weights: checkpoints/imagenet/<model_name>.pth (ours: {'model': state_dict}, or the authors'
# Swin-ACmix release); change with --opts model.backbone.init_cfg.checkpoint=PATH, or train from scratch
# with --opts model.backbone.init_cfg=None.
_base_ = [
    '_base_/models/fpn.py', '_base_/datasets/ade20k.py',
    '_base_/schedules/schedule_40k.py', '_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        model_name='acmix_pvt_small',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_pvt_small.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
