# Baseline of mask-rcnn_acmix-swin-s_fpn_8xb2-ms-crop-3x_coco.py: the same detector and recipe with timm's Swin-S,
# i.e. Swin's configs/swin/mask_rcnn_swin_small_patch4_window7_mstrain_480-800_adamw_3x_coco.py.
_base_ = './mask-rcnn_acmix-swin-t_fpn_8xb2-ms-crop-3x_coco.py'
model = dict(backbone=dict(
    model_name='swin_small_patch4_window7_224',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/swin_small_patch4_window7_224.pth')))
