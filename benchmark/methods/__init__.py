"""Training methods, found by name in METHODS; importing this package registers them all."""

from .base import METHODS, Method, StepContext, TrainInfo, register
# import order is listing order: the baselines, then the AUC methods
from . import ce, focal, aucm, ct, tpauc, alm  # noqa: F401, I001  (registers)

__all__ = ["METHODS", "Method", "StepContext", "TrainInfo", "register"]
