"""`ct`: compositional training for end-to-end DAM, optimized by PDSCA.

Yuan, Guo, Chawla, Yang, "Compositional Training for End-to-End Deep AUC Maximization", ICLR
2022, eq. (4)-(7) and Algorithm 1.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from ..data import Batch
from ..hparams import Choice, Float, Int
from ..lazy import lazy_import
from .auc_base import PRETRAIN_PARAMS, AUCMethod
from .aucm import DUAL_PARAMS
from .base import GRAD_CLIP, StepContext, check_targets, clamp_grads, decay_milestones, register

torch = lazy_import("torch", globals())
F = lazy_import("torch.nn.functional", globals())

# chosen over the paper's grid {0.1, 0.05, 0.01} on real BreastMNIST validation AUC (see README)
INNER_LR_DEFAULT = 0.05


@contextlib.contextmanager
def evaluated_at(params: list[torch.Tensor], values: list[torch.Tensor]) -> Iterator[None]:
    """Temporarily give the model's parameters `values` (same shapes), so forward/backward run at that point.

    Gradients still land in each parameter's `.grad`. Swapping storage is cheaper than copying
    11 M weights back and forth and keeps the trainer's `forward` (autocast, channels-last) usable.
    """
    saved = [p.data for p in params]
    try:
        for p, v in zip(params, values):
            p.data = v
        yield
    finally:
        for p, s in zip(params, saved):
            p.data = s


@contextlib.contextmanager
def frozen_batchnorm_statistics(model: torch.nn.Module) -> Iterator[None]:
    """Run forwards that normalise with the batch's statistics but leave every BatchNorm's running estimates as they are.

    A running estimate updates as (1 - momentum) r + momentum s, so momentum 0 keeps it exactly.
    CT's inner CE pass (and the extra S1 pass for alpha) are auxiliary evaluations: only the
    AUC forward, at the network that is kept, should move the statistics validation will use.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in norms]
    try:
        for m in norms:
            m.momentum = 0.0
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


@register("ct")
class CompositionalAUC(AUCMethod):
    """CT: min_v max_alpha Phi(w - theta grad L_CE(w), a, b, alpha), Phi the AUC-M objective (margin 1).

    Each step (Algorithm 1): k inner CE gradient steps from w on batch S1, each averaged into its
    u_j with beta0 (BatchNorm statistics untouched); the AUC-M gradient at u_k on an independent
    batch S2 (ctx.next_batch()); a momentum step (beta1) with weight decay and the epoch-level
    regulariser; an ascent step on alpha with the AUC-M alpha-gradient at u_k on S1 u S2,
    projected to alpha >= 0 (the dual step is lr / (2 p (1 - p)) with `dual_scaling`, else lr).
    First-order: the Hessian term of grad h is dropped (the paper's practical implementation).
    Gradients are clamped element-wise to [-grad_clip, grad_clip] (LibAUC's PDSCA).

    Where the primal step starts (`primal_from`):
      "u" (default), the authors' code (LibAUC `PDSCA`): w_{t+1} = u_{t+1} - eta z_{t+1}. The CE
          steps accumulate in the weights, and the model's parameters are w, as in that code.
      "w", Algorithm 1's step 9 read literally: w_{t+1} = w_t - eta z_{t+1}. w then only ever
          receives AUC gradients (theta grad L_CE is an offset inside u), and CT behaves as AUC-M.
          The model carries u_k, the point the AUC objective is applied to: keeping w there let
          BreastMNIST's train AUC fall to 0.64 while the objective went to 0 (issue 3 note).
    a and b take no CE step, so their "inner point" is their current value in both modes (the
    authors' code skips them in the CE step). theta defines the objective and does not decay;
    lr decays x0.1 at 50 % and 75 % with a reference-point reset, as PESG.
    """

    summary = "compositional AUC training (Yuan et al. ICLR 2022), PDSCA as the authors' code; AUC-M outer loss"
    PARAMS = {
        "lr": Float(0.1, "outer learning rate eta (x0.1 at 50 % and 75 %)", search=(1e-3, 0.1), log=True, minimum=0.0),
        "inner_lr": Float(INNER_LR_DEFAULT, "inner CE step size theta in w - theta grad L_CE(w)", grid=(0.1, 0.05, 0.01), minimum=0.0),
        "inner_steps": Int(1, "k, the number of inner CE gradient steps", search=(1, 3), minimum=1, maximum=10),
        "beta0": Float(0.9, "weight of the new inner point in the moving average u", search=(0.1, 0.99), minimum=0.0, maximum=1.0),
        "beta1": Float(0.9, "weight of the new gradient in the momentum z", search=(0.1, 0.99), minimum=0.0, maximum=1.0),
        "weight_decay": Float(1e-4, "L2 weight decay on w, a, b", search=(0.0, 2e-4), minimum=0.0),
        "epoch_decay": Float(2e-3, "epoch-level regularizer gamma toward the reference point", search=(0.0, 0.01), minimum=0.0),
        "margin": Float(1.0, "AUC-M margin m (the paper fixes 1)", search=(0.5, 1.0), minimum=0.0),
        "primal_from": Choice("u", "primal step from u (w = u - lr z, the authors' code) or from w (Algorithm 1 step 9 read literally)", choices=("u", "w")),
        **GRAD_CLIP,
        **DUAL_PARAMS,
        **PRETRAIN_PARAMS,
    }

    def configure(self) -> None:
        from .losses import MinMaxAUCLoss
        from .optim import PDSCA

        self.criterion = MinMaxAUCLoss(self.prior(), self.config["margin"])
        self.weights = list(self.model.parameters())
        self.literal = self.config["primal_from"] == "w"
        # the iterate w: the model's own tensors (authors' code), or separate ones when the model carries u_k
        self.iterate = [p.detach().clone() for p in self.weights] if self.literal else [p.data for p in self.weights]
        self.aux = [self.criterion.a, self.criterion.b]
        self.optimizer = PDSCA(
            [*self.iterate, *(t.data for t in self.aux)],
            [self.criterion.alpha.data],
            n_inner=len(self.weights),
            lr=self.config["lr"],
            inner_lr=self.config["inner_lr"],
            inner_steps=self.config["inner_steps"],
            beta0=self.config["beta0"],
            beta1=self.config["beta1"],
            weight_decay=self.config["weight_decay"],
            epoch_decay=self.config["epoch_decay"],
            project=True,
        )
        self.milestones = set(decay_milestones(self.info.epochs))

    def ce_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return L_AVG, the mean binary cross-entropy over samples and labels."""
        check_targets(logits, targets, self.info.n_labels, "CT inner cross-entropy")
        return F.binary_cross_entropy_with_logits(logits, targets)

    def step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        s1, s2 = batch, ctx.next_batch()
        clip = self.config["grad_clip"]
        # inner steps: u_j <- (1 - beta0) u_j + beta0 (point - theta grad L_CE(point; S1)); point_1 = w
        point = list(self.iterate)
        with frozen_batchnorm_statistics(self.model):
            for j in range(len(self.optimizer.u)):
                with evaluated_at(self.weights, point):
                    grads = torch.autograd.grad(self.ce_loss(ctx.forward(s1.x), s1.y), self.weights)
                point = self.optimizer.inner(j, point, clamp_grads(list(grads), clip))
        # outer gradient O: grad of the AUC-M objective at (u_k, a, b) on S2 (first-order)
        a, b, alpha = self.criterion.a, self.criterion.b, self.criterion.alpha
        for t in (*self.weights, a, b, alpha):
            t.grad = None
        with evaluated_at(self.weights, point):
            scores2 = torch.sigmoid(ctx.forward(s2.x))
            loss = self.criterion(scores2, s2.y).mean()
            loss.backward()
            outer = clamp_grads([p.grad for p in self.weights] + [a.grad, b.grad], clip)
            # the alpha gradient uses S1 u S2 at u_k (step 10); S1's scores need no graph
            with torch.no_grad(), frozen_batchnorm_statistics(self.model):
                scores1 = torch.sigmoid(ctx.forward(s1.x))
        both = self.criterion(torch.cat([scores2.detach(), scores1]), torch.cat([s2.y, s1.y])).mean()
        (alpha_grad,) = torch.autograd.grad(both, [alpha])
        n_w = len(self.weights)
        if self.info.n_labels > 1:  # see AUCMethod.scale_label_grads
            outer[n_w:] = [g * self.info.n_labels for g in outer[n_w:]]
            alpha_grad = alpha_grad * self.info.n_labels
        if self.config["dual_scaling"]:  # the paper's separate dual step eta2, per label: eta / (2 p (1 - p))
            alpha_grad = alpha_grad * self.criterion.dual_preconditioner()
        self.optimizer.step(outer, [alpha_grad], start=None if self.literal else point)
        if self.literal:  # the model carries the composed point u_k (the AUC objective's network)
            with torch.no_grad():
                for p, u in zip(self.weights, point):
                    p.copy_(u)
        for t in (*self.weights, a, b, alpha):
            t.grad = None
        return loss.detach()

    def stage_epoch_end(self, stage_epoch: int, val_metrics: dict[str, float]) -> None:
        if stage_epoch in self.milestones:
            self.optimizer.decay(10.0)

    def stage_lr(self) -> float:
        return float(self.optimizer.lr)
