# mmdet's SGD for ResNet-style backbones (ResNet-50, SAN-10 and their ACmix versions): lr 0.02 for 16 images per
# iteration (Mask R-CNN), momentum 0.9, weight decay 1e-4 on every parameter, no gradient clipping.
# Source: mmdet configs/_base_/schedules/schedule_1x.py (mask-rcnn_r50_fpn_1x_coco.py uses it as is); RetinaNet
# configs set lr 0.01 as mmdet's configs/retinanet/retinanet_r50_fpn_1x_coco.py does.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001))

# lr is for 16 images per iteration (8 GPUs x 2); --opts auto_scale_lr.enable=True rescales it
auto_scale_lr = dict(enable=False, base_batch_size=16)
