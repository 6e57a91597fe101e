"""What the AUC methods share: two-stage training (pretrain, reset the head, continue) and per-label bookkeeping.

Two-stage DAM (Yuan et al., ICCV 2021, Sec. 3.4): `--set pretrain=ce --set pretrain_epochs=N`
trains the first N epochs with the named pointwise method (its own optimizer, hyperparameter
defaults and schedule, decays at 50 % and 75 % of N), then re-initialises the classifier head
(`models.reset_head`) and runs the AUC method for the remaining epochs - N, whose schedule
(decays at 50 % and 75 %) and PESG reference point count from the start of that stage.
Pretraining epochs count inside `epochs`, so every method gets the same budget. They are
validated and logged but never selected as the result (`selectable`), so the tested weights
are always the AUC method's own. The run's sampler (oversampling included) serves both stages.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..data import Batch
from ..errors import BenchError
from ..hparams import Choice, Int
from ..lazy import lazy_import
from ..models import reset_head
from .base import METHODS, Method, StepContext

torch = lazy_import("torch", globals())

PRETRAIN_PARAMS = {
    "pretrain": Choice("none", "two-stage DAM: pointwise method trained first (then the head is reset)", choices=("none", "ce", "focal")),
    "pretrain_epochs": Int(0, "epochs of the pretraining stage, counted inside `epochs`", minimum=0),
}

# AUC methods draw stratified batches (>= 1 positive and >= 1 negative) with positives oversampled to 50 %
AUC_DEFAULTS: dict[str, Any] = {"sampling_rate": 0.5}


def stage_config(method: type[Method], config: dict[str, Any]) -> dict[str, Any]:
    """Return `config` with `method`'s own hyperparameters at their defaults (a pretraining stage's settings)."""
    return {**config, **{name: param.default for name, param in method.PARAMS.items()}}


class AUCMethod(Method):
    """Base of the AUC methods: runs an optional pretraining stage, then the subclass's own steps.

    Subclasses implement `configure()` (built when their stage starts), `step(batch, ctx)` and
    optionally `stage_epoch_end(stage_epoch, val_metrics)`; stage epochs count from 1.
    """

    DEFAULTS = AUC_DEFAULTS

    def __init__(self, config: dict[str, Any], model: torch.nn.Module, info: Any) -> None:
        self.config, self.model, self.info = config, model, info
        self.offset = self._pretrain_epochs(config, info.epochs)
        self.pretrainer: Method | None = None
        self.epoch = 0
        if self.offset:
            pre = METHODS.get(config["pretrain"])
            self.pretrainer = pre(stage_config(pre, config), model, replace(info, epochs=self.offset))
            self.info = replace(info, epochs=info.epochs - self.offset)
        else:
            self.configure()

    @staticmethod
    def _pretrain_epochs(config: dict[str, Any], epochs: int) -> int:
        method, n = config.get("pretrain", "none"), config.get("pretrain_epochs", 0)
        if method == "none":
            if n:
                raise BenchError("pretrain_epochs is set but pretrain=none; choose a pretraining method, e.g. --set pretrain=ce")
            return 0
        if not 0 < n < epochs:
            raise BenchError(f"pretrain={method} needs 0 < pretrain_epochs < epochs (got pretrain_epochs={n}, epochs={epochs})")
        return n

    # --- the trainer's interface ---------------------------------------------------------

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        if self.pretrainer is not None and epoch <= self.offset:
            self.pretrainer.on_epoch_start(epoch)
            return
        if self.pretrainer is not None:
            # the DAM two-stage framework: keep the CE features, start a fresh classifier head
            self.pretrainer = None
            reset_head(self.model)
            self.configure()
        self.stage_epoch_start(epoch - self.offset)

    def train_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        if self.pretrainer is not None:
            return self.pretrainer.train_step(batch, ctx)
        return self.step(batch, ctx)

    def on_epoch_end(self, epoch: int, val_metrics: dict[str, float]) -> None:
        if self.pretrainer is not None:
            self.pretrainer.on_epoch_end(epoch, val_metrics)
        else:
            self.stage_epoch_end(epoch - self.offset, val_metrics)

    def selectable(self, epoch: int) -> bool:
        return epoch > self.offset

    def current_lr(self) -> float:
        if self.pretrainer is not None:
            return self.pretrainer.current_lr()
        return self.stage_lr()

    # --- what subclasses implement ---------------------------------------------------------

    def step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        """Take one optimisation step of the AUC method; return the detached loss."""
        raise NotImplementedError

    def stage_epoch_start(self, stage_epoch: int) -> None:
        """Called before each epoch of the AUC stage (1-based within the stage)."""

    def stage_epoch_end(self, stage_epoch: int, val_metrics: dict[str, float]) -> None:
        """Called after each epoch of the AUC stage (1-based within the stage)."""

    def stage_lr(self) -> float:
        """Return the AUC stage's learning rate (for the logs)."""
        return Method.current_lr(self)

    # --- helpers ---------------------------------------------------------------------------

    def prior(self) -> torch.Tensor:
        """Return the per-label prior p (positive share of the batch distribution) in the model's dtype."""
        dtype = next(self.model.parameters()).dtype
        return torch.as_tensor(self.info.prior, dtype=dtype, device=self.info.device).reshape(self.info.n_labels)

    def scale_label_grads(self, tensors: list[torch.Tensor]) -> None:
        """Multiply the gradients of per-label auxiliary variables by the number of labels.

        The loss is the mean over labels, so each label's a, b, alpha would otherwise step
        n_labels times slower than in a binary task; scaled, each label's auxiliary problem
        moves as its own binary problem would.
        """
        if self.info.n_labels > 1:
            for t in tensors:
                if t.grad is not None:
                    t.grad.mul_(self.info.n_labels)
