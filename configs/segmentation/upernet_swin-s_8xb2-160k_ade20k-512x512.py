# Baseline of upernet_acmix-swin-s_8xb2-160k_ade20k-512x512.py: the same segmenter and recipe with timm's Swin-S,
# i.e. Swin's configs/swin/upernet_swin_small_patch4_window7_512x512_160k_ade20k.py.
_base_ = './upernet_acmix-swin-t_8xb2-160k_ade20k-512x512.py'
model = dict(backbone=dict(
    model_name='swin_small_patch4_window7_224',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/swin_small_patch4_window7_224.pth')))
