"""Optimizers of the DAM methods that torch does not have: PESG (AUC-M / AUC-S) and the PDSCA update (CT).

Both keep an epoch-level regulariser gamma/2 ||v - v_ref||^2 toward a reference point v_ref
that is reset, at each learning-rate decay, to the average of the iterates since the last
reset (Yuan et al., ICCV 2021, Algorithm 1, step 6). The first reference point is the starting
weights. (LibAUC draws it from N(0, 0.01^2), which is a second weight decay toward zero, not the
paper's reference solution.) SOTA-s (tpAUC) needs no optimizer of its own: its state lives in
the loss and its update is torch's Adam or SGD.
"""

from __future__ import annotations

from typing import Iterable

import torch


class EpochRegularizer:
    """The reference point v_ref and the running sum of iterates that replaces it at a reset."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.params = params
        self.ref = [p.detach().clone() for p in params]
        self.acc = [torch.zeros_like(p) for p in params]
        self.count = 0

    @torch.no_grad()
    def accumulate(self) -> None:
        """Add the current iterate to the running sum (after every step)."""
        for a, p in zip(self.acc, self.params):
            a.add_(p)
        self.count += 1

    @torch.no_grad()
    def reset(self) -> None:
        """Set v_ref to the average iterate since the last reset and start a new sum."""
        if self.count == 0:
            return
        for r, a in zip(self.ref, self.acc):
            r.copy_(a / self.count)
            a.zero_()
        self.count = 0


class PESG(torch.optim.Optimizer):
    """Proximal epoch stochastic gradient (Yuan et al., ICCV 2021, Algorithm 1) with averaged-gradient momentum.

    Primal v = (w, a, b), descent:   d = grad_v F + weight_decay * v + epoch_decay * (v - v_ref)
                                     m = momentum * m + (1 - momentum) * d      (m = d at the first step)
                                     v = v - lr * m
    Dual alpha, ascent:              alpha = alpha + lr * grad_alpha F, then alpha = max(alpha, 0)
                                     when `project` (AUC-M); no projection for AUC-S.

    The momentum buffer is an exponential average of the gradients (torch.optim.SGD with
    dampening = momentum), so `lr` keeps the step size of the paper's plain-SGD Algorithm 1 and
    its lr 0.1 means the same here; undampened heavy ball would multiply every step by
    1 / (1 - momentum). (LibAUC's PESG computes m = (1 - momentum) m + momentum d, which with 0.9
    is nearly plain SGD.) `decay(factor)` divides the learning rate and resets the reference
    point, as the paper does at each stage.
    """

    def __init__(
        self,
        primal: Iterable[torch.Tensor],
        dual: Iterable[torch.Tensor],
        *,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        epoch_decay: float = 0.0,
        project: bool = True,
    ) -> None:
        primal, dual = list(primal), list(dual)
        super().__init__(
            [
                {"params": primal, "ascent": False, "momentum": momentum, "weight_decay": weight_decay, "epoch_decay": epoch_decay},
                {"params": dual, "ascent": True, "project": project},
            ],
            {"lr": lr},
        )
        self.regularizer = EpochRegularizer(primal)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """Take one descent step on the primal group and one ascent step on the dual group."""
        primal, dual = self.param_groups
        refs = {id(p): r for p, r in zip(self.regularizer.params, self.regularizer.ref)}
        for p in primal["params"]:
            if p.grad is None:
                continue
            d = p.grad.clone()
            if primal["weight_decay"]:
                d.add_(p, alpha=primal["weight_decay"])
            if primal["epoch_decay"]:
                d.add_(p - refs[id(p)], alpha=primal["epoch_decay"])
            if primal["momentum"]:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d.clone()
                else:
                    state["momentum_buffer"].mul_(primal["momentum"]).add_(d, alpha=1 - primal["momentum"])
                d = state["momentum_buffer"]
            p.add_(d, alpha=-primal["lr"])
        for p in dual["params"]:
            if p.grad is None:
                continue
            p.add_(p.grad, alpha=dual["lr"])
            if dual["project"]:
                p.clamp_(min=0.0)
        self.regularizer.accumulate()

    def decay(self, factor: float = 10.0) -> None:
        """Divide the learning rate by `factor` and reset the reference point (a new stage)."""
        for group in self.param_groups:
            group["lr"] /= factor
        self.regularizer.reset()


class PDSCA:
    """Primal-dual stochastic compositional adaptive method (Yuan et al., ICLR 2022, Algorithm 1), h_t = 1.

    State for the compositional objective min_v max_alpha Phi(h(v), alpha), h(v) = (w - theta
    grad L_CE(w), a, b), over primal v = (w, a, b) and dual alpha. The first `n_inner` primal
    tensors are the network's w; the rest (a, b) take no CE step:

        u_j   = (1 - beta0) u_j + beta0 (point_j - theta g_j)   inner moving averages of w, j = 1..k
                                                               (step 5; point_1 = w, point_j = u_{j-1})
        s     = u_k for w with `start` (the authors' code), w itself without (step 9 as written);
                a, b start from themselves
        z     = (1 - beta1) z + beta1 (O + weight_decay s + epoch_decay (s - v_ref))   (step 7)
        v     = s - lr z                                        (step 9, h_t = 1: no adaptive scaling)
        alpha = [alpha + lr grad_alpha Phi(u_k, alpha; S1 u S2)]_+                     (step 10)

    O is the AUC gradient at u_k on a second, independent batch, first-order (the Hessian term of
    grad h is dropped, as the paper's practical implementation does). The caller computes the
    gradients with its model; this class only keeps u, z and v_ref and applies the updates.
    The state starts as u_j = w_0 and z = 0 (LibAUC starts u and z at their first values).
    """

    def __init__(
        self,
        primal: list[torch.Tensor],
        dual: list[torch.Tensor],
        *,
        n_inner: int | None = None,
        lr: float,
        inner_lr: float,
        inner_steps: int,
        beta0: float,
        beta1: float,
        weight_decay: float = 0.0,
        epoch_decay: float = 0.0,
        project: bool = True,
    ) -> None:
        self.primal, self.dual = primal, dual
        self.n_inner = len(primal) if n_inner is None else n_inner
        self.lr, self.inner_lr = lr, inner_lr
        self.beta0, self.beta1 = beta0, beta1
        self.weight_decay, self.epoch_decay, self.project = weight_decay, epoch_decay, project
        self.u = [[p.detach().clone() for p in primal[: self.n_inner]] for _ in range(inner_steps)]
        self.z = [torch.zeros_like(p) for p in primal]
        self.regularizer = EpochRegularizer(primal)

    @torch.no_grad()
    def inner(self, j: int, point: list[torch.Tensor], grads: list[torch.Tensor | None]) -> list[torch.Tensor]:
        """Update and return u_j from one CE gradient step at `point` (None = no CE gradient for that tensor)."""
        for u, x, g in zip(self.u[j], point, grads):
            h = x if g is None else x - self.inner_lr * g
            u.mul_(1 - self.beta0).add_(h, alpha=self.beta0)
        return self.u[j]

    @torch.no_grad()
    def step(self, outer: list[torch.Tensor | None], dual_grads: list[torch.Tensor], start: list[torch.Tensor] | None = None) -> None:
        """Apply the momentum step on v with the outer gradients at u_k, and the ascent step on alpha.

        `start` (u_k, one tensor per network weight) makes the step v = u_k - lr z (the authors'
        code); without it v = v - lr z (Algorithm 1's step 9 as written).
        """
        for i, (v, z, r, g) in enumerate(zip(self.primal, self.z, self.regularizer.ref, outer)):
            s = start[i] if start is not None and i < self.n_inner else v
            d = torch.zeros_like(v) if g is None else g.clone()
            if self.weight_decay:
                d.add_(s, alpha=self.weight_decay)
            if self.epoch_decay:
                d.add_(s - r, alpha=self.epoch_decay)
            z.mul_(1 - self.beta1).add_(d, alpha=self.beta1)
            if s is not v:
                v.copy_(s)
            v.sub_(z, alpha=self.lr)
        for alpha, g in zip(self.dual, dual_grads):
            alpha.add_(g, alpha=self.lr)
            if self.project:
                alpha.clamp_(min=0.0)
        self.regularizer.accumulate()

    def decay(self, factor: float = 10.0) -> None:
        """Divide the outer learning rate by `factor` and reset the reference point; theta stays (it defines the objective)."""
        self.lr /= factor
        self.regularizer.reset()
