"""Per-image transforms the augmentation presets need that torchvision lacks.

Apart from `augment.py` because a torchvision `Transform` subclass needs torchvision when it
is defined, and `augment.py`, which declares the presets `bench augmentations` lists, must
import without it.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF


class RandomGamma(v2.Transform):
    """Gamma correction x ** g with g drawn uniformly from `gamma` (torchvision has the kernel, not the random transform)."""

    def __init__(self, gamma: tuple[float, float] = (0.7, 1.5)) -> None:
        super().__init__()
        self.gamma = gamma

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"gamma": float(torch.empty(1).uniform_(*self.gamma))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(TF.adjust_gamma, inpt, gamma=params["gamma"])
