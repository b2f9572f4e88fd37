# Demo: Mask R-CNN with a miniature Swin-ACmix on the drawn-shapes COCO sets of detection/demo_data.py, trained
# from scratch on a CPU in minutes.  It is the COCO Mask R-CNN config (80 COCO classes, COCO json, CocoMetric)
# with only the model size, the image scale, the anchors and the schedule changed:
#   * backbone: Swin-ACmix with embed_dim 32, depths (1, 1, 1, 1), heads (1, 2, 4, 8) instead of Swin-T;
#     FPN / RPN / RoI heads 64 channels wide, box head fc 256;
#   * images resized to fit 224x160 instead of 1333x800, so objects are 10-70 px: RPN anchors of scale 4
#     (16 px on P2 ... 256 px on P6) instead of 8, which would start at 32 px;
#   * a fixed budget of 500 iterations of batch 4 (run time independent of the dataset's size), AdamW lr 2e-3
#     (no ImageNet weights) with 50 warm-up iterations and a x0.1 step at 400; no validation during training
#     (tools/demo.py tests right after; `--opts train_cfg.val_interval=500` adds it).  On the variant-2 set
#     (10 other classes, about 1,400 objects), bbox mAP: 300 iterations at lr 1e-3 0.14, at lr 2e-3 0.15;
#     500 at 2e-3 0.32; 600 at 2e-3 0.38 (11.8 min with its test on 2 threads, 1.1 s per iteration).
#
#   python tools/make_demo_data.py detection data/coco-demo [--variant 2]
#   python tools/train.py configs/detection/demo_mask-rcnn_acmix-swin-mini_fpn_1xb4-500it_coco.py \
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
    rpn_head=dict(in_channels=_width, feat_channels=_width, anchor_generator=dict(scales=[4])),
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

_iters = 500
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=_iters, val_interval=_iters + 1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=_iters, by_epoch=False, milestones=[400], gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=0.002, weight_decay=0.05))
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=_iters),
    visualization=dict(draw=False))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
