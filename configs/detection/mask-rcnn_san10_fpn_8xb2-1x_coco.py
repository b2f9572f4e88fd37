# Baseline of mask-rcnn_acmix-san10_fpn_8xb2-1x_coco.py: the same detector and recipe with SAN-10 (patchwise).
_base_ = './mask-rcnn_acmix-san10_fpn_8xb2-1x_coco.py'
model = dict(backbone=dict(
    model_name='san10',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/san10.pth')))
