"""`alm`: a pointwise loss F under an AUC constraint, solved with the augmented Lagrangian method.

Sangalli, Erdil, Hoetker, Donati, Konukoglu, "Constrained Optimization to Train Neural Networks
on Critical and Under-Represented Classes", NeurIPS 2021, eq. (7)-(8) and Algorithm 1.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..data import Batch
from ..errors import BenchError
from ..hparams import Choice, Float
from ..lazy import lazy_import
from .base import METHODS, Method, StepContext, TrainInfo, register
from .ce import CrossEntropy
from .focal import FocalLoss

torch = lazy_import("torch", globals())


@register("alm")
class AugmentedLagrangianAUC(Method):
    """Pointwise loss F (ce or focal) pretrained, then F + the ALM AUC constraint, with a fresh run of F's optimizer.

    The first round(pretrain_fraction * epochs) epochs minimise F alone with F's own optimizer
    and schedule over that stage (the paper's initialisation: a trained F). Then F's optimizer
    and schedule start again (Adam at its initial lr, decays at 50 % and 75 % of the constrained
    stage) for F + penalty (AUCConstraint); lambda_j += mu q_j each step, and after each epoch
    mu *= rho if the validation AUC fell below the previous epoch's (Algorithm 1's
    ValAUC(t) < ValAUC(t-1); a tie is not a fall), capped at mu_max (the public code's mu_limit).
    The head is kept. Pretraining epochs are validated but never selected. Batches are drawn as
    for F (no oversampling by default), so F's stage is the `ce` / `focal` baseline itself.
    """

    summary = "F + augmented-Lagrangian AUC constraint (Sangalli et al. NeurIPS 2021); F pretrained first"
    PARAMS = {
        **CrossEntropy.PARAMS,
        # focal's own parameters do nothing when F is ce, the default: a study searches them only with base=focal
        **{name: replace(param, needs=("base", "focal")) for name, param in FocalLoss.PARAMS.items() if name not in CrossEntropy.PARAMS},
        "base": Choice("ce", "the pointwise loss F (its lr, weight_decay, alpha, gamma above)", choices=("ce", "focal")),
        "pretrain_fraction": Float(0.5, "share of `epochs` that trains F alone before the constraint is added (rounded; >= 1 epoch each)", minimum=0.0, maximum=1.0),
        "mu0": Float(0.3, "initial penalty coefficient mu", search=(0.2, 0.3), minimum=0.0),
        "rho": Float(3.0, "mu *= rho when validation AUC falls", search=(2.0, 4.0), minimum=1.0),
        "delta": Float(1.0, "margin between each positive's and every negative's logit", search=(1.0, 2.0), minimum=0.0),
        "mu_max": Float(1e4, "upper limit of mu", minimum=0.0),
    }
    # sampling as the base method's (ce and focal set none): F's stage is the baseline it is compared with
    DEFAULTS = CrossEntropy.DEFAULTS

    def __init__(self, config: dict[str, Any], model: torch.nn.Module, info: TrainInfo) -> None:
        self.pretrain_epochs = self._pretrain_epochs(config["pretrain_fraction"], info.epochs)
        super().__init__(config, model, info)

    @staticmethod
    def _pretrain_epochs(fraction: float, epochs: int) -> int:
        if epochs < 2:
            raise BenchError(f"alm needs at least 2 epochs (F alone, then F + the constraint); got epochs={epochs}")
        if not 0.0 < fraction < 1.0:
            raise BenchError(f"alm needs 0 < pretrain_fraction < 1 (F alone, then F + the constraint); got {fraction}")
        return min(max(1, round(fraction * epochs)), epochs - 1)

    def configure(self) -> None:
        from .losses import AUCConstraint

        self.base = self._base(self.pretrain_epochs)
        self.constraint = AUCConstraint(self.info.n_train, self.info.n_labels, self.config["delta"], self.info.device)
        self.mu = float(self.config["mu0"])
        self.previous_auc = float("nan")
        self.epoch = 0

    def _base(self, epochs: int) -> Method:
        """Return a fresh F (its optimizer and schedule) for a stage of `epochs` epochs."""
        return METHODS.get(self.config["base"])(self.config, self.model, replace(self.info, epochs=epochs))

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """Return the optimizer of the stage in force."""
        return self.base.optimizer

    def constrained(self, epoch: int) -> bool:
        """Return whether epoch `epoch` trains with the constraint (after the pretraining stage)."""
        return epoch > self.pretrain_epochs

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        if epoch == self.pretrain_epochs + 1:  # F's schedule starts again with the constraint
            self.base = self._base(self.info.epochs - self.pretrain_epochs)
        self.base.on_epoch_start(epoch)

    def train_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        logits = ctx.forward(batch.x)
        loss = self.base.loss(logits, batch.y)
        q = None
        if self.constrained(self.epoch):
            penalty, q = self.constraint(logits, batch.y, batch.index, self.mu)
            loss = loss + penalty
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if q is not None:
            self.constraint.update(batch.index, q, self.mu)
        return loss.detach()

    def on_epoch_end(self, epoch: int, val_metrics: dict[str, float]) -> None:
        self.base.on_epoch_end(epoch, val_metrics)
        auc = val_metrics.get("auc", float("nan"))
        if self.constrained(epoch) and auc < self.previous_auc:
            self.mu = min(self.mu * self.config["rho"], self.config["mu_max"])
        self.previous_auc = auc

    def selectable(self, epoch: int) -> bool:
        return self.constrained(epoch)
