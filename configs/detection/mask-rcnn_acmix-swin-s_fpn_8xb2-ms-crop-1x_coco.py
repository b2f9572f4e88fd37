# Mask R-CNN 1x on COCO with Swin-S-ACmix: the Swin-T-ACmix config (mask-rcnn_acmix-swin-t_fpn_8xb2-ms-crop-1x_coco.py)
# with the small backbone and drop path 0.2. Swin's detection repository has no Swin-S 1x config: 0.2 is the value
# of its Swin-S 3x configs (mask_rcnn_swin_small_patch4_window7_mstrain_480-800_adamw_3x_coco.py). The rest of
# the recipe, the schedule and the data are inherited unchanged.
_base_ = './mask-rcnn_acmix-swin-t_fpn_8xb2-ms-crop-1x_coco.py'
model = dict(backbone=dict(
    model_name='acmix_swin_small_patch4_window7_224',
    drop_path_rate=0.2,
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_swin_small_patch4_window7_224.pth')))
