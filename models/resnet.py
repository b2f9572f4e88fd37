"""ResNet-ACmix and its convolutional baselines, on timm's ``ResNet``.

Paper: Pan et al., "On the Integration of Self-Attention and Convolution", CVPR 2022 (ACmix), Sec. 4.1:
ResNet-26/38/50 with ACmix (SASA-style 7x7 local attention, 4 heads, 3x3 conv path) in the 3x3 slot of *every*
bottleneck, layer1 included, as the authors' released ``ResNet/ResNet_ImageNet.py`` does.

Design: timm's ``ResNet`` builds the network; only the bottleneck's 3x3 slot (``conv2``) is an argument
(``mixer='conv' | 'acmix'``, passed through timm's ``block_args``).  The state-dict layout is therefore the
torchvision one the authors used (``layerX.Y.conv2.{conv1,conv2,conv3,conv_p,fc,dep_conv,rate1,rate2}``, ``fc``),
and the conv baseline is timm's own ``Bottleneck`` unchanged.  ResNet-50's baseline is timm's ``resnet50``;
26 and 38 (layers [1,2,4,1] / [2,3,5,2], unlike timm's ``resnet26`` = [2,2,2,2]) are registered here as
``conv_resnet26`` / ``conv_resnet38``.

Initialisation (authors' defect 7): timm's ``ResNet.init_weights`` applies Kaiming-normal to every ``nn.Conv2d``,
ACmix's ``dep_conv`` included, which erases its shift initialisation.  The authors' ResNet did the same.
``acmix_init='shift'`` (default) re-runs each ACmix module's ``reset_parameters`` after the global init, which
restores the one-hot shift kernels of ``dep_conv`` and ``rate1 = rate2 = 0.5`` (the q/k/v, ``conv_p`` and ``fc``
convs keep timm's Kaiming init); ``acmix_init='kaiming'`` keeps Kaiming on ``dep_conv`` too, as the authors' code
effectively trained.
"""
from typing import Any, Dict, Optional, Type

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import Bottleneck, ResNet

from acmix import ACmix

from ._checkpoint import filter_state_dict

__all__ = ['MixerBottleneck', 'ACmixResNet']

_MIXERS = ('conv', 'acmix')
_MODEL_ARGS = {  # per entrypoint (end of file); the caller's keyword arguments override them
    'acmix_resnet26': dict(layers=(1, 2, 4, 1), mixer='acmix'),
    'acmix_resnet38': dict(layers=(2, 3, 5, 2), mixer='acmix'),
    'acmix_resnet50': dict(layers=(3, 4, 6, 3), mixer='acmix'),
    'conv_resnet26': dict(layers=(1, 2, 4, 1), mixer='conv'),
    'conv_resnet38': dict(layers=(2, 3, 5, 2), mixer='conv'),
}


class MixerBottleneck(Bottleneck):
    """timm's ``Bottleneck`` whose 3x3 ``conv2`` is chosen by ``mixer``.

    Args:
        mixer: ``'conv'`` keeps timm's 3x3 conv; ``'acmix'`` puts
            ``ACmix(width, width, kernel_att, head, kernel_conv, stride, dilation)`` in its place.
        mixer_args: extra keyword arguments for ``ACmix`` (``kernel_att=7, head=4, kernel_conv=3`` by default,
            plus anything ``ACmix`` accepts: ``mix``, ``shift``, ``attn_mode``, ``impl``).
        **kwargs: timm ``Bottleneck`` arguments.

    Shapes: ``(B, inplanes, H, W) -> (B, 4 * planes, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, *args: Any, mixer: str = 'conv', mixer_args: Optional[Dict[str, Any]] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if mixer not in _MIXERS:
            raise ValueError(f'mixer {mixer!r} not in {_MIXERS}')
        if mixer == 'conv':
            if mixer_args:
                raise ValueError(f'mixer_args {sorted(mixer_args)} given for mixer="conv"')
            return
        if not isinstance(self.aa, nn.Identity) or self.conv2.groups != 1:
            raise ValueError('the ACmix mixer supports neither anti-aliasing (aa_layer) nor cardinality > 1')
        margs = dict(kernel_att=7, head=4, kernel_conv=3)
        margs.update(mixer_args or {})
        conv = self.conv2
        self.conv2 = ACmix(
            conv.in_channels, conv.out_channels, stride=conv.stride[0], dilation=conv.dilation[0], **margs,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)  # where timm's factory kwargs put the conv


class ACmixResNet(ResNet):
    """timm ``ResNet`` with ``MixerBottleneck`` blocks (one class for ACmix and conv variants).

    Args:
        layers: blocks per stage.
        mixer: ``'acmix'`` or ``'conv'`` for every bottleneck's 3x3 slot.
        mixer_args: forwarded to ``ACmix`` (see ``MixerBottleneck``).
        acmix_init: ``'shift'`` re-runs each ACmix's ``reset_parameters`` after timm's global Kaiming init
            (shift kernels in ``dep_conv``, rates 0.5); ``'kaiming'`` keeps the global init, as the authors' code did.
        **kwargs: timm ``ResNet`` arguments (``num_classes``, ``drop_path_rate``, ``zero_init_last``, ...).
    """

    def __init__(
            self,
            layers=(3, 4, 6, 3),
            mixer: str = 'acmix',
            mixer_args: Optional[Dict[str, Any]] = None,
            acmix_init: str = 'shift',
            block: Type[nn.Module] = MixerBottleneck,
            **kwargs: Any,
    ):
        if acmix_init not in ('shift', 'kaiming'):
            raise ValueError(f"acmix_init {acmix_init!r} not in ('shift', 'kaiming')")
        self.acmix_init = acmix_init
        block_args = dict(kwargs.pop('block_args', None) or {}, mixer=mixer, mixer_args=mixer_args)
        super().__init__(block=block, layers=list(layers), block_args=block_args, **kwargs)

    def init_weights(self, zero_init_last: bool = True) -> None:
        """timm's init, then (``acmix_init='shift'``) each ACmix module's own ``reset_parameters``."""
        super().init_weights(zero_init_last=zero_init_last)
        if self.acmix_init == 'shift':
            for m in self.modules():
                if isinstance(m, ACmix):
                    m.reset_parameters()


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, Any]:
    """Accept ``{'state_dict': sd}`` with ``module.`` keys (authors' script), ``{'model': sd}`` or a plain sd.

    The authors' layout already equals ours key for key; anything else raises ``KeyError`` naming the keys.
    """
    return filter_state_dict(state_dict, model)


def _cfg(url: str = '', **kwargs: Any) -> Dict[str, Any]:
    return {
        'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear', 'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'conv1', 'classifier': 'fc', 'min_input_size': (3, 32, 32), 'license': 'apache-2.0',
        'paper_ids': 'arXiv:2111.14556', **kwargs,
    }


# No weights were released for the ResNet family: the cfgs carry no url (load a file via pretrained_cfg_overlay).
default_cfgs = generate_default_cfgs({
    'acmix_resnet26.untrained': _cfg(),
    'acmix_resnet38.untrained': _cfg(),
    'acmix_resnet50.untrained': _cfg(),
    'conv_resnet26.untrained': _cfg(),
    'conv_resnet38.untrained': _cfg(),
})


def _create_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> ACmixResNet:
    return build_model_with_cfg(ACmixResNet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                **dict(_MODEL_ARGS[variant], **kwargs))


@register_model
def acmix_resnet26(pretrained: bool = False, **kwargs: Any) -> ACmixResNet:
    """ACmix-ResNet-26, layers [1, 2, 4, 1] (10,487,816 params)."""
    return _create_resnet('acmix_resnet26', pretrained, **kwargs)


@register_model
def acmix_resnet38(pretrained: bool = False, **kwargs: Any) -> ACmixResNet:
    """ACmix-ResNet-38, layers [2, 3, 5, 2] (14,410,896 params)."""
    return _create_resnet('acmix_resnet38', pretrained, **kwargs)


@register_model
def acmix_resnet50(pretrained: bool = False, **kwargs: Any) -> ACmixResNet:
    """ACmix-ResNet-50, layers [3, 4, 6, 3] (18,333,976 params)."""
    return _create_resnet('acmix_resnet50', pretrained, **kwargs)


@register_model
def conv_resnet26(pretrained: bool = False, **kwargs: Any) -> ACmixResNet:
    """Conv baseline of ACmix-ResNet-26: torchvision-style ResNet, layers [1, 2, 4, 1] (13,696,552 params)."""
    return _create_resnet('conv_resnet26', pretrained, **kwargs)


@register_model
def conv_resnet38(pretrained: bool = False, **kwargs: Any) -> ACmixResNet:
    """Conv baseline of ACmix-ResNet-38: layers [2, 3, 5, 2] (19,626,792 params)."""
    return _create_resnet('conv_resnet38', pretrained, **kwargs)
