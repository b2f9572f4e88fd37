# Baseline of fpn_acmix-r50_8xb4-40k_ade20k-512x512.py: the same segmenter and recipe with timm's ResNet-50.
# Deviation: timm's ResNet-50 (torchvision layout, as ACmix-ResNet-50) instead of PVT's mmseg ResNetV1c (deep stem),
# so the published PVT row (ResNetV1c, open-mmlab://resnet50_v1c weights) is not reproduced exactly.
_base_ = './fpn_acmix-r50_8xb4-40k_ade20k-512x512.py'
model = dict(backbone=dict(
    model_name='resnet50',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/resnet50.pth')))
