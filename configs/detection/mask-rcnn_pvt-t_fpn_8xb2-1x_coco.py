# Baseline of mask-rcnn_acmix-pvt-t_fpn_8xb2-1x_coco.py: the same detector and recipe with PVT-Tiny (v1).
_base_ = './mask-rcnn_acmix-pvt-t_fpn_8xb2-1x_coco.py'
model = dict(backbone=dict(
    model_name='pvt_v1_tiny',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/pvt_v1_tiny.pth')))
