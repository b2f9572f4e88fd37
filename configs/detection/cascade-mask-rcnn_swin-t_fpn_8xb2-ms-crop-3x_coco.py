# Baseline of cascade-mask-rcnn_acmix-swin-t_fpn_8xb2-ms-crop-3x_coco.py:
# the same detector and recipe with timm's Swin-T.
_base_ = './cascade-mask-rcnn_acmix-swin-t_fpn_8xb2-ms-crop-3x_coco.py'
model = dict(backbone=dict(
    model_name='swin_tiny_patch4_window7_224',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/swin_tiny_patch4_window7_224.pth')))
