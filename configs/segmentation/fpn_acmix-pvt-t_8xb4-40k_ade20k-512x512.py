# Semantic FPN on ADE20K with PVT-Tiny-ACmix. Recipe: PVT's (whai362/PVT
# segmentation/configs/sem_fpn/PVT/fpn_pvt_t_ade20k_40k.py): AdamW lr 2e-4, wd 1e-4 (schedules/optim_adamw-pvt.py),
# poly decay (power 0.9) over 40k iterations, 512x512 crops, 8 GPUs x 4 images, drop path 0.1. Deviation: the test
# resize, see datasets/ade20k.py.
# ImageNet weights: checkpoints/imagenet/acmix_pvt_tiny.pth, e.g. tools/train.py on
# configs/classification/acmix_pvt_tiny.yaml; change with --opts model.backbone.init_cfg.checkpoint=PATH, or train
# from scratch with --opts model.backbone.init_cfg=None.
_base_ = [
    '_base_/models/fpn.py', '_base_/datasets/ade20k.py',
    '_base_/schedules/schedule_40k.py', '_base_/schedules/optim_adamw-pvt.py', '_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        model_name='acmix_pvt_tiny',
        drop_path_rate=0.1,
        # as PVT's dense-prediction backbone: stage 4 without the class token (the ImageNet checkpoint's token and
        # its position row are dropped on loading, as PVT's code does)
        class_token=False,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_pvt_tiny.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
