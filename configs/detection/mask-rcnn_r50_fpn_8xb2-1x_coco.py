# Baseline of mask-rcnn_acmix-r50_fpn_8xb2-1x_coco.py: the same detector and recipe with timm's ResNet-50, i.e.
# mmdet's R-50 1x (configs/mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py). Deviation: timm's ResNet-50 in ACmixBackbone
# instead of mmdet's ResNet (the same torchvision layout, style='pytorch'); mmdet's published row starts from
# torchvision's ImageNet weights (timm's resnet50.tv_in1k), this config from checkpoints/imagenet/resnet50.pth.
_base_ = './mask-rcnn_acmix-r50_fpn_8xb2-1x_coco.py'
model = dict(backbone=dict(
    model_name='resnet50',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/resnet50.pth')))
