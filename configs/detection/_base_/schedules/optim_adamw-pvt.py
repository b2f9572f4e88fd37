# PVT's detection optimizer: AdamW lr 1e-4 (RetinaNet; Mask R-CNN configs set 2e-4), betas (0.9, 0.999),
# weight decay 1e-4 on every parameter, no gradient clipping.
# Source: whai362/PVT detection/configs/retinanet_pvt_{t,s}_fpn_1x_coco.py and mask_rcnn_pvt_{t,s}_fpn_1x_coco.py.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001))

# lr is for 16 images per iteration (8 GPUs x 2); --opts auto_scale_lr.enable=True rescales it
auto_scale_lr = dict(enable=False, base_batch_size=16)
