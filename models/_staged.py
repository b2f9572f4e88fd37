"""timm model methods shared by the models built from a list of stages (SAN, PVT): gradient checkpointing,
``forward_intermediates`` and ``prune_intermediate_layers``."""
from typing import List, Optional, Tuple, Union

import torch
from timm.models._features import feature_take_indices

__all__ = ['StagedModel']


class StagedModel:
    """Mixin for an ``nn.Module`` with ``stages`` (``nn.Sequential`` or ``nn.ModuleList`` of modules with a
    ``grad_checkpointing`` flag), ``feature_info`` (one entry per stage), ``num_features`` and ``head_hidden_size``.

    The model implements ``_forward_stages(x, stages, take_indices, norm, features) -> (features, intermediates)``
    (run the stem and ``stages`` on images ``x``; collect the (B, C, H, W) output of every stage whose index is in
    ``take_indices``; ``features``: also return ``forward_features``' output from the last stage run, else None)
    and ``_prune_tail(prune_norm, prune_head)`` (drop the final norm / the head).
    """

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for s in self.stages:
            s.grad_checkpointing = enable

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs as (B, C, H, W) maps.

        Args:
            x: (B, C, H, W) images.
            indices: last n stages if int, all if None, else the stage indices to return.
            norm: apply the model's final norm to the last stage's map when it is returned (where it has one).
            stop_early: stop after the last requested stage.
            output_fmt: only ``'NCHW'``.
            intermediates_only: return only the list.

        Returns:
            the intermediates, or (``forward_features``' output, intermediates).
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[:max_index + 1] if stop_early and not torch.jit.is_scripting() else self.stages
        features, intermediates = self._forward_stages(x, stages, take_indices, norm, not intermediates_only)
        if intermediates_only:
            return intermediates
        return features, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages after the last requested one, and the final norm / head when asked or when stages go."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        self._prune_tail(prune_norm or prune_end, prune_head or prune_end)
        return take_indices
