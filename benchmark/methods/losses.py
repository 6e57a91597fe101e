"""The AUC objectives as torch modules, each with its auxiliary variables or per-sample state.

They belong to the methods in `aucm.py` (and `ct.py`), `tpauc.py` and `alm.py`, which build
them in `configure()`; they sit in a module of their own because a torch.nn.Module subclass
needs torch when it is defined, and the method modules, which declare the hyperparameters
`bench methods` lists, must import without it.
"""

from __future__ import annotations

import math

import torch

from .base import check_targets


class MinMaxAUCLoss(torch.nn.Module):
    """The min-max AUC objective per label, with auxiliary a, b (primal) and alpha (dual) per label.

    For one label with prior p = Pr(y = 1) and score h (Yuan et al. 2021, eq. 8):

        F(w, a, b, alpha; x, y) = (1 - p) (h - a)^2 [y=1] + p (h - b)^2 [y=0]
                                  + 2 alpha (p (1 - p) m + p h [y=0] - (1 - p) h [y=1]) - p (1 - p) alpha^2

    min over (w, a, b), max over alpha of E[F] equals p (1 - p) times
        Var(h | y=1) + Var(h | y=0) + (m - E[h | y=1] + E[h | y=0])_+^2     (AUC-M, alpha >= 0, eq. 6)
        Var(h | y=1) + Var(h | y=0) + (m - E[h | y=1] + E[h | y=0])^2       (AUC-S, alpha free, eq. 3-5),
    the latter being E[(m - h(x) + h(x'))^2 | y=1, y'=0], the pairwise square loss. The alpha >= 0
    constraint is the optimizer's projection (PESG), not part of this function.

    Each of the L labels is its own problem with its own a, b, alpha and p; `forward` returns
    the L batch means of F (a batch without positives or negatives of a label is still an
    unbiased estimate, because p is the sampling distribution's prior, not a batch count).
    """

    def __init__(self, prior: torch.Tensor, margin: float) -> None:
        super().__init__()
        self.register_buffer("p", prior.detach().clone().reshape(-1))
        self.margin = float(margin)
        self.a, self.b, self.alpha = (torch.nn.Parameter(torch.zeros_like(self.p)) for _ in range(3))

    @property
    def n_labels(self) -> int:
        """Return the number of labels the loss was built for."""
        return self.p.numel()

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the per-label batch mean of F, shape (L,), for scores and 0/1 targets of shape (B, L)."""
        check_targets(scores, targets, self.n_labels, "AUC min-max loss")
        p, pos = self.p, (targets == 1).float()
        neg = 1.0 - pos
        value = (
            (1 - p) * (scores - self.a) ** 2 * pos
            + p * (scores - self.b) ** 2 * neg
            + 2 * self.alpha * (p * (1 - p) * self.margin + p * scores * neg - (1 - p) * scores * pos)
            - p * (1 - p) * self.alpha**2
        )
        return value.mean(dim=0)

    def dual_preconditioner(self) -> torch.Tensor:
        """Return 1 / (2 p (1 - p)) per label, the inverse curvature of E[F] in alpha."""
        return 1.0 / (2 * self.p * (1 - self.p)).clamp(min=1e-6)


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


class AUCConstraint(torch.nn.Module):
    """The ALM constraint terms of eq. (8) on a batch, with one multiplier lambda_j per positive training sample.

    For each positive j of the batch, q_j = sum over the batch's negatives k of
    max(0, delta - (f(x_j) - f(x_k))), f the logit; q_j = 0 for all j is the constraint "every
    positive above every negative by delta". With P, N the batch's positives and negatives:

        penalty = mu sum_j q_j^2 / (2 |P| |N|) + sum_j lambda_j q_j / (|P| |N|)

    (the public code's normalisation of eq. 8 on a mini-batch; every positive's term reaches the
    gradient, not only the last one as in that code). After the step, lambda_j += mu q_j
    (Algorithm 1), with q_j from the same forward pass. lambda is indexed by the row in the
    training split and starts at 0. Multi-label: one constraint per label, lambda of shape
    (n_train, L), the penalty averaged over the labels that have both classes in the batch.
    """

    def __init__(self, n_train: int, n_labels: int, delta: float, device: torch.device) -> None:
        super().__init__()
        self.n_labels, self.delta = n_labels, float(delta)
        self.register_buffer("lambdas", torch.zeros(n_train, n_labels, device=device))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor, mu: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (penalty, q) for the batch: the constraint terms to add to F, and q_j per row and label (0 off positives)."""
        check_targets(logits, targets, self.n_labels, "ALM constraint")
        pos, neg = (targets == 1).float(), (targets != 1).float()
        n_pos, n_neg = pos.sum(0), neg.sum(0)
        active = (n_pos > 0) & (n_neg > 0)
        if not bool(active.any()):
            return logits.sum() * 0.0, torch.zeros_like(logits)
        # hinge[j, k, l] = max(0, delta - (f_j - f_k)) for positive j, negative k of label l
        hinge = torch.relu(self.delta - (logits.unsqueeze(1) - logits.unsqueeze(0))) * neg.unsqueeze(0)
        q = hinge.sum(dim=1) * pos
        lam = self.lambdas[index]
        per_label = (mu * (q**2).sum(0) / 2 + (lam * q).sum(0)) / (n_pos * n_neg).clamp(min=1)
        return per_label[active].mean(), q.detach()

    @torch.no_grad()
    def update(self, index: torch.Tensor, q: torch.Tensor, mu: float) -> None:
        """lambda_j += mu q_j for the batch's positives (repeated rows add up)."""
        self.lambdas.index_put_((index,), mu * q, accumulate=True)
