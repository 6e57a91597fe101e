"""`tpauc`: two-way partial AUC maximisation with the KL-DRO loss and the SOTA-s estimator.

Zhu, Li, Wang, Wu, Yang, "When AUC meets DRO: Optimizing Partial AUC for Deep Learning with
Non-Convex Convergence Guarantee", ICML 2022; LibAUC's tpAUC tutorial (tpAUC_KL_Loss + SOTAs).
Reported with pAUC(FPR <= 0.3, TPR >= 0.7) beside AUC (metrics.evaluate's `pauc`).
"""

from __future__ import annotations

import math

import torch

from ..data import Batch
from ..hparams import Choice, Float
from .auc_base import PRETRAIN_PARAMS, AUC_DEFAULTS, AUCMethod
from .base import GRAD_CLIP, StepContext, check_targets, decay_milestones, register


class TwoWayPartialAUCKL(torch.nn.Module):
    """The tpAUC KL-DRO objective and its SOTA-s moving-average estimators, per label.

    With the squared hinge L(i, j) = (m - (h_i - h_j))_+^2 of a positive i and a negative j,

        F(w) = tau log E_{i in S+} [ (E_{j in S-} exp(L(i, j) / Lambda))^(Lambda / tau) ],

    the inner KL-DRO (Lambda) softly selects the hardest negatives of each positive (FPR <= beta)
    and the outer one (tau) the hardest positives (TPR >= 1 - alpha). SOTA-s keeps, per positive
    training sample i, u_i ~ E_j exp(L(i, j) / Lambda) and one v ~ E_i u_i^(Lambda / tau):

        u_i = (1 - gamma0) u_i + gamma0 mean_{j in B-} exp(L(i, j) / Lambda)      (i in B+)
        v   = (1 - gamma1) v   + gamma1 mean_{i in B+} u_i^(Lambda / tau)
        G   = mean_{i in B+, j in B-} [u_i^(Lambda/tau - 1) exp(L(i, j) / Lambda) / v] grad L(i, j),

    which is the gradient of the surrogate returned by `forward` (its weights are detached). The
    state is indexed by the sample's row in the training split (`batch.index`); a u_i or v seen
    for the first time starts at its batch estimate instead of LibAUC's 0, which would bias the
    first weights upward. Everything is kept in log space, so a small Lambda cannot overflow.
    Multi-label: each label has its own u, v; labels without both classes in the batch are skipped.
    """

    def __init__(
        self, n_train: int, n_labels: int, *, margin: float, Lambda: float, tau: float, gamma0: float, gamma1: float,
        device: torch.device, dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.n_labels, self.margin, self.Lambda, self.tau = n_labels, float(margin), float(Lambda), float(tau)
        self.gamma0, self.gamma1 = float(gamma0), float(gamma1)
        self.register_buffer("log_u", torch.full((n_train, n_labels), -math.inf, device=device, dtype=dtype))
        self.register_buffer("log_v", torch.full((n_labels,), -math.inf, device=device, dtype=dtype))

    @staticmethod
    def _average(log_old: torch.Tensor, log_new: torch.Tensor, gamma: float) -> torch.Tensor:
        """Return log((1 - gamma) exp(log_old) + gamma exp(log_new)), or log_new where old is unset (-inf)."""
        if gamma >= 1.0:
            return log_new
        mixed = torch.logaddexp(log_old + math.log1p(-gamma), log_new + math.log(gamma))
        return torch.where(torch.isneginf(log_old), log_new, mixed)

    def forward(self, scores: torch.Tensor, targets: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the estimators with this batch; return (surrogate whose gradient is G, batch estimate of F)."""
        check_targets(scores, targets, self.n_labels, "tpAUC KL loss")
        pos, neg = targets == 1, targets != 1
        n_pos, n_neg = pos.sum(0), neg.sum(0)
        active = (n_pos > 0) & (n_neg > 0)
        if not bool(active.any()):
            return scores.sum() * 0.0, torch.zeros((), device=scores.device)
        pairs = (pos.unsqueeze(1) & neg.unsqueeze(0)).float()  # (B, B, L): i positive, j negative
        hinge = torch.relu(self.margin - (scores.unsqueeze(1) - scores.unsqueeze(0))) ** 2
        with torch.no_grad():
            scaled = hinge / self.Lambda
            # log mean_j exp(L(i, j) / Lambda) over the batch's negatives, per positive i and label
            log_inner = torch.logsumexp(scaled.masked_fill(pairs == 0, -math.inf), dim=1) - torch.log(n_neg.clamp(min=1).to(scores.dtype))
            update = pos & active
            rows = self.log_u[index]
            log_u = torch.where(update, self._average(rows, log_inner, self.gamma0), rows)
            self.log_u[index] = log_u
            power = self.Lambda / self.tau
            log_mean_pow = torch.logsumexp((power * log_u).masked_fill(~update, -math.inf), dim=0) - torch.log(n_pos.clamp(min=1).to(scores.dtype))
            self.log_v.copy_(torch.where(active, self._average(self.log_v, log_mean_pow, self.gamma1), self.log_v))
            log_weight = (power - 1) * log_u.unsqueeze(1) + scaled - self.log_v
            weight = torch.exp(log_weight.masked_fill(pairs == 0, -math.inf))
            # batch estimate of F: tau log mean_i (mean_j exp(L / Lambda))^(Lambda / tau)
            log_f = torch.logsumexp((power * log_inner).masked_fill(~update, -math.inf), dim=0) - torch.log(n_pos.clamp(min=1).to(scores.dtype))
            objective = (self.tau * log_f)[active].mean()
        per_label = (weight * hinge).sum(dim=(0, 1)) / (n_pos * n_neg).clamp(min=1)
        return per_label[active].mean(), objective


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
