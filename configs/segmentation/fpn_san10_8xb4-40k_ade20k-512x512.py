# Baseline of fpn_acmix-san10_8xb4-40k_ade20k-512x512.py: the same segmenter and recipe with SAN-10 (patchwise).
_base_ = './fpn_acmix-san10_8xb4-40k_ade20k-512x512.py'
model = dict(backbone=dict(
    model_name='san10',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/san10.pth')))
