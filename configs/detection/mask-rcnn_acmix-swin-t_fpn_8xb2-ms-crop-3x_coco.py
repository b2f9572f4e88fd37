# Mask R-CNN 3x on COCO with Swin-T-ACmix (shifted windows + conv path), multi-scale training with crops.
# Recipe: Swin's (SwinTransformer/Swin-Transformer-Object-Detection configs/swin/
# mask_rcnn_swin_tiny_patch4_window7_mstrain_480-800_adamw_3x_coco.py): AdamW lr 1e-4, wd 0.05 (schedules/
# optim_adamw-swin.py), 500 warm-up iterations, 36 epochs (x0.1 after 27 and 33), 480-800 multi-scale + crop
# (datasets/coco_instance_ms-crop.py), 8 GPUs x 2 images, drop path 0.2 (Swin-S: the same values).
# Deviations: as mask-rcnn_acmix-swin-t_fpn_8xb2-ms-crop-1x_coco.py (our backbone, mmdet 3.x heads and transforms,
# fp32 unless --amp, no decay on rate1/rate2).
# ImageNet weights: checkpoints/imagenet/<model_name>.pth: ours (tools/train.py on configs/classification/
# <model_name>.yaml) or the authors' Swin-ACmix release; change with --opts model.backbone.init_cfg.checkpoint=PATH,
# or train from scratch with --opts model.backbone.init_cfg=None.
_base_ = [
    '_base_/models/mask-rcnn_fpn.py', '_base_/datasets/coco_instance_ms-crop.py',
    '_base_/schedules/schedule_3x.py', '_base_/schedules/optim_adamw-swin.py', '_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        model_name='acmix_swin_tiny_patch4_window7_224',
        drop_path_rate=0.2,
        window_rule='detection',  # Swin's det/seg backbone: odd blocks shift at any size, pad before the roll
        out_norm=True,  # and its LayerNorm on every output stage (norm0..norm3)
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_swin_tiny_patch4_window7_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
