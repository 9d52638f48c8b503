"""The dtype a diffusers network computes in, without diffusers' walk over every submodule."""
from __future__ import annotations

import torch


class ComputeDtype:
    """For a diffusers ``ModelMixin`` subclass: ``dtype`` as diffusers gives it (the layerwise-casting compute
    dtype where the network is cast, else its first floating parameter's), answered without the walk over every
    submodule for a casting hook that diffusers takes on each read. The UNets read it on every forward: with a
    student's LoRA on every layer that walk was a fifth of a distillation step on the CPU. Layerwise casting
    comes only through ``enable_layerwise_casting`` (diffusers has no way to undo it), so the network records it
    there."""

    _layerwise_compute_dtype: torch.dtype | None = None

    def enable_layerwise_casting(self, storage_dtype: torch.dtype = torch.float8_e4m3fn,
                                 compute_dtype: torch.dtype | None = None, **options) -> None:
        compute_dtype = compute_dtype or self.dtype
        super().enable_layerwise_casting(storage_dtype, compute_dtype, **options)
        self._layerwise_compute_dtype = compute_dtype

    @property
    def dtype(self) -> torch.dtype:
        if self._layerwise_compute_dtype is not None:
            return self._layerwise_compute_dtype
        return next(parameter.dtype for parameter in self.parameters() if parameter.is_floating_point())
