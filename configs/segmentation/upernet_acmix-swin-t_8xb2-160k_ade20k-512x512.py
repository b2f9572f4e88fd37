# UperNet on ADE20K with Swin-T-ACmix.
# Recipe: Swin's (SwinTransformer/Swin-Transformer-Semantic-Segmentation configs/swin/
# upernet_swin_tiny_patch4_window7_512x512_160k_ade20k.py): AdamW lr 6e-5, wd 0.01 (schedules/optim_adamw-swin.py),
# 1500 warm-up iterations from 1e-6 x lr, then linear decay (schedules/schedule_160k.py), 160k iterations, 512x512
# crops, 8 GPUs x 2 images, auxiliary FCN head (weight 0.4), drop path 0.3 (Swin-S: the same values).
# Deviations: the backbone is ours (timm Swin + ACmix through ACmixBackbone), heads and transforms are mmseg 1.x's
# port; the poly decay starts after the warm-up (see schedules/schedule_160k.py); no decay on rate1/rate2 is ours.
# ImageNet weights: checkpoints/imagenet/<model_name>.pth: ours (tools/train.py on configs/classification/
# <model_name>.yaml) or the authors' Swin-ACmix release; change with --opts model.backbone.init_cfg.checkpoint=PATH,
# or train from scratch with --opts model.backbone.init_cfg=None.
_base_ = [
    '_base_/models/upernet.py', '_base_/datasets/ade20k.py',
    '_base_/schedules/schedule_160k.py', '_base_/schedules/optim_adamw-swin.py', '_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        model_name='acmix_swin_tiny_patch4_window7_224',
        drop_path_rate=0.3,
        window_rule='detection',  # Swin's det/seg backbone: odd blocks shift at any size, pad before the roll
        out_norm=True,  # and its LayerNorm on every output stage (norm0..norm3)
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_swin_tiny_patch4_window7_224.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
train_dataloader = dict(batch_size=2)  # Swin: data=dict(samples_per_gpu=2)
