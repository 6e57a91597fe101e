"""`tpauc`: two-way partial AUC maximisation with the KL-DRO loss and the SOTA-s estimator.

Zhu, Li, Wang, Wu, Yang, "When AUC meets DRO: Optimizing Partial AUC for Deep Learning with
Non-Convex Convergence Guarantee", ICML 2022; LibAUC's tpAUC tutorial (tpAUC_KL_Loss + SOTAs).
Reported with pAUC(FPR <= 0.3, TPR >= 0.7) beside AUC (metrics.evaluate's `pauc`).
"""

from __future__ import annotations

from ..data import Batch
from ..hparams import Choice, Float
from ..lazy import lazy_import
from .auc_base import PRETRAIN_PARAMS, AUC_DEFAULTS, AUCMethod
from .base import GRAD_CLIP, StepContext, decay_milestones, register

torch = lazy_import("torch", globals())


@register("tpauc")
class TwoWayPartialAUC(AUCMethod):
    """tpAUC KL-DRO loss with SOTA-s (Adam mode by default), as LibAUC's tutorial; gradients clamped to [-1, 1] as its SOTAs."""

    summary = "two-way partial AUC, KL-DRO loss + SOTA-s (Zhu et al. ICML 2022); reports pAUC(0.3, 0.7)"
    PARAMS = {
        "lr": Float(1e-3, "learning rate (x0.1 at 50 % and 75 %)", search=(1e-4, 1e-2), log=True, minimum=0.0),
        "optimizer": Choice("adam", "SOTA-s update: adam or sgd (momentum)", choices=("adam", "sgd")),
        "momentum": Float(0.9, "momentum in sgd mode", minimum=0.0, maximum=0.999),
        "weight_decay": Float(1e-4, "L2 weight decay", search=(0.0, 2e-4), minimum=0.0),
        "Lambda": Float(0.5, "inner KL-DRO temperature (negatives)", search=(0.1, 2.0), log=True, minimum=1e-3),
        "tau": Float(1.0, "outer KL-DRO temperature (positives)", search=(0.1, 2.0), log=True, minimum=1e-3),
        "gamma0": Float(0.5, "moving-average weight of the per-positive estimate u", search=(0.1, 0.9), minimum=0.0, maximum=1.0),
        "gamma1": Float(0.5, "moving-average weight of the outer estimate v", search=(0.1, 0.9), minimum=0.0, maximum=1.0),
        "margin": Float(1.0, "margin m of the squared hinge surrogate", search=(0.5, 1.0), minimum=0.0),
        **GRAD_CLIP,
        **PRETRAIN_PARAMS,
    }
    DEFAULTS = {**AUC_DEFAULTS, "batch_size": 64}

    def configure(self) -> None:
        from .losses import TwoWayPartialAUCKL

        c = self.config
        self.criterion = TwoWayPartialAUCKL(
            self.info.n_train, self.info.n_labels, margin=c["margin"], Lambda=c["Lambda"], tau=c["tau"], gamma0=c["gamma0"], gamma1=c["gamma1"],
            device=self.info.device, dtype=next(self.model.parameters()).dtype,
        )
        if c["optimizer"] == "adam":
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
        else:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=decay_milestones(self.info.epochs), gamma=0.1)

    def step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        surrogate, objective = self.criterion(torch.sigmoid(ctx.forward(batch.x)), batch.y, batch.index)
        self.optimizer.zero_grad(set_to_none=True)
        surrogate.backward()
        if self.config["grad_clip"]:  # LibAUC's SOTAs clamps before weight decay and the Adam moments
            torch.nn.utils.clip_grad_value_(self.model.parameters(), self.config["grad_clip"])
        self.optimizer.step()
        return objective

    def stage_epoch_end(self, stage_epoch: int, val_metrics: dict[str, float]) -> None:
        self.scheduler.step()
