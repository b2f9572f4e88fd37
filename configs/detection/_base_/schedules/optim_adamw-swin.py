# Swin's detection optimizer: AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05 except on parameters whose name
# contains 'absolute_pos_embed', 'relative_position_bias_table' or 'norm'; no gradient clipping.
# Source: SwinTransformer/Swin-Transformer-Object-Detection configs/swin/mask_rcnn_swin_tiny_patch4_window7_
# mstrain_480-800_adamw_{1x,3x}_coco.py and cascade_mask_rcnn_swin_*_giou_4conv1f_adamw_3x_coco.py.
# Ours, not Swin's: no decay on ACmix's mixing weights rate1/rate2 either (the ACmix authors released no detection
# code; their ImageNet training never decayed these 1-D parameters, and neither does ours).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
        'rate1': dict(decay_mult=0.),
        'rate2': dict(decay_mult=0.),
    }))

# lr is for 16 images per iteration (8 GPUs x 2); --opts auto_scale_lr.enable=True rescales it
auto_scale_lr = dict(enable=False, base_batch_size=16)
