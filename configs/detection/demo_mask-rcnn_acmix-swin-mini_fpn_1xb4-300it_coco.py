# Demo: Mask R-CNN with a miniature Swin-ACmix on the drawn-shapes COCO set of detection/demo_data.py, trained
# from scratch on a CPU in minutes.  It is the COCO Mask R-CNN config (80 COCO classes, COCO json, CocoMetric)
# with only the model size, the image scale and the schedule changed:
#   * backbone: Swin-ACmix with embed_dim 32, depths (1, 1, 1, 1), heads (1, 2, 4, 8) instead of Swin-T;
#     FPN / RPN / RoI heads 64 channels wide, box head fc 256;
#   * images resized to fit 224x160 instead of 1333x800;
#   * 6 epochs of 160 images (240 iterations), batch 4, AdamW lr 1e-3 (no ImageNet weights), validation at the end.
#
#   python tools/make_demo_data.py detection data/coco-demo
#   python tools/train.py configs/detection/demo_mask-rcnn_acmix-swin-mini_fpn_1xb4-6e_coco.py \
#       --data-path data/coco-demo --work-dir work_dirs/det-demo
_base_ = [
    '_base_/models/mask-rcnn_fpn.py', '_base_/datasets/coco_instance.py',
    '_base_/schedules/schedule_1x.py', '_base_/schedules/optim_adamw-pvt.py', '_base_/default_runtime.py'
]
data_root = 'data/coco-demo/'
_width = 64

model = dict(
    backbone=dict(
        model_name='acmix_swin_tiny_patch4_window7_224',
        embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), drop_path_rate=0.0,
        strict_img_size=False),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=_width),
    rpn_head=dict(in_channels=_width, feat_channels=_width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=_width),
        bbox_head=dict(in_channels=_width, fc_out_channels=256),
        mask_roi_extractor=dict(out_channels=_width),
        mask_head=dict(in_channels=_width, conv_out_channels=_width)))

_scale = (224, 160)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

_epochs = 6
train_cfg = dict(max_epochs=_epochs, val_interval=_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=_epochs, by_epoch=True, milestones=[5], gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=0.001, weight_decay=0.05))
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=_epochs),
    visualization=dict(draw=False))
randomness = dict(seed=0)
