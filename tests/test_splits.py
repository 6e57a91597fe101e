"""Validation strategies: the splits' shape, stratification and independence, and the runs built on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import metrics, runner
from benchmark.cli import main
from benchmark.config import resolve
from benchmark.data import DeviceSplit
from benchmark.data.splits import STRATEGIES, folds_for, make_folds
from benchmark.errors import BenchError
from benchmark.methods import METHODS
from benchmark.models import build_model
from benchmark.runner import RunSpec, run
from benchmark.store import load_predictions, load_weights, read_jsonl
from benchmark.tasks import get_task, load_arrays
from benchmark.trainer import predict


def _labels(kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "binary":
        return (rng.random((546, 1)) < 0.73).astype(np.int64), (rng.random((78, 1)) < 0.73).astype(np.int64)
    prevalence = np.array([0.10, 0.02, 0.12, 0.18, 0.05, 0.05, 0.01, 0.05, 0.04, 0.02, 0.02, 0.015, 0.03, 0.005])
    return (rng.random((3000, 14)) < prevalence).astype(np.int64), (rng.random((400, 14)) < prevalence).astype(np.int64)


@pytest.mark.parametrize("kind", ["binary", "multilabel"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_folds_cover_train_and_val_only_and_are_stratified(strategy: str, kind: str) -> None:
    train, val = _labels(kind)
    pool = np.concatenate([train, val])
    n_pool = len(pool)
    folds = make_folds(strategy, train, val, val_fraction=0.2, split_seed=3, folds=5)
    for fold in folds:
        # indices address the train+val pool only: the test split is never part of a split
        assert fold.train.min() >= 0 and max(fold.train.max(), fold.val.max()) < n_pool
        assert not set(fold.train) & set(fold.val)
        assert np.all(np.diff(fold.train) > 0) and np.all(np.diff(fold.val) > 0)
    if strategy in ("official", "refit"):
        assert len(folds) == 1
        assert np.array_equal(folds[0].train, np.arange(len(train))) and np.array_equal(folds[0].val, np.arange(len(train), n_pool))
        return
    if strategy == "resplit":
        assert len(folds) == 1 and len(folds[0].val) == round(0.2 * n_pool)
    if strategy == "kfold":
        assert len(folds) == 5
        assert np.array_equal(np.sort(np.concatenate([f.val for f in folds])), np.arange(n_pool)), "val folds partition the pool"
    for fold in folds:
        assert len(fold.train) + len(fold.val) == n_pool
        expected = pool.mean(axis=0) * len(fold.val)
        got = pool[fold.val].sum(axis=0)
        # stratified: each label's positives in a validation set within 1 of their share (binary),
        # within 3 or 15 % for the multi-label combinations (a random split misses by ~2 standard deviations)
        tolerance = 1.0 if kind == "binary" else np.maximum(3.0, 0.15 * expected)
        assert np.all(np.abs(got - expected) <= tolerance), (got, expected)


@pytest.mark.parametrize("strategy", ["resplit", "kfold"])
def test_splits_depend_only_on_the_split_seed(strategy: str) -> None:
    task, ce = get_task("breastmnist"), METHODS.get("ce")
    train, val = _labels("binary")
    base = resolve(task, ce, {"val_strategy": strategy})
    tuned = resolve(task, ce, {"val_strategy": strategy, "lr": "0.01", "epochs": "7", "augment": "strong", "ema": "true", "batch_size": "32"})
    assert [f.digest() for f in folds_for(base, train, val)] == [f.digest() for f in folds_for(tuned, train, val)]
    reseeded = resolve(task, ce, {"val_strategy": strategy, "split_seed": "1"})
    assert [f.digest() for f in folds_for(base, train, val)] != [f.digest() for f in folds_for(reseeded, train, val)]


def test_impossible_split_is_a_clear_error() -> None:
    with pytest.raises(BenchError, match="kfold"):
        make_folds("kfold", np.array([[1], [0]]), np.array([[1]]), folds=5)


def _spec(root: Path, out: Path, **overrides: object) -> RunSpec:
    return RunSpec(task="breastmnist", method="ce", overrides=dict(overrides), data_root=str(root), out=str(out), device="cpu", verify_md5=False)


def _test_split(root: Path) -> DeviceSplit:
    data = load_arrays(get_task("breastmnist"), root, verify_md5=False, splits=("test",))
    return DeviceSplit(data.images("test"), data.labels("test"), torch.device("cpu"))


def test_kfold_run_ensembles_its_models_and_reports_out_of_fold_auc(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[tuple[str, ...]] = []
    real_load = runner.load_arrays

    def spy(*args, **kwargs):
        requested.append(tuple(kwargs.get("splits", ())))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(runner, "load_arrays", spy)
    result, run_dir = run(_spec(synthetic_root, tmp_path / "k", epochs=1, val_strategy="kfold", folds=2))
    assert requested == [("train", "val"), ("test",)], "the test split is read once, after training"
    data = load_arrays(get_task("breastmnist"), synthetic_root, verify_md5=False, splits=("train", "val"))
    pool = np.concatenate([data.labels("train"), data.labels("val")])
    labels, oof = load_predictions(run_dir / "predictions_val.npz")
    assert np.array_equal(labels, pool), "out-of-fold predictions cover every train+val row, no test row"
    assert result["val"]["auc"] == pytest.approx(metrics.evaluate(pool, oof)["auc"])
    assert len(result["folds"]) == 2 and result["best_epoch"] is None and len(set(result["val_digest"])) == 2
    # the test prediction is the mean of the two models' logits, recomputed from the saved weights
    test = _test_split(synthetic_root)
    logits = []
    for k in (1, 2):
        model = build_model("resnet18_28", 1, 1)
        model.load_state_dict(load_weights(run_dir / f"model_fold{k}.safetensors"))
        logits.append(predict(model, test))
    assert np.allclose(load_predictions(run_dir / "predictions_test.npz")[1], np.mean(logits, axis=0), atol=1e-5)
    assert result["test"]["auc"] == pytest.approx(metrics.evaluate(test.labels_np, np.mean(logits, axis=0))["auc"])
    assert {r["fold"] for r in read_jsonl(run_dir / "metrics.jsonl")} == {"fold1", "fold2"}
    assert result["train_val_gap"] == pytest.approx(np.mean([f["train"]["auc"] for f in result["folds"]]) - result["val"]["auc"])


def test_refit_retrains_on_train_and_val_for_the_selected_epochs(synthetic_root: Path, tmp_path: Path) -> None:
    result, run_dir = run(_spec(synthetic_root, tmp_path / "r", epochs=2, val_strategy="refit"))
    records = read_jsonl(run_dir / "metrics.jsonl")
    selected = result["best_epoch"]
    assert [r["phase"] for r in records] == ["select"] * 2 + ["refit"] * selected
    assert result["refit"]["epochs"] == selected and result["refit"]["rows"] == 96 + 32
    assert result["epochs_run"] == 2 + selected
    model = build_model("resnet18_28", 1, 1)
    model.load_state_dict(load_weights(run_dir / "model.safetensors"))
    test = _test_split(synthetic_root)
    assert np.allclose(predict(model, test), load_predictions(run_dir / "predictions_test.npz")[1], atol=1e-5)
    assert result["train"]["auc"] == pytest.approx(records[selected - 1]["train/auc"])


def test_resplit_run_validates_on_the_reconstructed_rows(synthetic_root: Path, tmp_path: Path) -> None:
    result, run_dir = run(_spec(synthetic_root, tmp_path / "s", epochs=1, val_strategy="resplit", val_fraction=0.25))
    labels, logits = load_predictions(run_dir / "predictions_val.npz")
    assert len(labels) == 32  # 25 % of the 128 train+val rows
    assert result["val"]["auc"] == pytest.approx(metrics.evaluate(labels, logits)["auc"])


def test_cli_splits_prints_sizes_and_shares(synthetic_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = load_arrays(get_task("breastmnist"), synthetic_root, verify_md5=False)
    assert main(["splits", "--task", "breastmnist", "--data-root", str(synthetic_root), "--no-verify"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for split in ("train", "val", "test"):
        row = next(line.split() for line in lines if line.startswith(split + " "))
        labels = data.labels(split)
        assert row[1] == str(len(labels)) and row[2] == f"{labels.mean():.3f}"
    assert main(["splits", "--task", "breastmnist", "--data-root", str(synthetic_root), "--no-verify", "--set", "val_strategy=kfold", "--set", "folds=4"]) == 0
    out = capsys.readouterr().out
    assert "fold4 val" in out and "fold5" not in out
    assert main(["splits", "--task", "chestmnist", "--data-root", str(synthetic_root), "--no-verify"]) == 0
    header = capsys.readouterr().out.splitlines()[1]
    assert "0:atelectasi" in header and "13:hernia" in header
    assert main(["splits", "--task", "breastmnist", "--data-root", str(synthetic_root), "--no-verify", "--set", "lr=1"]) == 2
    assert "unknown split setting 'lr'" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_prevalence_table(real_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = {"breastmnist": [("train", "546", "0.731"), ("val", "78", "0.731"), ("test", "156", "0.731")], "pneumoniamnist": [("train", "4708", "0.742"), ("test", "624", "0.625")]}
    for flag, rows in expected.items():
        assert main(["splits", "--task", flag, "--data-root", str(real_root)]) == 0
        lines = capsys.readouterr().out.splitlines()
        for split, n, share in rows:
            assert next(line.split() for line in lines if line.startswith(split + " "))[1:3] == [n, share]
