# Runtime shared by every segmentation config: mmseg scope, our backbone adapter, iteration-based hooks.
default_scope = 'mmseg'
# registers ACmixBackbone (any timm / acmix_* feature extractor) in mmseg's MODELS
custom_imports = dict(imports=['models.mm_backbone'], allow_failed_imports=False)

# default_hooks live in the schedule files (their checkpoint interval follows the schedule).

env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False

# multi-scale + flip testing: tools/test.py --tta wraps the model in this with the dataset's tta_pipeline
tta_model = dict(type='SegTTAModel')
# BatchNorm everywhere; mmtask sets sync_bn='torch' for distributed runs (SyncBatchNorm across GPUs).
