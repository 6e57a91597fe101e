"""Losses, optimizer updates, the sampler and pAUC, each checked against its paper's formula written out plainly here."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

from benchmark import metrics
from benchmark.data import Batch, ShuffleSampler
from benchmark.data.sampling import PositiveOversampler, build_sampler
from benchmark.errors import BenchError
from benchmark.methods import METHODS, StepContext, TrainInfo
from benchmark.methods.losses import AUCConstraint, MinMaxAUCLoss, TwoWayPartialAUCKL
from benchmark.methods.optim import PDSCA, PESG

torch.set_default_dtype(torch.float32)


def scores_and_labels(n: int = 30, n_labels: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, n_labels, generator=g, dtype=torch.float64)
    y = (torch.rand(n, n_labels, generator=g) < 0.35).double()
    y[0], y[1] = 1, 0
    return s, y


def eq8(h: float, y: int, a: float, b: float, alpha: float, p: float, m: float) -> float:
    """F_m of Yuan et al. 2021, eq. (8), for one sample (y in {0, 1})."""
    pos, neg = float(y == 1), float(y == 0)
    return (
        (1 - p) * (h - a) ** 2 * pos
        + p * (h - b) ** 2 * neg
        + 2 * alpha * (p * (1 - p) * m + p * h * neg - (1 - p) * h * pos)
        - p * (1 - p) * alpha**2
    )


def minmax_loss(prior: list[float], margin: float, a=None, b=None, alpha=None) -> MinMaxAUCLoss:
    loss = MinMaxAUCLoss(torch.tensor(prior, dtype=torch.float64), margin)
    with torch.no_grad():
        for t, v in ((loss.a, a), (loss.b, b), (loss.alpha, alpha)):
            if v is not None:
                t.copy_(torch.as_tensor(v, dtype=torch.float64))
    return loss


# --- AUC-M / AUC-S -------------------------------------------------------------------------------


def test_minmax_loss_is_eq8_per_label_at_any_point() -> None:
    s, y = scores_and_labels(25, 3)
    prior, a, b, alpha = [0.3, 0.2, 0.6], [0.1, 0.5, 0.9], [0.4, -0.2, 0.3], [0.7, 0.0, 1.3]
    got = minmax_loss(prior, 0.8, a, b, alpha)(s, y)
    for l in range(3):
        expected = np.mean([eq8(s[i, l].item(), int(y[i, l]), a[l], b[l], alpha[l], prior[l], 0.8) for i in range(25)])
        assert got[l].item() == pytest.approx(expected, rel=1e-12)


def test_auc_square_min_max_equals_the_pairwise_square_loss() -> None:
    # at a = E[h|+], b = E[h|-], alpha = m + b - a and p = the batch's positive share, the batch
    # mean of F is p (1 - p) times the pairwise square loss (Ying et al. 2016; eq. 3-5)
    s, y = scores_and_labels(40)
    pos, neg = s[y == 1], s[y == 0]
    p, m = len(pos) / 40, 1.0
    loss = minmax_loss([p], m, [pos.mean()], [neg.mean()], [m - pos.mean() + neg.mean()])
    pairwise = np.mean([(m - hp + hn) ** 2 for hp in pos.tolist() for hn in neg.tolist()])
    assert loss(s, y).item() == pytest.approx(p * (1 - p) * pairwise, rel=1e-12)


@pytest.mark.parametrize("margin", [1.0, 0.1])
def test_auc_margin_min_max_equals_eq6_at_the_saddle_point(margin: float) -> None:
    # eq. (6): A1 + A2 + max_{alpha >= 0} 2 alpha (m - a + b) - alpha^2 = Var+ + Var- + (m - mean+ + mean-)_+^2
    s, y = scores_and_labels(40)
    s[y[:, 0] == 1] = s[y[:, 0] == 1] * 0.5 + 0.5  # positives above: with m = 0.1 the hinge is inactive
    pos, neg = s[y == 1], s[y == 0]
    p = len(pos) / 40
    gap = margin - pos.mean().item() + neg.mean().item()
    loss = minmax_loss([p], margin, [pos.mean()], [neg.mean()], [max(gap, 0.0)])
    value = loss(s, y)
    var_pos, var_neg = np.var(pos.numpy()), np.var(neg.numpy())
    assert value.item() == pytest.approx(p * (1 - p) * (var_pos + var_neg + max(gap, 0.0) ** 2), rel=1e-10)
    # and it is the saddle point: no descent direction in a, b; no ascent direction for alpha >= 0
    ga, gb, galpha = torch.autograd.grad(value.sum(), [loss.a, loss.b, loss.alpha])
    assert abs(ga.item()) < 1e-12 and abs(gb.item()) < 1e-12
    assert (abs(galpha.item()) < 1e-12) if gap > 0 else (galpha.item() <= 1e-12)
    assert (gap > 0) == (margin == 1.0)


def test_multilabel_minmax_loss_is_each_labels_own_problem() -> None:
    s, y = scores_and_labels(30, 14)
    prior = torch.linspace(0.05, 0.5, 14).tolist()
    a, b, alpha = torch.rand(3, 14, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    together = minmax_loss(prior, 1.0, a, b, alpha)(s, y)
    for l in range(14):  # each label: eq. (8) with that label's own a, b, alpha and prior
        alone = np.mean([eq8(s[i, l].item(), int(y[i, l]), a[l].item(), b[l].item(), alpha[l].item(), prior[l], 1.0) for i in range(30)])
        assert together[l].item() == pytest.approx(alone, rel=1e-12)


def test_losses_refuse_targets_of_the_wrong_shape() -> None:
    s, y = scores_and_labels(10, 14)
    with pytest.raises(ValueError, match=r"\(batch, 1\)"):
        minmax_loss([0.3], 1.0)(s, y)
    with pytest.raises(ValueError, match="tpAUC"):
        TwoWayPartialAUCKL(10, 1, margin=1.0, Lambda=0.5, tau=1.0, gamma0=0.5, gamma1=0.5, device=torch.device("cpu"))(s, y, torch.arange(10))
    with pytest.raises(ValueError, match="ALM"):
        AUCConstraint(10, 1, 1.0, torch.device("cpu"))(s, y, torch.arange(10), 0.3)
    with pytest.raises(ValueError, match=r"\(batch, 14\)"):
        minmax_loss([0.3] * 14, 1.0)(s[:, :1], y[:, :1])


# --- focal ---------------------------------------------------------------------------------------


def test_focal_loss_matches_its_formula() -> None:
    logits = torch.tensor([[2.0], [-1.0], [0.3], [-3.0]])
    y = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    cls = METHODS.get("focal")
    method = cls.__new__(cls)
    method.config, method.info = {"alpha": 0.3, "gamma": 2.0}, SimpleNamespace(n_labels=1)
    expected = []
    for z, t in zip(logits[:, 0].tolist(), y[:, 0].tolist()):
        prob = 1 / (1 + math.exp(-z))
        p_t, a_t = (prob, 0.3) if t == 1 else (1 - prob, 0.7)
        expected.append(-a_t * (1 - p_t) ** 2 * math.log(p_t))
    assert method.loss(logits, y).item() == pytest.approx(np.mean(expected), rel=1e-6)


# --- PESG ----------------------------------------------------------------------------------------


def test_pesg_steps_match_a_hand_computed_update() -> None:
    w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)
    opt = PESG([w, a], [alpha], lr=0.1, momentum=0.9, weight_decay=0.01, epoch_decay=0.5, project=True)
    w0, a0 = w.detach().clone(), a.detach().clone()

    def set_grads(gw, ga, galpha):
        w.grad, a.grad, alpha.grad = torch.tensor(gw, dtype=torch.float64), torch.tensor(ga, dtype=torch.float64), torch.tensor(galpha, dtype=torch.float64)

    # step 1: the reference point is the start, so the epoch term is 0; the buffer starts at d
    set_grads([0.3, -0.4], [1.0], [-0.5])
    d_w1 = torch.tensor([0.3, -0.4], dtype=torch.float64) + 0.01 * w0
    d_a1 = torch.tensor([1.0], dtype=torch.float64) + 0.01 * a0
    opt.step()
    w1, a1 = w0 - 0.1 * d_w1, a0 - 0.1 * d_a1
    assert torch.allclose(w, w1) and torch.allclose(a, a1)
    assert alpha.item() == pytest.approx(0.2 - 0.1 * 0.5)  # ascent: alpha + lr * grad
    # step 2: momentum averages the new direction in, epoch decay pulls toward the start
    set_grads([-0.1, 0.2], [0.0], [-2.0])
    d_w2 = torch.tensor([-0.1, 0.2], dtype=torch.float64) + 0.01 * w1 + 0.5 * (w1 - w0)
    m_w2 = 0.9 * d_w1 + 0.1 * d_w2
    opt.step()
    w2 = w1 - 0.1 * m_w2
    assert torch.allclose(w, w2)
    assert alpha.item() == 0.0  # 0.15 - 0.1 * 2 < 0, projected onto alpha >= 0
    # a decay: lr / 10 and the reference point becomes the average iterate of the stage
    opt.decay(10.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01) and opt.param_groups[1]["lr"] == pytest.approx(0.01)
    assert torch.allclose(opt.regularizer.ref[0], (w1 + w2) / 2)
    set_grads([0.0, 0.0], [0.0], [0.0])
    d_w3 = 0.01 * w2 + 0.5 * (w2 - (w1 + w2) / 2)
    opt.step()
    assert torch.allclose(w, w2 - 0.01 * (0.9 * m_w2 + 0.1 * d_w3))


@pytest.mark.parametrize("scaled", [True, False])
def test_aucm_dual_step_moves_alpha_toward_the_margin_gap(scaled: bool) -> None:
    # with p equal to the batch's positive share, grad_alpha of the batch mean of F is
    # 2 p (1 - p) (m - mean(h+) + mean(h-) - alpha): the scaled step moves alpha by lr times that gap
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    cls = METHODS.get("aucm")
    config = {**{k: q.default for k, q in cls.PARAMS.items()}, "lr": 0.3, "dual_scaling": scaled, "bsn": False, "margin": 1.0}
    y = torch.tensor([[1.0], [0], [1], [0], [0], [1], [1], [1]], dtype=torch.float64)
    p = 5 / 8
    info = TrainInfo(n_train=8, n_labels=1, multilabel=False, prior=np.array([p]), epochs=4, steps_per_epoch=1,
                     device=torch.device("cpu"), train_labels=y.numpy())
    method = cls(config, model, info)
    x = torch.randn(8, 3, dtype=torch.float64)
    with torch.no_grad():
        h = torch.sigmoid(model(x))[:, 0]
    gap = 1.0 - h[y[:, 0] == 1].mean().item() + h[y[:, 0] == 0].mean().item()
    method.on_epoch_start(1)
    method.train_step(Batch(x, y, torch.arange(8)), StepContext(forward=model, next_batch=lambda: None))
    step = 0.3 * gap if scaled else 0.3 * 2 * p * (1 - p) * gap
    assert method.criterion.alpha.item() == pytest.approx(step, rel=1e-10)


def aucm_method(name: str, model: torch.nn.Module, prior: float = 0.5, **overrides):
    cls = METHODS.get(name)
    config = {**{k: q.default for k, q in cls.PARAMS.items()}, **overrides}
    info = TrainInfo(n_train=64, n_labels=1, multilabel=False, prior=np.array([prior]), epochs=100, steps_per_epoch=1,
                     device=torch.device("cpu"), train_labels=np.zeros((64, 1)))
    return cls(config, model, info)


def test_batch_score_normalization_loss_is_eq8_on_l2_normalized_scores() -> None:
    # BSN (Yuan et al. 2021, Sec. 4.1): h_i = f_i / sqrt(sum_j f_j^2) over the batch, then eq. (8)
    method = aucm_method("aucm", torch.nn.Linear(2, 1).double(), prior=0.4)
    assert method.config["bsn"] is True
    with torch.no_grad():
        method.criterion.a.fill_(0.2)
        method.criterion.b.fill_(-0.1)
        method.criterion.alpha.fill_(0.3)
    f = [1.5, -0.3, 0.8, 2.0, -1.1, 0.05]
    y = [1, 0, 1, 1, 0, 0]
    norm = math.sqrt(sum(v * v for v in f))
    m = method.config["margin"]
    expected = np.mean([eq8(v / norm, t, 0.2, -0.1, 0.3, 0.4, m) for v, t in zip(f, y)])
    got = method.loss(torch.tensor(f, dtype=torch.float64)[:, None], torch.tensor(y, dtype=torch.float64)[:, None])
    assert got.item() == pytest.approx(expected, rel=1e-12)
    sig = aucm_method("aucm", torch.nn.Linear(2, 1).double(), prior=0.4, bsn=False)
    with torch.no_grad():
        sig.criterion.a.fill_(0.2)
        sig.criterion.b.fill_(-0.1)
        sig.criterion.alpha.fill_(0.3)
    expected_sig = np.mean([eq8(1 / (1 + math.exp(-v)), t, 0.2, -0.1, 0.3, 0.4, m) for v, t in zip(f, y)])
    assert sig.loss(torch.tensor(f, dtype=torch.float64)[:, None], torch.tensor(y, dtype=torch.float64)[:, None]).item() == pytest.approx(expected_sig, rel=1e-12)


def separable_batches(n_batches: int, size: int = 64, seed: int = 0) -> list[Batch]:
    """Balanced batches of a linearly separable 2-feature problem (positives shifted by +1.5 on both features)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.tensor([[1.0]] * (size // 2) + [[0.0]] * (size // 2), dtype=torch.float64)
        x = torch.randn(size, 2, generator=g, dtype=torch.float64) + 1.5 * y
        out.append(Batch(x, y, torch.arange(size)))
    return out


def train_minmax(name: str, batches: list[Batch], **overrides) -> tuple[torch.nn.Module, list[float]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1).double()
    method = aucm_method(name, model, **overrides)
    method.on_epoch_start(1)
    alphas = []
    for batch in batches:
        method.train_step(batch, StepContext(forward=model, next_batch=lambda: None))
        alphas.append(method.criterion.alpha.item())
    return model, alphas


def test_aucm_and_aucs_differ_exactly_when_the_margin_is_below_the_bsn_gap_bound() -> None:
    # the alpha >= 0 projection is all that separates them. With BSN (the default) a batch of n+
    # positives and n- negatives has a mean gap E h+ - E h- <= sqrt(1/n+ + 1/n-) = 0.25 here
    # (32 + 32): at any margin above it alpha tends to m - gap > 0, the projection never binds and
    # the two train identically, as at their defaults (margin 1); below it they part.
    batches = separable_batches(150)
    x = separable_batches(1, seed=1)[0].x
    assert METHODS.get("aucm").PARAMS["margin"].default == METHODS.get("aucs").PARAMS["margin"].default
    same_m, same_s = (train_minmax(name, batches) for name in ("aucm", "aucs"))
    assert min(same_m[1]) > 0 and torch.equal(same_m[0](x), same_s[0](x))
    low_m, low_s = (train_minmax(name, batches, margin=0.1) for name in ("aucm", "aucs"))
    assert min(low_m[1]) == 0.0 and min(low_s[1]) < -1e-3  # AUC-M's alpha is clamped, AUC-S's goes negative
    assert not torch.allclose(low_m[0](x), low_s[0](x), rtol=1e-3, atol=1e-6)
    # without BSN, sigmoid scores at margin 1 never bind either (gap <= 1 = m)
    sig_m, sig_s = (train_minmax(name, batches, bsn=False) for name in ("aucm", "aucs"))
    assert torch.equal(sig_m[0](x), sig_s[0](x))


def test_pesg_without_projection_lets_alpha_go_negative() -> None:
    alpha = torch.tensor([0.1], requires_grad=True)
    opt = PESG([], [alpha], lr=1.0, project=False)
    alpha.grad = torch.tensor([-0.5])
    opt.step()
    assert alpha.item() == pytest.approx(-0.4)


# --- CT / PDSCA ----------------------------------------------------------------------------------


def ct_method(model: torch.nn.Module, n_labels: int = 1, **overrides):
    config = {**{k: p.default for k, p in METHODS.get("ct").PARAMS.items()}, **overrides}
    info = TrainInfo(n_train=8, n_labels=n_labels, multilabel=n_labels > 1, prior=np.full(n_labels, 0.4), epochs=4,
                     steps_per_epoch=1, device=torch.device("cpu"), train_labels=np.zeros((8, n_labels)))
    return METHODS.get("ct")(config, model, info)


@pytest.mark.parametrize("primal_from", ["u", "w"])
def test_pdsca_step_matches_a_hand_computed_update(primal_from: str) -> None:
    # "u": the authors' code (LibAUC PDSCA), w_1 = u_1 - lr z_1; "w": Algorithm 1 step 9 as written, w_1 = w_0 - lr z_1
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    lr, theta, beta0, beta1, wd, gamma, p, m, clip = 0.1, 0.05, 0.8, 0.7, 0.01, 0.002, 0.4, 1.0, 0.3
    method = ct_method(model, lr=lr, inner_lr=theta, beta0=beta0, beta1=beta1, weight_decay=wd, epoch_decay=gamma, margin=m,
                       grad_clip=clip, primal_from=primal_from)
    with torch.no_grad():
        method.criterion.alpha.fill_(0.3)  # a and b start at 0, as u, z and v_ref were built
        model.weight.mul_(4.0)  # large enough logits that some gradient elements exceed the clamp
    method.configure()  # rebuild u, z and v_ref at the scaled weights
    with torch.no_grad():
        method.criterion.alpha.fill_(0.3)
    g = torch.Generator().manual_seed(1)
    x1, x2 = 3 * torch.randn(6, 3, generator=g, dtype=torch.float64), 3 * torch.randn(6, 3, generator=g, dtype=torch.float64)
    y1, y2 = torch.tensor([[1.0], [0], [1], [0], [0], [1]], dtype=torch.float64), torch.tensor([[0.0], [1], [1], [0], [1], [0]], dtype=torch.float64)
    s1, s2 = Batch(x1, y1, torch.arange(6)), Batch(x2, y2, torch.arange(6))
    calls = []
    ctx = StepContext(forward=model, next_batch=lambda: calls.append(1) or s2)

    # by hand: w0 = (weight, bias); u0 = w0, z0 = 0, v_ref = (w0, a0, b0)
    w0, c0 = model.weight.detach().clone().reshape(-1), model.bias.detach().clone()
    a0, b0, alpha0 = 0.0, 0.0, 0.3
    sig = torch.sigmoid
    # CE gradient of the mean BCE of a logistic model, X^T (sigmoid(Xw + c) - y) / n, clamped element-wise
    r1 = sig(x1 @ w0 + c0) - y1[:, 0]
    gw_ce, gc_ce = (x1.T @ r1 / 6).clamp(-clip, clip), (r1.mean().reshape(1)).clamp(-clip, clip)
    uw, uc = w0 - beta0 * theta * gw_ce, c0 - beta0 * theta * gc_ce  # (1 - beta0) w0 + beta0 (w0 - theta g)
    ua, ub = torch.tensor([a0], dtype=torch.float64, requires_grad=True), torch.tensor([b0], dtype=torch.float64, requires_grad=True)
    uw_, uc_ = uw.clone().requires_grad_(True), uc.clone().requires_grad_(True)

    def phi(x, y, w, c, a, b, alpha):
        h, pos = sig(x @ w + c), y[:, 0]
        return torch.stack([
            (1 - p) * (h[i] - a) ** 2 * pos[i] + p * (h[i] - b) ** 2 * (1 - pos[i])
            + 2 * alpha * (p * (1 - p) * m + p * h[i] * (1 - pos[i]) - (1 - p) * h[i] * pos[i]) - p * (1 - p) * alpha**2
            for i in range(len(y))
        ]).mean()

    raw = torch.autograd.grad(phi(x2, y2, uw_, uc_, ua, ub, alpha0).sum(), [uw_, uc_, ua, ub])
    assert max(t.abs().max().item() for t in raw) > clip or max(
        (x1.T @ r1 / 6).abs().max().item(), r1.mean().abs().item()) > clip  # the clamp binds somewhere
    o_w, o_c, o_a, o_b = (t.clamp(-clip, clip) for t in raw)
    al = torch.tensor(alpha0, dtype=torch.float64, requires_grad=True)
    xy = (torch.cat([x2, x1]), torch.cat([y2, y1]))
    (g_alpha,) = torch.autograd.grad(phi(*xy, uw, uc, ua.detach(), ub.detach(), al), [al])
    # the step starts from s = u_1 (authors) or w_0 (literal); a and b from themselves; v_ref = w0
    sw, sc = (uw, uc) if primal_from == "u" else (w0, c0)
    zero = torch.zeros(1, dtype=torch.float64)
    z = [beta1 * (o + wd * st + gamma * (st - ref)) for o, st, ref in ((o_w, sw, w0), (o_c, sc, c0), (o_a, zero, zero), (o_b, zero, zero))]
    expected = [sw - lr * z[0], sc - lr * z[1], a0 - lr * z[2], b0 - lr * z[3]]

    method.on_epoch_start(1)
    method.train_step(s1, ctx)
    assert calls == [1]  # the outer gradient used a second, independent batch
    iterate_w, iterate_c = method.iterate
    assert torch.allclose(iterate_w.reshape(-1), expected[0]) and torch.allclose(iterate_c, expected[1])
    if primal_from == "u":  # the model's parameters are the iterate w, as the authors' code
        assert torch.allclose(model.weight.reshape(-1), expected[0]) and torch.allclose(model.bias, expected[1])
    else:  # the model carries u_k, the point the AUC objective was evaluated at, not the iterate
        assert torch.allclose(model.weight.reshape(-1), uw) and torch.allclose(model.bias, uc)
    assert torch.allclose(method.criterion.a, expected[2].double()) and torch.allclose(method.criterion.b, expected[3].double())
    # dual step eta2 = lr / (2 p (1 - p)) (dual_scaling, the default)
    assert method.criterion.alpha.item() == pytest.approx(max(0.0, alpha0 + lr * g_alpha.item() / (2 * p * (1 - p))), rel=1e-10)
    # u kept the moving average of the inner point
    assert torch.allclose(method.optimizer.u[0][0].reshape(-1), uw) and torch.allclose(method.optimizer.u[0][1], uc)


def test_ct_inner_passes_leave_batchnorm_statistics_alone() -> None:
    # BN is the first layer, so its input is the batch itself: only the AUC forward on S2 may move the running mean
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1)).double()
    method = ct_method(model)
    g = torch.Generator().manual_seed(2)
    x1, x2 = torch.randn(6, 3, generator=g, dtype=torch.float64) + 5.0, torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([[1.0], [0], [1], [0], [0], [1]], dtype=torch.float64)
    s2 = Batch(x2, y, torch.arange(6))
    method.on_epoch_start(1)
    method.train_step(Batch(x1, y, torch.arange(6)), StepContext(forward=model, next_batch=lambda: s2))
    bn = model[0]
    assert torch.allclose(bn.running_mean, 0.1 * x2.mean(0))  # (1 - 0.1) * 0 + 0.1 * mean(S2)
    assert int(bn.num_batches_tracked) == 1


def mlp_problem(seed: int = 0) -> tuple[list[Batch], list[Batch], torch.Tensor]:
    """A small imbalanced, noisy 2-class problem: train batches (two streams) and test inputs."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(8, generator=g, dtype=torch.float64)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.rand(n, 1, generator=g) < 0.3).double()
        x = torch.randn(n, 8, generator=g, dtype=torch.float64) + 0.6 * y * centre
        return x, y

    streams = []
    for _ in range(2):
        batches = []
        for _ in range(20 * 8):
            x, y = draw(32)
            y[0], y[1] = 1.0, 0.0
            batches.append(Batch(x, y, torch.arange(32)))
        streams.append(batches)
    return streams[0], streams[1], draw(400)[0]


def train_on(name: str, problem: tuple[list[Batch], list[Batch], torch.Tensor], **overrides) -> np.ndarray:
    s1, s2, test_x = problem
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).double()
    cls = METHODS.get(name)
    config = {**{k: q.default for k, q in cls.PARAMS.items()}, **overrides}
    info = TrainInfo(n_train=32, n_labels=1, multilabel=False, prior=np.array([0.3]), epochs=20, steps_per_epoch=8,
                     device=torch.device("cpu"), train_labels=np.zeros((32, 1)))
    method = cls(config, model, info)
    second = iter(s2)
    ctx = StepContext(forward=model, next_batch=lambda: next(second))
    for epoch in range(1, 21):
        method.on_epoch_start(epoch)
        for batch in s1[(epoch - 1) * 8 : epoch * 8]:
            method.train_step(batch, ctx)
        method.on_epoch_end(epoch, {"auc": 0.5})
    with torch.no_grad():
        return model(test_x)[:, 0].numpy()


def test_ct_is_not_aucm_but_ct_read_literally_is() -> None:
    # the AUC-M that CT composes (sigmoid scores, margin 1, CT's epoch decay and gradient average),
    # on the same batches; theta 0.1, the top of the paper's grid, where CE and AUC steps are alike in size
    problem = mlp_problem()
    aucm = train_on("aucm", problem, bsn=False, margin=1.0, epoch_decay=2e-3, momentum=0.9)
    literal = train_on("ct", problem, primal_from="w", inner_lr=0.1)
    authors = train_on("ct", problem, inner_lr=0.1)
    corr = lambda u, v: float(np.corrcoef(u, v)[0, 1])  # noqa: E731
    assert corr(literal, aucm) > 0.98  # w only ever gets AUC gradients: read literally, CT is AUC-M (measured 0.993)
    assert corr(authors, aucm) < 0.95  # the CE steps accumulate in the weights (measured 0.899)


def test_pdsca_k_inner_steps_chain_from_the_previous_average() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    method = ct_method(model, inner_steps=2, beta0=0.5, inner_lr=0.1)
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([[1.0], [0], [1], [0], [0], [1]], dtype=torch.float64)
    w0 = model.weight.detach().clone().reshape(-1)
    b0 = model.bias.detach().clone()

    def ce_grad(w, c):
        r = torch.sigmoid(x @ w + c) - y[:, 0]
        return x.T @ r / 6, r.mean().reshape(1)

    gw, gc = ce_grad(w0, b0)
    u1w, u1c = w0 - 0.5 * 0.1 * gw, b0 - 0.5 * 0.1 * gc
    gw2, gc2 = ce_grad(u1w, u1c)
    u2w = 0.5 * w0 + 0.5 * (u1w - 0.1 * gw2)  # u_2 starts at v0 and averages in h(u_1)
    method.on_epoch_start(1)
    method.train_step(Batch(x, y, torch.arange(6)), StepContext(forward=model, next_batch=lambda: Batch(x, y, torch.arange(6))))
    assert torch.allclose(method.optimizer.u[0][0].reshape(-1), u1w) and torch.allclose(method.optimizer.u[0][1], u1c)
    assert torch.allclose(method.optimizer.u[1][0].reshape(-1), u2w)
    del gc2


def test_pdsca_state_updates_with_given_gradients() -> None:
    v = torch.tensor([1.0, -1.0], dtype=torch.float64)
    alpha = torch.tensor([0.1], dtype=torch.float64)
    opt = PDSCA([v], [alpha], lr=0.5, inner_lr=0.2, inner_steps=1, beta0=0.6, beta1=0.7, weight_decay=0.1, epoch_decay=0.3)
    v0 = v.clone()
    u1 = opt.inner(0, [v], [torch.tensor([1.0, 2.0], dtype=torch.float64)])[0]
    assert torch.allclose(u1, 0.4 * v0 + 0.6 * (v0 - 0.2 * torch.tensor([1.0, 2.0])))
    o1 = torch.tensor([0.5, -0.5], dtype=torch.float64)
    opt.step([o1], [torch.tensor([-1.0], dtype=torch.float64)])
    z1 = 0.7 * (o1 + 0.1 * v0)  # z0 = 0 and v = v_ref
    v1 = v0 - 0.5 * z1
    assert torch.allclose(v, v1) and alpha.item() == 0.0  # 0.1 - 0.5 projected
    o2 = torch.tensor([0.0, 1.0], dtype=torch.float64)
    opt.step([o2], [torch.tensor([1.0], dtype=torch.float64)])
    z2 = 0.3 * z1 + 0.7 * (o2 + 0.1 * v1 + 0.3 * (v1 - v0))
    v2 = v1 - 0.5 * z2
    assert torch.allclose(v, v2) and alpha.item() == pytest.approx(0.5)
    opt.decay(10.0)
    assert opt.lr == pytest.approx(0.05) and opt.inner_lr == 0.2
    assert torch.allclose(opt.regularizer.ref[0], (v1 + v2) / 2)


# --- tpAUC / SOTA-s ------------------------------------------------------------------------------


def test_sota_s_estimators_and_gradient_match_hand_computation() -> None:
    lam, tau, g0, g1, m = 0.5, 0.8, 0.3, 0.6, 1.0
    loss = TwoWayPartialAUCKL(10, 1, margin=m, Lambda=lam, tau=tau, gamma0=g0, gamma1=g1, device=torch.device("cpu")).double()
    s, y = scores_and_labels(6)
    y = torch.tensor([[1.0], [0], [1], [0], [0], [1]], dtype=torch.float64)
    index = torch.tensor([7, 2, 4, 9, 0, 5])
    P, N = [0, 2, 5], [1, 3, 4]

    def hinge(sv, i, j):
        return max(0.0, m - (sv[i] - sv[j])) ** 2

    # step 1: every u_i and v start at their batch estimates
    sv = s[:, 0].tolist()
    u = {i: np.mean([math.exp(hinge(sv, i, j) / lam) for j in N]) for i in P}
    v = np.mean([u[i] ** (lam / tau) for i in P])
    s1 = s.clone().requires_grad_(True)
    surrogate, objective = loss(s1, y, index)
    for i in P:
        assert math.exp(loss.log_u[index[i], 0].item()) == pytest.approx(u[i], rel=1e-10)
    assert math.exp(loss.log_v[0].item()) == pytest.approx(v, rel=1e-10)
    assert objective.item() == pytest.approx(tau * math.log(v), rel=1e-10)
    # the gradient is G = mean_{i,j} u_i^(lam/tau - 1) exp(L_ij / lam) / v * grad L_ij
    (grad,) = torch.autograd.grad(surrogate, [s1])
    expected = np.zeros(6)
    for i in P:
        for j in N:
            wgt = u[i] ** (lam / tau - 1) * math.exp(hinge(sv, i, j) / lam) / v
            dl = -2 * max(0.0, m - (sv[i] - sv[j]))  # dL/dh_i; dL/dh_j = -dL/dh_i
            expected[i] += wgt * dl / (len(P) * len(N))
            expected[j] -= wgt * dl / (len(P) * len(N))
    assert np.allclose(grad[:, 0].numpy(), expected, rtol=1e-10)
    # step 2: moving averages with gamma0, gamma1 for the positives seen again
    s2 = (s * 0.5 + 0.2).detach()
    sv2 = s2[:, 0].tolist()
    u2 = {i: (1 - g0) * u[i] + g0 * np.mean([math.exp(hinge(sv2, i, j) / lam) for j in N]) for i in P}
    v2 = (1 - g1) * v + g1 * np.mean([u2[i] ** (lam / tau) for i in P])
    loss(s2, y, index)
    assert math.exp(loss.log_u[index[0], 0].item()) == pytest.approx(u2[0], rel=1e-10)
    assert math.exp(loss.log_v[0].item()) == pytest.approx(v2, rel=1e-10)
    assert torch.isneginf(loss.log_u[[1, 3, 6, 8], 0]).all()  # never a positive in a batch: no state


def sota_s_first_step(sv: list[float], yv: list[int], lam: float, tau: float, m: float) -> tuple[float, np.ndarray]:
    """By hand, a fresh SOTA-s estimator's first batch: (surrogate value, its gradient in the scores).

    u_i and v start at their batch estimates, so the weight of pair (i, j) is
    u_i^(lam/tau - 1) exp(L_ij / lam) / v and the surrogate is mean_{i,j} weight_ij L_ij.
    """
    P, N = [i for i, t in enumerate(yv) if t == 1], [j for j, t in enumerate(yv) if t == 0]
    hinge = lambda i, j: max(0.0, m - (sv[i] - sv[j])) ** 2  # noqa: E731
    u = {i: np.mean([math.exp(hinge(i, j) / lam) for j in N]) for i in P}
    v = np.mean([u[i] ** (lam / tau) for i in P])
    value, grad = 0.0, np.zeros(len(sv))
    for i in P:
        for j in N:
            wgt = u[i] ** (lam / tau - 1) * math.exp(hinge(i, j) / lam) / v / (len(P) * len(N))
            value += wgt * hinge(i, j)
            dl = -2 * max(0.0, m - (sv[i] - sv[j]))
            grad[i] += wgt * dl
            grad[j] -= wgt * dl
    return value, grad


@pytest.mark.parametrize("clip", [0.0, 0.02])
def test_sota_s_method_step_is_sgd_on_the_estimator_gradient(clip: float) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    cls = METHODS.get("tpauc")
    config = {**{k: p.default for k, p in cls.PARAMS.items()}, "optimizer": "sgd", "momentum": 0.0, "lr": 0.5, "weight_decay": 0.01, "grad_clip": clip}
    info = TrainInfo(n_train=6, n_labels=1, multilabel=False, prior=np.array([0.5]), epochs=4, steps_per_epoch=1,
                     device=torch.device("cpu"), train_labels=np.zeros((6, 1)))
    method = cls(config, model, info)
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([[1.0], [0], [1], [0], [0], [1]], dtype=torch.float64)
    w0, c0 = model.weight.detach().clone()[0].numpy(), model.bias.detach().clone().numpy()
    # by hand: scores h = sigmoid(x w + c), dh/dz = h (1 - h); chain G(h) through the logistic model
    xn = x.numpy()
    h = 1 / (1 + np.exp(-(xn @ w0 + c0)))
    _, g_h = sota_s_first_step(h.tolist(), [1, 0, 1, 0, 0, 1], 0.5, 1.0, 1.0)
    g_z = g_h * h * (1 - h)
    gw, gc = xn.T @ g_z, np.array([g_z.sum()])
    if clip:  # LibAUC's SOTAs: clamp, then weight decay, then the update
        assert max(abs(gw).max(), abs(gc).max()) > clip  # the clamp binds
        gw, gc = np.clip(gw, -clip, clip), np.clip(gc, -clip, clip)
    method.on_epoch_start(1)
    method.train_step(Batch(x, y, torch.arange(6)), StepContext(forward=model, next_batch=lambda: None))
    assert np.allclose(model.weight.detach()[0].numpy(), w0 - 0.5 * (gw + 0.01 * w0), rtol=1e-10)
    assert np.allclose(model.bias.detach().numpy(), c0 - 0.5 * (gc + 0.01 * c0), rtol=1e-10)


def test_multilabel_tpauc_equals_per_label_problems() -> None:
    s, y = scores_and_labels(20, 4, seed=5)
    kw = dict(margin=1.0, Lambda=0.5, tau=1.0, gamma0=0.5, gamma1=0.5, device=torch.device("cpu"))
    together, _ = TwoWayPartialAUCKL(20, 4, **kw).double()(s, y, torch.arange(20))
    alone = [sota_s_first_step(s[:, l].tolist(), y[:, l].int().tolist(), 0.5, 1.0, 1.0)[0] for l in range(4)]
    assert together.item() == pytest.approx(np.mean(alone), rel=1e-10)


# --- ALM -----------------------------------------------------------------------------------------


def test_alm_penalty_is_eq8_and_every_positive_reaches_the_gradient() -> None:
    delta, mu = 1.5, 0.7
    con = AUCConstraint(10, 1, delta, torch.device("cpu")).double()
    con.lambdas[:, 0] = torch.arange(10, dtype=torch.float64) / 10
    f = torch.tensor([[2.0], [0.3], [1.0], [-0.5], [0.9], [0.1]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1.0], [0], [1], [0], [0], [1]])
    index = torch.tensor([3, 8, 1, 0, 6, 4])
    P, N = [0, 2, 5], [1, 3, 4]
    fv = f[:, 0].tolist()
    q = {j: sum(max(0.0, -(fv[j] - fv[k]) + delta) for k in N) for j in P}
    lam = {j: con.lambdas[index[j], 0].item() for j in P}
    expected = (mu * sum(q[j] ** 2 for j in P) / 2 + sum(lam[j] * q[j] for j in P)) / (len(P) * len(N))
    penalty, qs = con(f, y, index, mu)
    assert penalty.item() == pytest.approx(expected, rel=1e-12)
    (grad,) = torch.autograd.grad(penalty, [f])
    assert all(grad[j, 0].item() < 0 for j in P)  # each positive is pushed up, not only the last one
    con.update(index, qs, mu)
    for j in P:
        assert con.lambdas[index[j], 0].item() == pytest.approx(lam[j] + mu * q[j])
    assert con.lambdas[8, 0].item() == pytest.approx(0.8)  # negatives keep their (unused) multiplier


def test_alm_lambda_update_adds_up_repeated_rows() -> None:
    con = AUCConstraint(4, 1, 1.0, torch.device("cpu"))
    con.update(torch.tensor([2, 2, 1]), torch.tensor([[1.0], [2.0], [0.5]]), 2.0)
    assert con.lambdas[:, 0].tolist() == [0.0, 1.0, 6.0, 0.0]


# --- sampler and prior ---------------------------------------------------------------------------


def test_oversampler_batches_hold_both_classes_at_the_chosen_share() -> None:
    labels = np.zeros((200, 1), dtype=np.uint8)
    labels[:20] = 1  # 10 % positive
    sampler, prior = build_sampler(labels, 32, 0.5, seed=3)
    assert isinstance(sampler, PositiveOversampler)
    batches = sampler.epoch(1)
    assert len(batches) == sampler.steps_per_epoch() == 7  # as many steps as uniform shuffling
    for idx in batches:
        assert len(idx) == 32 and int(labels[idx.numpy(), 0].sum()) == 16
    assert prior.tolist() == [0.5]
    # positives are drawn evenly: every positive appears before any repeats
    first = torch.cat(batches)[labels[torch.cat(batches).numpy(), 0] == 1][:20]
    assert sorted(first.tolist()) == list(range(20))
    assert all(torch.equal(x, y) for x, y in zip(sampler.epoch(5), sampler.epoch(5)))
    assert not all(torch.equal(x, y) for x, y in zip(sampler.epoch(5), sampler.epoch(6)))


def test_oversampler_never_undersamples_and_uniform_prior_is_prevalence() -> None:
    labels = (np.arange(100) % 4 != 0).astype(np.uint8).reshape(-1, 1)  # 75 % positive
    sampler, prior = build_sampler(labels, 16, 0.5, seed=0)
    assert sampler.n_pos == 12 and prior.tolist() == [0.75]  # stratified at the task's own share
    uniform, prior0 = build_sampler(labels, 16, 0.0, seed=0)
    assert isinstance(uniform, ShuffleSampler) and prior0.tolist() == [0.75]


def test_multilabel_prior_is_the_exact_share_under_the_sampler() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random((300, 3)) < [0.05, 0.1, 0.2]).astype(np.uint8)
    sampler, prior = build_sampler(labels, 20, 0.5, seed=1)
    drawn = np.concatenate([labels[torch.cat(sampler.epoch(e)).numpy()] for e in range(1, 200)])
    assert np.allclose(drawn.mean(axis=0), prior, atol=0.01)
    anypos = labels.any(axis=1)
    assert np.allclose(prior, 0.5 * labels[anypos].mean(axis=0))


def test_oversampler_refuses_a_single_class() -> None:
    with pytest.raises(BenchError, match="both positive and negative"):
        build_sampler(np.ones((10, 1)), 4, 0.5, seed=0)


# --- pAUC ----------------------------------------------------------------------------------------


def roc_area_in_region(y: np.ndarray, s: np.ndarray, max_fpr: float, min_tpr: float) -> float:
    """Area of the (staircase) ROC curve inside FPR <= max_fpr, TPR >= min_tpr, over the region's area."""
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    # without ties the ROC is a staircase: between consecutive FPR values, TPR is its highest value at the left end
    area, xs = 0.0, np.unique(np.r_[fpr[fpr <= max_fpr], max_fpr])
    for lo, hi in zip(xs[:-1], xs[1:]):
        area += (hi - lo) * max(0.0, tpr[fpr <= lo].max() - min_tpr)
    return area / (max_fpr * (1 - min_tpr))


def test_two_way_pauc_is_the_roc_area_in_the_region() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(20), np.zeros(30)].astype(int)  # 20 * 0.3 = 6 positives, 30 * 0.3 = 9 negatives: exact
    s = rng.normal(size=50) + y * 1.0
    assert metrics.two_way_pauc(y, s, 0.3, 0.7) == pytest.approx(roc_area_in_region(y, s, 0.3, 0.7), abs=1e-12)
    # by hand: the 6 lowest positives against the 9 highest negatives, ties counting one half
    low_pos, high_neg = np.sort(s[y == 1])[:6], np.sort(s[y == 0])[-9:]
    pairs = [(p > n) + 0.5 * (p == n) for p in low_pos for n in high_neg]
    assert metrics.two_way_pauc(y, s) == pytest.approx(np.mean(pairs))
    perfect = y + 0.0
    assert metrics.two_way_pauc(y, perfect) == 1.0 and metrics.two_way_pauc(y, -perfect) == 0.0
    assert math.isnan(metrics.two_way_pauc(np.ones(5), np.arange(5.0)))


def test_pauc_is_reported_for_every_run_and_averaged_over_labels() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((80, 3)) < 0.4).astype(int)
    logits = rng.normal(size=(80, 3)) + y
    out = metrics.evaluate(y, logits)
    assert set(out) >= {"auc", "acc", "pauc"}
    scores = metrics.sigmoid(logits)
    assert out["pauc"] == pytest.approx(np.mean([metrics.two_way_pauc(y[:, j], scores[:, j]) for j in range(3)]))
