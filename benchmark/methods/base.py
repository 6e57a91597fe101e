"""The method interface: a loss, its optimizer, its schedule and its hyperparameters as one unit.

The trainer only ever calls the hooks below; anything a method needs between epochs
(a learning-rate decay, PESG's reference-point reset, ALM's mu update from the validation
AUC) happens inside them, so the trainer never branches on a method's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from ..data import Batch
from ..hparams import Float, Param
from ..lazy import lazy_import
from ..registry import Registry

torch = lazy_import("torch", globals())


@dataclass
class TrainInfo:
    """What a method may know about the training data and budget when it is built."""

    n_train: int
    n_labels: int
    multilabel: bool
    prior: np.ndarray  # positive share per label of the distribution batches are drawn from
    epochs: int
    steps_per_epoch: int
    device: torch.device
    train_labels: np.ndarray  # (n_train, n_labels) int, for per-sample state (tpAUC, ALM)


@dataclass
class StepContext:
    """Services the trainer offers a training step.

    `forward(x)` runs the model under the trainer's autocast and returns float32 logits;
    `next_batch()` draws another, independent training batch (compositional training needs one).
    """

    forward: Callable[[torch.Tensor], torch.Tensor]
    next_batch: Callable[[], Batch]


class Method:
    """Base class: subclasses set PARAMS and implement `configure` and `train_step`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # the method's own hyperparameters, each declared once with its default and search range
    PARAMS: ClassVar[dict[str, Param]] = {}
    # defaults this method sets for shared run parameters (layered: task < method < user)
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    # whether the loss accepts soft targets in [0, 1] (mixup, CutMix, label smoothing); pairwise
    # AUC losses need 0/1 labels to tell positives from negatives
    soft_targets: ClassVar[bool] = False

    def __init__(self, config: dict[str, Any], model: torch.nn.Module, info: TrainInfo) -> None:
        self.config = config
        self.model = model
        self.info = info
        self.configure()

    def configure(self) -> None:
        """Build the optimizer, schedule and any auxiliary state."""
        raise NotImplementedError

    def train_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        """Take one optimisation step on `batch`; return the loss as a detached scalar tensor.

        A tensor, not a float: reading it on the host would synchronise the GPU every step.
        """
        raise NotImplementedError

    def on_epoch_start(self, epoch: int) -> None:
        """Called before epoch `epoch` (1-based)."""

    def on_epoch_end(self, epoch: int, val_metrics: dict[str, float]) -> None:
        """Called after epoch `epoch` with the validation metrics."""

    def selectable(self, epoch: int) -> bool:
        """Return whether epoch `epoch`'s weights may be selected as the run's result.

        False during a pretraining stage (two-stage DAM, ALM's initialisation): the trainer then
        keeps validating but never picks those weights, so the result is always the method's own.
        """
        return True

    def current_lr(self) -> float:
        """Return the learning rate in force (for the logs)."""
        optimizer = getattr(self, "optimizer", None)
        return float(optimizer.param_groups[0]["lr"]) if optimizer is not None else float("nan")


METHODS: Registry[type[Method]] = Registry("method")


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Return a class decorator that registers a Method subclass under `name`."""

    def add(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.add(name, cls)

    return add


def check_targets(logits: torch.Tensor, targets: torch.Tensor, n_labels: int, loss: str) -> None:
    """Raise ValueError unless `logits` and `targets` are both (B, n_labels).

    A loss built for one label must not run silently on 14-label targets (or the reverse):
    broadcasting would produce a number that means nothing.
    """
    if logits.dim() != 2 or logits.shape != targets.shape or logits.shape[1] != n_labels:
        raise ValueError(
            f"{loss}: expected logits and targets of shape (batch, {n_labels}), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )


# LibAUC's PDSCA and SOTAs clamp every gradient element to [-clip_value, clip_value] (default 1.0)
# before the update; the methods whose authors' optimizer does so declare this parameter
GRAD_CLIP = {
    "grad_clip": Float(1.0, "clamp each gradient element to [-c, c] before the update, as the authors' optimizer (LibAUC clip_value); 0 = off", minimum=0.0),
}


def clamp_grads(grads: list[torch.Tensor | None], clip: float) -> list[torch.Tensor | None]:
    """Return the gradients clamped element-wise to [-clip, clip] (unchanged when clip is 0)."""
    if not clip:
        return grads
    return [None if g is None else g.clamp(-clip, clip) for g in grads]


def decay_milestones(epochs: int) -> list[int]:
    """Return the official decay epochs, 50 % and 75 % of the budget (50 and 75 of 100)."""
    return sorted({max(1, round(0.5 * epochs)), max(1, round(0.75 * epochs))})
