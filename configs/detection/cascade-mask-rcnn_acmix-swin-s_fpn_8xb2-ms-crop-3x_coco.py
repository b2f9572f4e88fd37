# Cascade Mask R-CNN 3x on COCO with Swin-S-ACmix: the Swin-T-ACmix config
# (cascade-mask-rcnn_acmix-swin-t_fpn_8xb2-ms-crop-3x_coco.py) with the small backbone; recipe, schedule and data
# are inherited unchanged (Swin's configs/swin/
# cascade_mask_rcnn_swin_small_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco.py has the same values).
_base_ = './cascade-mask-rcnn_acmix-swin-t_fpn_8xb2-ms-crop-3x_coco.py'
model = dict(backbone=dict(
    model_name='acmix_swin_small_patch4_window7_224',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_swin_small_patch4_window7_224.pth')))
