"""Model families on timm; importing this package registers every ``acmix_*`` entrypoint (and the conv baselines
timm does not own) with ``timm.create_model``.  ``models/mm_backbone.py`` (mmdet/mmseg adapter) is not imported here.
"""
from . import resnet, swin  # noqa: F401  (registration side effects)
from . import pvt, san  # noqa: F401
from ._checkpoint import check_state_dict, filter_state_dict, unwrap_state_dict  # noqa: F401
