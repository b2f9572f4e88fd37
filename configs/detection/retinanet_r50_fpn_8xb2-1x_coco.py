# Baseline of retinanet_acmix-r50_fpn_8xb2-1x_coco.py: the same detector and recipe with timm's ResNet-50.
_base_ = './retinanet_acmix-r50_fpn_8xb2-1x_coco.py'
model = dict(backbone=dict(
    model_name='resnet50',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/resnet50.pth')))
