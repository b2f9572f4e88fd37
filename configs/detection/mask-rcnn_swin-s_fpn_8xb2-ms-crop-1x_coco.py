# Baseline of mask-rcnn_acmix-swin-s_fpn_8xb2-ms-crop-1x_coco.py: the same detector and recipe with plain Swin-S
# (drop path 0.2, see there).
# Plain Swin: our Swin class with mixer='attn' (timm's Swin parameters; timm's own model cannot run the
# twin's window_rule='detection'); it loads Microsoft's official release (their key layout) as well.
_base_ = './mask-rcnn_acmix-swin-t_fpn_8xb2-ms-crop-1x_coco.py'
model = dict(backbone=dict(
    model_name='acmix_swin_small_patch4_window7_224', mixer='attn',  # plain Swin-S
    drop_path_rate=0.2,
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/swin_small_patch4_window7_224.pth')))
