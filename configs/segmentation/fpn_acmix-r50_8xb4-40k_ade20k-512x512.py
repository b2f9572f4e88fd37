# Semantic FPN on ADE20K with ResNet-50-ACmix. Recipe: PVT's ResNet-50 Semantic FPN (whai362/PVT
# segmentation/configs/sem_fpn/fpn_r50_512x512_40k_ade20k.py): SGD lr 0.02, momentum 0.9, wd 5e-4
# (schedules/optim_sgd.py), poly decay (power 0.9) over 40k iterations, 512x512 crops, 8 GPUs x 4 images, BatchNorm
# trained. Ours: the paper trains no ACmix-ResNet/SAN segmenter, so these backbones take the recipe of their
# ResNet-50 twin. Deviation: the test resize, see datasets/ade20k.py.
# ImageNet weights: checkpoints/imagenet/acmix_resnet50.pth, e.g. tools/train.py on
# configs/classification/acmix_resnet50.yaml; change with --opts model.backbone.init_cfg.checkpoint=PATH, or train
# from scratch with --opts model.backbone.init_cfg=None.
_base_ = [
    '_base_/models/fpn.py', '_base_/datasets/ade20k.py',
    '_base_/schedules/schedule_40k.py', '_base_/schedules/optim_sgd.py', '_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        model_name='acmix_resnet50',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_resnet50.pth')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
