"""Data on the training device: splits as uint8 tensors, batches by index."""

from .loader import PARAMS, Batch, DeviceSplit, ShuffleSampler

__all__ = ["PARAMS", "Batch", "DeviceSplit", "ShuffleSampler"]
