# Mask R-CNN 1x on COCO with Swin-S-ACmix: the Swin-T-ACmix config (mask-rcnn_acmix-swin-t_fpn_8xb2-1x_coco.py)
# with the small backbone; recipe, schedule and data are inherited unchanged.
_base_ = './mask-rcnn_acmix-swin-t_fpn_8xb2-1x_coco.py'
model = dict(backbone=dict(
    model_name='acmix_swin_small_patch4_window7_224',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_swin_small_patch4_window7_224.pth')))
