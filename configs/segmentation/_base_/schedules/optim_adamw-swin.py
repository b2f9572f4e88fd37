# Swin's UperNet optimizer: AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01 except on parameters whose name
# contains 'absolute_pos_embed', 'relative_position_bias_table' or 'norm'; no gradient clipping.
# Source: SwinTransformer/Swin-Transformer-Semantic-Segmentation configs/swin/
# upernet_swin_{tiny,small}_patch4_window7_512x512_160k_ade20k.py.
# Ours, not Swin's: no decay on ACmix's mixing weights rate1/rate2 either (the ACmix authors released no
# segmentation code; their ImageNet training never decayed these 1-D parameters, and neither does ours).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
        'rate1': dict(decay_mult=0.),
        'rate2': dict(decay_mult=0.),
    }))
