# Baseline of fpn_acmix-pvt-t_8xb4-40k_ade20k-512x512.py: the same segmenter and recipe with PVT-Tiny (v1).
_base_ = './fpn_acmix-pvt-t_8xb4-40k_ade20k-512x512.py'
model = dict(backbone=dict(
    model_name='pvt_v1_tiny',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/pvt_v1_tiny.pth')))
