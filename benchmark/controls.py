"""Overfitting controls: weight averaging (EMA, SWA), early stopping and dropout before the head.

Each is a setting, off by default. The trainer sees them only through two small interfaces:
a `WeightAverage` (which weights to evaluate and keep each epoch) and a callback (early
stopping raises StopTraining), so `fit` never names a control.
Weight decay is a method hyperparameter (every method's optimizer owns it) and PESG's epoch
decay belongs to the `aucm` method; neither is declared here.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from .errors import BenchError
from .hparams import Bool, Float, Int
from .lazy import lazy_import
from .models import head
from .trainer import Callback, StopTraining

torch = lazy_import("torch", globals())
F = lazy_import("torch.nn.functional", globals())

PARAMS = {
    "ema": Bool(False, "evaluate (and keep) an exponential moving average of the weights instead of the raw ones", search=True),
    "ema_decay": Float(0.999, "EMA decay per step, reached after timm's warm-up (1 - (1 + step)^-2/3)", search=(0.95, 0.9999), minimum=0.0, maximum=1.0, needs=("ema", True)),
    "swa": Bool(False, "stochastic weight averaging: evaluate the running mean of the weights over the last swa_epochs epochs", search=True),
    "swa_epochs": Int(10, "SWA: number of final epochs averaged (only they may be selected)", search=(5, 30), minimum=1, needs=("swa", True)),
    "patience": Int(0, "early stopping: stop after this many epochs without a better val AUC; 0 = off", minimum=0),
    "dropout": Float(0.0, "dropout probability on the pooled features before the head", search=(0.0, 0.5), minimum=0.0, maximum=0.9),
}


def check_controls(config: dict[str, Any]) -> None:
    """Raise BenchError for combinations of controls that contradict each other."""
    if config.get("ema") and config.get("swa"):
        raise BenchError("ema and swa both replace the evaluated weights by an average; switch one of them off")


# --- dropout before the head ---------------------------------------------------------------------


def add_head_dropout(model: torch.nn.Module, p: float) -> torch.utils.hooks.RemovableHandle | None:
    """Apply dropout with probability `p` to the head's input in training mode; return the hook handle.

    A forward pre-hook rather than an nn.Dropout layer, so the model's state_dict keys and
    shapes stay those of the plain architecture (submissions are checked against them).
    """
    if p <= 0.0:
        return None
    fc = head(model)

    def drop(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (F.dropout(args[0], p=p, training=module.training), *args[1:])

    return fc.register_forward_pre_hook(drop)


# --- early stopping ------------------------------------------------------------------------------


def early_stopping(patience: int) -> Callback:
    """Return a callback that raises StopTraining once `patience` epochs passed without a new best epoch."""

    def callback(record: dict[str, Any], _model: torch.nn.Module) -> None:
        # best_epoch 0: no epoch may be selected yet (before the SWA window), nothing to wait for
        if record["best_epoch"] > 0 and record["epoch"] - record["best_epoch"] >= patience:
            raise StopTraining(f"no better validation AUC for {patience} epochs")

    return callback


# --- weight averages -----------------------------------------------------------------------------


class EmaAverage:
    """timm's ModelEmaV3 (parameters and BN buffers), updated after every step and evaluated every epoch."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(model, decay=decay, use_warmup=True)
        self.steps = 0

    def update(self, model: torch.nn.Module) -> None:
        """Fold the model's current weights into the average."""
        self.steps += 1
        self.ema.update(model, step=self.steps)

    def evaluated(self, model: torch.nn.Module, epoch: int) -> tuple[torch.nn.Module, bool]:
        """Return (the average, True): every epoch's average may be selected."""
        return self.ema.module, True


class SwaAverage:
    """torch's AveragedModel: the equal-weight mean of the weights at the end of each of the last `swa_epochs` epochs.

    Epochs before the window evaluate the raw weights and cannot be selected, so the kept
    model is always an average. BatchNorm statistics are recomputed for the average on the
    un-augmented training images (torch's update_bn), as SWA prescribes.
    """

    def __init__(self, model: torch.nn.Module, epochs: int, swa_epochs: int, bn_batches: Callable[[], Iterable[torch.Tensor]]) -> None:
        from torch.optim.swa_utils import AveragedModel

        self.swa = AveragedModel(model)
        self.start = max(1, epochs - swa_epochs + 1)
        self.bn_batches = bn_batches

    def update(self, model: torch.nn.Module) -> None:
        """Nothing per step: SWA averages once per epoch."""

    def evaluated(self, model: torch.nn.Module, epoch: int) -> tuple[torch.nn.Module, bool]:
        """Return the raw model before the window; inside it, fold this epoch in and return the average."""
        if epoch < self.start:
            return model, False
        from torch.optim.swa_utils import update_bn

        self.swa.update_parameters(model)
        update_bn(self.bn_batches(), self.swa)
        return self.swa.module, True


def build_average(config: dict[str, Any], model: torch.nn.Module, epochs: int, bn_batches: Callable[[], Iterable[torch.Tensor]]) -> EmaAverage | SwaAverage | None:
    """Return the weight average the config asks for (EMA, SWA) or None."""
    check_controls(config)
    if config.get("ema"):
        return EmaAverage(model, config["ema_decay"])
    if config.get("swa"):
        return SwaAverage(model, epochs, config["swa_epochs"], bn_batches)
    return None


def control_callbacks(config: dict[str, Any]) -> list[Callback]:
    """Return the callbacks the config's controls need (early stopping)."""
    return [early_stopping(config["patience"])] if config.get("patience", 0) > 0 else []
