# RetinaNet 1x on COCO with PVT-Tiny-ACmix (spatial-reduction attention + conv path).
# Recipe: PVT's (whai362/PVT detection/configs/retinanet_pvt_t_fpn_1x_coco.py): AdamW lr 1e-4, wd 1e-4, 500 warm-up
# iterations, 12 epochs (x0.1 after 8 and 11), 1333x800 + flip, 8 GPUs x 2 images, drop path 0.1.
# ImageNet weights: checkpoints/imagenet/acmix_pvt_tiny.pth, e.g. tools/train.py on
# configs/classification/acmix_pvt_tiny.yaml; change with --opts model.backbone.init_cfg.checkpoint=PATH, or train
# from scratch with --opts model.backbone.init_cfg=None.
_base_ = [
    '_base_/models/retinanet_fpn.py', '_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_1x.py', '_base_/schedules/optim_adamw-pvt.py', '_base_/default_runtime.py'
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
