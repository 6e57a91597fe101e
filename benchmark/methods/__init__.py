"""Training methods, found by name in METHODS; importing this package registers them all."""

from .base import METHODS, Method, StepContext, TrainInfo, register
from . import ce  # noqa: F401  (registers)

__all__ = ["METHODS", "Method", "StepContext", "TrainInfo", "register"]
