# UperNet on ADE20K with Swin-S-ACmix: the Swin-T-ACmix config (upernet_acmix-swin-t_8xb2-160k_ade20k-512x512.py)
# with the small backbone; recipe, schedule and data are inherited unchanged (Swin's
# upernet_swin_small_patch4_window7_512x512_160k_ade20k.py has the same values).
_base_ = './upernet_acmix-swin-t_8xb2-160k_ade20k-512x512.py'
model = dict(backbone=dict(
    model_name='acmix_swin_small_patch4_window7_224',
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/imagenet/acmix_swin_small_patch4_window7_224.pth')))
