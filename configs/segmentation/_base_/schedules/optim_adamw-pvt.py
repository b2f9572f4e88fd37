# PVT's Semantic FPN optimizer: AdamW lr 2e-4 (1e-4 x 2 for 8 GPUs), betas (0.9, 0.999), weight decay 1e-4 on every
# parameter, no gradient clipping.
# Source: whai362/PVT segmentation/configs/sem_fpn/PVT/fpn_pvt_{t,s}_ade20k_40k.py.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0002, betas=(0.9, 0.999), weight_decay=0.0001),
    clip_grad=None)
