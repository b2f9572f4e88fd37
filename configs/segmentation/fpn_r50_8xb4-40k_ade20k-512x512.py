# Baseline of fpn_acmix-r50_8xb2-40k_ade20k-512x512.py: the same segmenter and recipe with timm's ResNet-50.
_base_ = './fpn_acmix-r50_8xb2-40k_ade20k-512x512.py'
model = dict(backbone=dict(
    model_name='resnet50',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/resnet50.pth')))
