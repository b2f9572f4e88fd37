# UperNet on ADE20K with Swin-S-ACmix: Swin's recipe (AdamW lr 6e-5, wd 0.01, 1500 warm-up iterations, linear
# decay, 160k iterations, 512x512 crops, 8 GPUs x 2 images).
# ImageNet weights: checkpoints/imagenet/<model_name>.pth (ours: {'model': state_dict}, or the authors'
# Swin-ACmix release); change with --opts model.backbone.init_cfg.checkpoint=PATH, or train from scratch
# with --opts model.backbone.init_cfg=None.
_base_ = [
    '_base_/models/upernet.py', '_base_/datasets/ade20k.py',
    '_base_/schedules/schedule_160k.py', '_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        model_name='acmix_swin_small_patch4_window7_224',
        drop_path_rate=0.3,
        strict_img_size=False,  # any input size (padded to windows)
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_swin_small_patch4_window7_224.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
