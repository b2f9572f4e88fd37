# PVT's Semantic FPN optimizer for ResNet-style backbones (ResNet-50, SAN-10 and their ACmix versions): SGD lr 0.02
# (0.01 x 2 for 8 GPUs), momentum 0.9, weight decay 5e-4 on every parameter, no gradient clipping.
# Source: whai362/PVT segmentation/configs/sem_fpn/fpn_r50_512x512_40k_ade20k.py.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0005),
    clip_grad=None)
