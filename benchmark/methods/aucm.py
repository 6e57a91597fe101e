"""`aucm` and `aucs`: the AUC margin and AUC square losses in min-max form, optimized by PESG.

Yuan, Yan, Sonka, Yang, "Large-scale Robust Deep AUC Maximization", ICCV 2021, eq. (3)-(8) and
Algorithm 1. Scores are the batch-normalized logits h = f / ||f||_2 (batch score normalization,
Sec. 4.1, the authors' `last_activation='l2'`) by default, or h = sigmoid(logit) in [0, 1] (as
LibAUC's tutorials) with `--set bsn=false`.
"""

from __future__ import annotations

from ..data import Batch
from ..hparams import Bool, Float
from ..lazy import lazy_import
from .auc_base import PRETRAIN_PARAMS, AUCMethod
from .base import StepContext, decay_milestones, register

torch = lazy_import("torch", globals())
F = lazy_import("torch.nn.functional", globals())


def batch_scores(logits: torch.Tensor, bsn: bool) -> torch.Tensor:
    """Return the AUC scores of a batch: f / ||f||_2 per label over the batch (BSN) if `bsn`, else sigmoid(f).

    Batch score normalization (Yuan et al., ICCV 2021, Sec. 4.1, ablation in its appendix M) is
    the authors' `last_activation='l2'`: `F.normalize(logits, p=2, dim=0)`. Its scores lie in
    [-1, 1] with unit norm over the batch, so the mean gap E h+ - E h- of a batch of n+
    positives and n- negatives is at most sqrt(1/n+ + 1/n-) (0.18 at 64 + 64): the margin then
    decides whether the hinge (AUC-M) can switch off, which a square loss (AUC-S) never does.
    """
    return F.normalize(logits, p=2, dim=0) if bsn else torch.sigmoid(logits)


DUAL_PARAMS = {
    "dual_scaling": Bool(
        True,
        "alpha ascends with step lr / (2 p (1 - p)), F's inverse curvature in alpha, so alpha tracks "
        "m - E h+ + E h- at the same rate for every prior (false: the paper's plain lr)",
    ),
}


PESG_PARAMS = {
    "lr": Float(0.1, "PESG learning rate (x0.1 at 50 % and 75 %)", search=(1e-4, 0.1), log=True, minimum=0.0),
    # 0 = Algorithm 1 as published. LibAUC's momentum=0.9 computes m = 0.1 m + 0.9 g, i.e. 0.1 here.
    # With 0.9 here (a 10-step gradient average) scores collapse toward 0 on BreastMNIST from
    # scratch and train AUC stalls near 0.6; with 0 it reaches 0.88 in 12 epochs (lr 0.01).
    "momentum": Float(0.0, "momentum on w, a, b: m = momentum m + (1 - momentum) grad (lr keeps plain SGD's scale); 0 = the paper's Algorithm 1", search=(0.0, 0.9), minimum=0.0, maximum=0.999),
    "weight_decay": Float(1e-4, "L2 weight decay on w, a, b", search=(0.0, 2e-4), minimum=0.0),
    # the AUC-M paper's grid (Sec. 4.1): gamma in {1/100, 1/300, 1/500, 1/700, 1/1000}
    "epoch_decay": Float(1 / 300, "epoch-level regularizer gamma toward the reference point", grid=(1 / 100, 1 / 300, 1 / 500, 1 / 700, 1 / 1000), minimum=0.0),
    "bsn": Bool(True, "batch score normalization: scores f / ||f||_2 over the batch (the paper's Sec. 4.1); false = sigmoid scores in [0, 1]", search=True),
    **DUAL_PARAMS,
}

# the AUC-M paper's margin grid (Sec. 4.1); the default 1.0 (LibAUC's) had the best BreastMNIST
# validation AUC in 20-epoch probes with BSN (0.938, against 0.806 at 0.1). With BSN, AUC-M and
# AUC-S coincide at any margin above a batch's largest possible gap (see `batch_scores`).
MARGIN_GRID = (0.1, 0.3, 0.5, 0.7, 1.0)
MARGIN_DEFAULT = 1.0


@register("aucm")
class AUCMargin(AUCMethod):
    """AUC margin loss (AUC-M) + PESG; each label its own min-max problem; optional two-stage pretraining."""

    summary = "AUC margin loss, min-max form (Yuan et al. ICCV 2021), PESG; prior p = sampler's positive share"
    PARAMS = {
        **PESG_PARAMS,
        "margin": Float(MARGIN_DEFAULT, "margin m in the squared hinge (m - E h+ + E h-)_+^2", grid=MARGIN_GRID, minimum=0.0),
        **PRETRAIN_PARAMS,
    }
    # AUC-M projects alpha onto alpha >= 0 (the squared hinge); AUC-S leaves it free
    project_alpha = True

    def configure(self) -> None:
        from .losses import MinMaxAUCLoss
        from .optim import PESG

        self.criterion = MinMaxAUCLoss(self.prior(), self.config["margin"])
        self.aux = [self.criterion.a, self.criterion.b]
        self.optimizer = PESG(
            [*self.model.parameters(), *self.aux],
            [self.criterion.alpha],
            lr=self.config["lr"],
            momentum=self.config["momentum"],
            weight_decay=self.config["weight_decay"],
            epoch_decay=self.config["epoch_decay"],
            project=self.project_alpha,
        )
        self.milestones = set(decay_milestones(self.info.epochs))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the objective: the mean over labels of the batch mean of F (eq. 8) at the current a, b, alpha, on the batch's scores."""
        return self.criterion(batch_scores(logits, self.config["bsn"]), targets).mean()

    def step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        loss = self.loss(ctx.forward(batch.x), batch.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.scale_label_grads([*self.aux, self.criterion.alpha])
        if self.config["dual_scaling"]:
            self.criterion.alpha.grad.mul_(self.criterion.dual_preconditioner())
        self.optimizer.step()
        return loss.detach()

    def stage_epoch_end(self, stage_epoch: int, val_metrics: dict[str, float]) -> None:
        if stage_epoch in self.milestones:
            # a new PESG stage: lr / 10 and the reference point becomes the stage's average iterate
            self.optimizer.decay(10.0)


@register("aucs")
class AUCSquare(AUCMargin):
    """AUC square loss (AUC-S): the same min-max objective and PESG, alpha not projected (no hinge)."""

    summary = "AUC square loss, min-max form (Ying et al. 2016; Yuan et al. 2021 eq. 3-5), PESG"
    PARAMS = {
        **PESG_PARAMS,
        "margin": Float(MARGIN_DEFAULT, "margin m in the square loss (m - h(x+) + h(x-))^2", grid=MARGIN_GRID, minimum=0.0),
        **PRETRAIN_PARAMS,
    }
    project_alpha = False

