"""Every method end to end on tiny synthetic tasks (2D, 3D, 14-label), and the between-epoch logic of each."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmark import trainer
from benchmark.cli import main
from benchmark.data import Batch, DeviceSplit, ShuffleSampler
from benchmark.errors import BenchError
from benchmark.methods import METHODS, Method, StepContext, TrainInfo
from benchmark.models import build_model, head
from benchmark.runner import RunSpec, run
from benchmark.store import read_jsonl
from benchmark.synthetic import write_synthetic
from benchmark.tasks import get_task

EXPECTED = ["ce", "focal", "aucm", "aucs", "ct", "tpauc", "alm"]
# tiny sets and batches keep a 3D ResNet-18 step cheap on a CPU
TINY = {
    "breastmnist": ({"train": 16, "val": 12, "test": 12}, 8),
    "adrenalmnist3d": ({"train": 4, "val": 4, "test": 4}, 8),
    "chestmnist": ({"train": 24, "val": 24, "test": 24}, 8),
}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-data")
    for flag, (sizes, _) in TINY.items():
        write_synthetic(get_task(flag), root, sizes=sizes)
    return root


def overrides_for(method: str, flag: str, epochs: int = 2) -> dict[str, Any]:
    return {"epochs": epochs, "batch_size": TINY[flag][1]}  # alm: F alone for epoch 1 (half of the epochs)


def test_methods_registry_lists_every_method() -> None:
    assert METHODS.names() == EXPECTED


@pytest.mark.parametrize("flag", list(TINY))
@pytest.mark.parametrize("method", EXPECTED)
def test_every_method_trains_two_epochs(method: str, flag: str, tiny_root: Path, tmp_path: Path) -> None:
    spec = RunSpec(task=flag, method=method, overrides=overrides_for(method, flag), data_root=str(tiny_root),
                   out=str(tmp_path / "run"), device="cpu", verify_md5=False)
    result, run_dir = run(spec)
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert len(records) == 2 and all(math.isfinite(r["train_loss"]) for r in records)
    for split in ("val", "test"):
        assert 0.0 <= result[split]["auc"] <= 1.0 and 0.0 <= result[split]["pauc"] <= 1.0
    if method == "alm":
        assert result["best_epoch"] == 2  # the pretraining epoch is never the result


def test_two_stage_pretrains_with_ce_then_resets_the_head() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18_28", 1, 1)
    cls = METHODS.get("aucm")
    config = {**{k: p.default for k, p in cls.PARAMS.items()}, "pretrain": "ce", "pretrain_epochs": 2}
    info = TrainInfo(n_train=8, n_labels=1, multilabel=False, prior=np.array([0.5]), epochs=6, steps_per_epoch=1,
                     device=torch.device("cpu"), train_labels=np.zeros((8, 1)))
    method = cls(config, model, info)
    x = torch.randn(8, 1, 28, 28)
    batch = Batch(x, torch.tensor([[1.0], [0.0]] * 4), torch.arange(8))
    ctx = StepContext(forward=model, next_batch=lambda: batch)
    lrs = []
    for epoch in (1, 2):
        method.on_epoch_start(epoch)
        lrs.append(method.current_lr())
        method.train_step(batch, ctx)
        method.on_epoch_end(epoch, {"auc": 0.9})
        assert not method.selectable(epoch)
    assert lrs == pytest.approx([1e-3, 1e-4])  # CE's Adam with its own schedule over the 2-epoch stage
    before = head(model).weight.detach().clone()
    method.on_epoch_start(3)
    assert not torch.equal(before, head(model).weight)  # a fresh classifier head
    assert method.current_lr() == pytest.approx(0.1) and method.selectable(3)
    # the AUC stage's schedule counts from its own start: 4 epochs, decays after stage epochs 2 and 3
    assert method.milestones == {2, 3}
    ref = method.optimizer.regularizer.ref[0]
    assert torch.equal(ref, next(model.parameters()).detach())  # PESG's reference point: the stage's start


@pytest.mark.parametrize("overrides", [{"pretrain": "ce", "pretrain_epochs": 2}, {"pretrain": "ce"}, {"pretrain_epochs": 1}])
def test_two_stage_settings_are_checked(overrides: dict[str, Any]) -> None:
    cls = METHODS.get("aucs")
    config = {**{k: p.default for k, p in cls.PARAMS.items()}, **overrides}
    info = TrainInfo(n_train=8, n_labels=1, multilabel=False, prior=np.array([0.5]), epochs=2, steps_per_epoch=1,
                     device=torch.device("cpu"), train_labels=np.zeros((8, 1)))
    with pytest.raises(BenchError, match="pretrain"):
        cls(config, torch.nn.Linear(2, 1), info)


class _Scripted(Method):
    """A method whose first epoch is a pretraining epoch; it never changes the model."""

    def configure(self) -> None:
        pass

    def train_step(self, batch, ctx):
        return torch.zeros(())

    def selectable(self, epoch: int) -> bool:
        return epoch > 1


def test_trainer_never_selects_a_pretraining_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    # each epoch the trainer evaluates the validation split, then the training split (train AUC)
    aucs = iter([0.9, 1.0, 0.6, 1.0, 0.7, 1.0])
    monkeypatch.setattr(trainer.metrics, "evaluate", lambda y, logits: {"auc": next(aucs), "acc": 0.5, "pauc": 0.5})
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (8, 28, 28), dtype=np.uint8), np.array([[0], [1]] * 4)
    split = DeviceSplit(images, labels, torch.device("cpu"))
    model = build_model("resnet18_28", 1, 1)
    info = TrainInfo(8, 1, False, np.array([0.5]), 3, 1, torch.device("cpu"), labels)
    fitted = trainer.fit(model, _Scripted({}, model, info), split, split, ShuffleSampler(labels, 8, 0), 3)
    assert fitted.best_epoch == 3 and fitted.best_val["auc"] == 0.7


def alm_method(epochs: int = 6, pretrain: int = 2, **overrides: Any) -> Method:
    cls = METHODS.get("alm")
    config = {**{k: p.default for k, p in cls.PARAMS.items()}, "pretrain_fraction": pretrain / epochs, **overrides}
    info = TrainInfo(n_train=8, n_labels=1, multilabel=False, prior=np.array([0.5]), epochs=epochs, steps_per_epoch=1,
                     device=torch.device("cpu"), train_labels=np.zeros((8, 1)))
    return cls(config, torch.nn.Linear(4, 1), info)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_alm_mu_grows_only_when_validation_auc_falls_after_pretraining() -> None:
    method = alm_method(epochs=7, pretrain=2, mu0=0.3, rho=3.0, mu_max=5.0)
    mus = []
    for epoch, auc in enumerate([0.8, 0.7, 0.75, 0.75, 0.6, 0.5, 0.9], start=1):
        method.on_epoch_start(epoch)
        method.on_epoch_end(epoch, {"auc": auc})
        mus.append(method.mu)
    # epoch 2 fell but is pretraining; 3 rose; 4 tied (not a fall); 5 and 6 fell; 7 rose
    assert mus == pytest.approx([0.3, 0.3, 0.3, 0.3, 0.9, 2.7, 2.7])
    assert [method.selectable(e) for e in (1, 2, 3)] == [False, False, True]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_alm_mu_cap() -> None:
    method = alm_method(epochs=6, pretrain=1, mu0=0.3, rho=4.0, mu_max=1.0)
    for epoch, auc in enumerate([0.9, 0.8, 0.7, 0.6], start=1):
        method.on_epoch_start(epoch)
        method.on_epoch_end(epoch, {"auc": auc})
    assert method.mu == 1.0


def test_alm_constraint_only_after_pretraining_and_lambdas_persist() -> None:
    torch.manual_seed(0)
    method = alm_method(epochs=4, pretrain=1, delta=5.0)
    model = method.model
    x = torch.randn(6, 4)
    y = torch.tensor([[1.0], [0.0], [1.0], [0.0], [1.0], [0.0]])
    batch = Batch(x, y, torch.tensor([0, 1, 2, 3, 4, 5]))
    ctx = StepContext(forward=model, next_batch=lambda: batch)
    method.on_epoch_start(1)
    ce_only = method.train_step(batch, ctx)
    assert torch.count_nonzero(method.constraint.lambdas) == 0
    assert ce_only.item() == pytest.approx(torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).item(), rel=0.2)
    method.on_epoch_start(2)
    method.train_step(batch, ctx)
    lam = method.constraint.lambdas[:, 0]
    assert (lam[[0, 2, 4]] > 0).all() and (lam[[1, 3, 5]] == 0).all()  # delta = 5: every positive violates
    first = lam.clone()
    method.train_step(batch, ctx)
    assert (method.constraint.lambdas[[0, 2, 4], 0] > first[[0, 2, 4]]).all()  # kept across steps and grown


@pytest.mark.parametrize(("epochs", "fraction"), [(3, 1.0), (3, 0.0), (1, 0.5)])
def test_alm_refuses_a_run_without_both_stages(epochs: int, fraction: float) -> None:
    with pytest.raises(BenchError, match="alm needs"):
        alm_method(epochs=epochs, pretrain_fraction=fraction)


@pytest.mark.parametrize(("epochs", "expected"), [(100, 50), (4, 2), (3, 2), (2, 1), (20, 10)])
def test_alm_pretraining_is_a_share_of_any_budget(epochs: int, expected: int) -> None:
    method = alm_method(epochs=epochs, pretrain_fraction=0.5)
    assert method.pretrain_epochs == expected
    assert [method.selectable(e) for e in (expected, expected + 1)] == [False, True]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_alm_constrained_stage_restarts_fs_schedule() -> None:
    # 8 epochs: F alone for 4 (decays after 2 and 3), then F + constraint for 4 starting again at lr 1e-3
    method = alm_method(epochs=8, pretrain=4, lr=1e-3)
    lrs = []
    for epoch in range(1, 9):
        method.on_epoch_start(epoch)
        lrs.append(method.optimizer.param_groups[0]["lr"])
        method.on_epoch_end(epoch, {"auc": 0.5})
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5, 1e-3, 1e-3, 1e-4, 1e-5])
    assert method.current_lr() == pytest.approx(1e-5)


def test_alm_draws_batches_as_its_base_method() -> None:
    task = get_task("breastmnist")
    from benchmark.config import resolve

    assert resolve(task, METHODS.get("alm"))["sampling_rate"] == resolve(task, METHODS.get("ce"))["sampling_rate"] == 0.0
    assert resolve(task, METHODS.get("aucm"))["sampling_rate"] == 0.5


def test_alm_runs_at_a_short_budget(tiny_root: Path, tmp_path: Path) -> None:
    assert main(["run", "--task", "breastmnist", "--method", "alm", "--epochs", "4", "--set", "batch_size=8", "--quiet",
                 "--data-root", str(tiny_root), "--no-verify", "--device", "cpu", "--out", str(tmp_path / "alm")]) == 0
    records = read_jsonl(tmp_path / "alm" / "metrics.jsonl")
    assert [r["lr"] for r in records] == pytest.approx([1e-3, 1e-4, 1e-3, 1e-4])  # F's stage, then its restart


def test_runner_hands_the_sampling_distributions_prior_to_the_method(tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, np.ndarray] = {}
    cls = METHODS.get("aucm")
    original = cls.configure

    def spy(self) -> None:
        seen[str(self.config["sampling_rate"])] = np.asarray(self.info.prior)
        original(self)

    monkeypatch.setattr(cls, "configure", spy)
    labels = np.load(tiny_root / "breastmnist.npz")["train_labels"]
    for rate in ("0", "0.9"):
        spec = RunSpec(task="breastmnist", method="aucm", overrides={"epochs": 1, "batch_size": 8, "sampling_rate": rate},
                       data_root=str(tiny_root), out=str(tmp_path / rate), device="cpu", verify_md5=False)
        run(spec)
    assert seen["0.0"].tolist() == pytest.approx([labels.mean()])  # uniform: the training prevalence
    assert labels.mean() < 0.9 and seen["0.9"].tolist() == pytest.approx([7 / 8])  # oversampled: 7 of 8 per batch


def test_cli_lists_the_methods_with_their_hyperparameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        assert f"\n{name}: " in f"\n{out}"
    for key in ("epoch_decay", "inner_steps", "Lambda", "mu0", "pretrain_fraction", "pretrain_epochs", "sampling_rate", "gamma", "bsn", "primal_from", "grad_clip"):
        assert key in out


def test_every_tunable_method_parameter_has_a_search_range() -> None:
    fixed = {"momentum", "optimizer", "base", "pretrain", "pretrain_epochs", "pretrain_fraction", "mu_max", "dual_scaling", "bsn", "primal_from", "grad_clip"}
    for name in METHODS:
        for key, param in METHODS.get(name).PARAMS.items():
            assert param.searchable() or key in fixed, f"{name}.{key} has no search range"


def real_subset(source: Path, root: Path, per_split: dict[str, tuple[int, int]]) -> Path:
    """Write `<root>/<same name>` holding the first (positives, negatives) rows of each split of `source`."""
    arrays = {}
    with np.load(source) as data:
        for split, (n_pos, n_neg) in per_split.items():
            labels = data[f"{split}_labels"]
            rows = np.sort(np.concatenate([np.flatnonzero(labels[:, 0] == 1)[:n_pos], np.flatnonzero(labels[:, 0] == 0)[:n_neg]]))
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = data[f"{split}_images"][rows], labels[rows]
    root.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / source.name, **arrays)
    return root


@pytest.mark.realdata
@pytest.mark.parametrize("flag", ["breastmnist", "pneumoniamnist", "adrenalmnist3d"])
@pytest.mark.parametrize("method", EXPECTED)
def test_every_method_runs_on_the_real_files(method: str, flag: str, real_root: Path, tmp_path: Path) -> None:
    overrides: dict[str, Any] = {"epochs": 2}
    root, verify = real_root, True
    if get_task(flag).dims == 3 and not torch.cuda.is_available():
        # two full-file 3D epochs cost about half an hour per method on a 2-core CPU: there, the
        # real volumes go through every method as a class-balanced slice of the real file
        root = real_subset(real_root / get_task(flag).filename(), tmp_path / "slice", {"train": (12, 20), "val": (6, 6), "test": (6, 6)})
        overrides["batch_size"], verify = 16, False
    result, run_dir = run(RunSpec(task=flag, method=method, overrides=overrides, data_root=str(root), out=str(tmp_path / "r"), verify_md5=verify))
    assert all(math.isfinite(r["train_loss"]) for r in read_jsonl(run_dir / "metrics.jsonl"))
    assert 0.0 <= result["test"]["auc"] <= 1.0 and 0.0 <= result["test"]["pauc"] <= 1.0
