"""A study searches only parameters that act: for every method, each parameter of its default
search space changes the trained weights when it moves across its range, with everything else fixed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from benchmark import tune
from benchmark.config import SHARED_PARAMS, param_table
from benchmark.data import Batch
from benchmark.errors import BenchError
from benchmark.hparams import Bool, Choice, Float, Int, Param
from benchmark.methods import METHODS, StepContext, TrainInfo
from benchmark.tasks import TASKS

EPOCHS = 4
# falling validation AUCs, so settings that act on a fall (alm's rho) act; alm trains F alone
# for the first two epochs (pretrain_fraction 0.5), then F + its constraint
VAL_AUCS = (0.9, 0.8, 0.7, 0.6)


def far_value(param: Param) -> Any:
    """Return the value of the parameter's search space farthest from its default."""
    if isinstance(param, Bool):
        return not param.default
    if isinstance(param, Choice):
        space = list(param.choices) if param.search is True else list(param.search)
        return next(c for c in space if c != param.default)
    if isinstance(param, Float):
        candidates = list(param.grid) if param.grid else list(param.search)
    else:
        assert isinstance(param, Int)
        candidates = list(param.search)
    return max(candidates, key=lambda v: abs(v - param.default))


def trained_weights(name: str, config: dict[str, Any]) -> list[torch.Tensor]:
    """Return a small MLP's weights after EPOCHS epochs of two steps of method `name` under `config`, from a fixed start on fixed batches."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([[1.0], [0.0]] * 8)
    first, second = Batch(x[:8], y[:8], torch.arange(8)), Batch(x[8:], y[8:], torch.arange(8, 16))
    info = TrainInfo(n_train=16, n_labels=1, multilabel=False, prior=np.array([0.5]), epochs=EPOCHS, steps_per_epoch=2,
                     device=torch.device("cpu"), train_labels=y.numpy().astype(np.int64))
    method = METHODS.get(name)(config, model, info)
    for epoch, auc in enumerate(VAL_AUCS, start=1):
        method.on_epoch_start(epoch)
        for batch, other in ((first, second), (second, first)):
            method.train_step(batch, StepContext(forward=model, next_batch=lambda other=other: other))
        method.on_epoch_end(epoch, {"auc": auc})
    return [p.detach().clone() for p in model.parameters()]


def defaults(name: str) -> dict[str, Any]:
    return {k: p.default for k, p in METHODS.get(name).PARAMS.items()}


def differs(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return any(not torch.equal(u, v) for u, v in zip(a, b))


CASES = [(name, key) for name in METHODS for key in tune.search_space(METHODS.get(name)) if key in METHODS.get(name).PARAMS]


@pytest.mark.parametrize("name", METHODS.names())
def test_the_probe_is_deterministic(name: str) -> None:
    # without this, a parameter could seem to act through run-to-run noise alone
    assert not differs(trained_weights(name, defaults(name)), trained_weights(name, defaults(name)))


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
@pytest.mark.parametrize(("name", "key"), CASES)
def test_every_searched_parameter_changes_the_trained_weights(name: str, key: str) -> None:
    base = defaults(name)
    changed = {**base, key: far_value(METHODS.get(name).PARAMS[key])}
    assert changed[key] != base[key]
    assert differs(trained_weights(name, base), trained_weights(name, changed)), f"{name}: {key}={changed[key]} trains the same weights as {base[key]}"


def test_every_method_searches_something_and_every_space_is_probed() -> None:
    assert {name for name, _ in CASES} == set(METHODS.names())
    assert len(CASES) == sum(len(tune.search_space(METHODS.get(n))) for n in METHODS)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_alm_searches_the_focal_parameters_only_when_its_base_loss_is_focal() -> None:
    alm = METHODS.get("alm")
    assert {"alpha", "gamma"}.isdisjoint(tune.search_space(alm))
    assert {"alpha", "gamma"} <= set(tune.search_space(alm, (), {"base": "focal"}))
    # why: with F = ce they do nothing at all; with F = focal they change the weights
    for key in ("alpha", "gamma"):
        for base_loss, acts in (("ce", False), ("focal", True)):
            config = {**defaults("alm"), "base": base_loss}
            moved = {**config, key: far_value(alm.PARAMS[key])}
            assert differs(trained_weights("alm", config), trained_weights("alm", moved)) is acts, (key, base_loss)


@pytest.mark.parametrize(("name", "switch"), [("ema_decay", "ema"), ("swa_epochs", "swa")])
def test_a_shared_parameter_that_needs_a_setting_is_searched_only_with_it(name: str, switch: str) -> None:
    ce = METHODS.get("ce")
    with pytest.raises(BenchError, match=f"'{name}' acts only with {switch}=true; fix that with --set {switch}=true"):
        tune.search_space(ce, (name,))
    assert name in tune.search_space(ce, (name,), {switch: "true"})


def test_no_task_card_sets_a_setting_some_parameter_needs() -> None:
    # search_space judges what acts without the task's card, which is exact only while this holds
    needed = {p.needs[0] for m in METHODS for p in param_table(METHODS.get(m)).values() if p.needs} | {p.needs[0] for p in SHARED_PARAMS.values() if p.needs}
    assert needed == {"base", "ema", "swa"}
    for flag in TASKS:
        assert needed.isdisjoint(TASKS.get(flag).defaults), flag
