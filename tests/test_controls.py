"""Overfitting controls (EMA, SWA, early stopping, head dropout), the new settings, and train AUC in every record."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchmark import controls, metrics, trainer
from benchmark.cli import main
from benchmark.config import SHARED_PARAMS, resolve
from benchmark.controls import EmaAverage, SwaAverage, add_head_dropout, early_stopping
from benchmark.data import DeviceSplit, augment, splits
from benchmark.errors import BenchError
from benchmark.hparams import Bool, Choice
from benchmark.methods import METHODS
from benchmark.models import build_model
from benchmark.runner import RunSpec, run
from benchmark.store import load_predictions, load_weights, read_jsonl
from benchmark.tasks import get_task, load_arrays
from benchmark.trainer import StopTraining, predict

NEW_PARAMS = {**augment.PARAMS, **splits.PARAMS, **controls.PARAMS}
OFF = {"augment": "none", "mixup": 0.0, "cutmix": 0.0, "label_smoothing": 0.0, "val_strategy": "official", "ema": False, "swa": False, "patience": 0, "dropout": 0.0}


def _other_value(param) -> str:
    if isinstance(param, Bool):
        return str(not param.default).lower()
    if isinstance(param, Choice):
        return str(param.choices[-1])
    if getattr(param, "search", None):
        return str(param.search[1])
    return str(param.default + 1 if isinstance(param.default, int) else param.minimum)


@pytest.mark.parametrize("key", sorted(NEW_PARAMS))
def test_every_setting_is_shared_off_by_default_and_settable(key: str) -> None:
    assert SHARED_PARAMS[key] is NEW_PARAMS[key]
    task, ce = get_task("breastmnist"), METHODS.get("ce")
    default = resolve(task, ce)
    if key in OFF:
        assert default[key] == OFF[key]
    text = _other_value(NEW_PARAMS[key])
    changed = resolve(task, ce, {key: text})
    assert changed[key] == NEW_PARAMS[key].parse(text) != default[key]


def test_contradicting_controls_are_refused_before_anything_is_written(tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--task", "breastmnist", "--data-root", str(synthetic_root), "--no-verify", "--runs", str(tmp_path / "runs"), "--quiet"]
    assert main(argv + ["--set", "ema=true", "--set", "swa=true"]) == 2
    assert "ema and swa" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_head_dropout_keeps_the_architectures_weights_and_acts_only_in_training() -> None:
    torch.manual_seed(0)
    plain = build_model("resnet18_28", 1, 1)
    dropped = build_model("resnet18_28", 1, 1)
    dropped.load_state_dict(plain.state_dict())
    assert add_head_dropout(dropped, 0.0) is None
    add_head_dropout(dropped, 0.5)
    assert {k: v.shape for k, v in dropped.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), dropped.eval()(x))
        seen: dict[str, torch.Tensor] = {}
        plain.fc.register_forward_pre_hook(lambda module, args: seen.update(plain=args[0]))
        dropped.fc.register_forward_pre_hook(lambda module, args: seen.update(dropped=args[0]))
        plain.train()(x)
        dropped.train()(x)
    # the head saw the same features with about half of them zeroed and the rest scaled by 1 / (1 - p)
    live = seen["plain"] != 0
    kept = seen["dropped"] != 0
    assert torch.allclose(seen["dropped"][kept], 2 * seen["plain"][kept])
    assert 0.4 < float((~kept & live).sum() / live.sum()) < 0.6


def test_ema_follows_timms_warmup_schedule() -> None:
    """EMA weights against the moving average computed here: e_t = d_t e + (1 - d_t) w_t, d_t = min(decay, 1 - t^-2/3)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    average = EmaAverage(model, decay=0.6)
    expected = model.weight.detach().clone()
    for step in range(1, 8):
        with torch.no_grad():
            model.weight.copy_(torch.randn(1, 3))
        average.update(model)
        warm = step - 1  # timm counts from the first update after the copy
        d = 0.0 if warm <= 0 else min(0.6, 1 - (1 + warm) ** (-2 / 3))
        expected = d * expected + (1 - d) * model.weight.detach()
    evaluated, eligible = average.evaluated(model, 1)
    assert eligible and torch.allclose(evaluated.weight, expected, atol=1e-6)


def test_swa_averages_the_last_epochs_and_recomputes_batchnorm() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    data = torch.randn(16, 1, 6, 6)
    model(data)
    average = SwaAverage(model, epochs=4, swa_epochs=2, bn_batches=lambda: [data])
    snapshots = []
    for epoch in range(1, 5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        evaluated, eligible = average.evaluated(model, epoch)
        assert eligible == (epoch >= 3)
        if epoch >= 3:
            snapshots.append([p.detach().clone() for p in model.parameters()])
    for p, *window in zip(evaluated.parameters(), *snapshots):
        assert torch.allclose(p, torch.stack(window).mean(0), atol=1e-6)
    with torch.no_grad():
        conv_out = evaluated[0](data)
    assert torch.allclose(evaluated[1].running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-5)


def test_early_stopping_waits_for_patience_epochs() -> None:
    stop = early_stopping(2)
    stop({"epoch": 5, "best_epoch": 0}, None)  # nothing selectable yet (before an SWA window)
    stop({"epoch": 3, "best_epoch": 2}, None)
    with pytest.raises(StopTraining):
        stop({"epoch": 4, "best_epoch": 2}, None)


def _spec(root: Path, out: Path, **overrides: object) -> RunSpec:
    return RunSpec(task="breastmnist", method="ce", overrides=dict(overrides), data_root=str(root), out=str(out), device="cpu", verify_md5=False)


def _reload(run_dir: Path, root: Path) -> tuple[torch.nn.Module, dict[str, DeviceSplit]]:
    model = build_model("resnet18_28", 1, 1)
    model.load_state_dict(load_weights(run_dir / "model.safetensors"))
    data = load_arrays(get_task("breastmnist"), root, verify_md5=False, splits=("train", "val"))
    return model, {s: DeviceSplit(data.images(s), data.labels(s), torch.device("cpu")) for s in ("train", "val")}


@pytest.fixture(scope="module")
def plain_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """A 2-epoch run without controls, shared by the tests that compare against it."""
    return run(_spec(synthetic_root, tmp_path_factory.mktemp("plain") / "r", epochs=2))


@pytest.mark.parametrize("control", [{}, {"ema": True}, {"swa": True, "swa_epochs": 1}])
def test_kept_weights_reproduce_the_reported_train_and_val_auc(control: dict, plain_run: tuple[dict, Path], synthetic_root: Path, tmp_path: Path) -> None:
    result, run_dir = run(_spec(synthetic_root, tmp_path / "r", epochs=2, **control)) if control else plain_run
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert all({"train/auc", "train/acc", "val/auc", "val/acc"} <= set(r) for r in records)
    model, split = _reload(run_dir, synthetic_root)
    for name in ("train", "val"):
        assert result[name]["auc"] == pytest.approx(metrics.evaluate(split[name].labels_np, predict(model, split[name]))["auc"], abs=1e-6)
    assert result["train_val_gap"] == pytest.approx(result["train"]["auc"] - result["val"]["auc"])
    best = records[result["best_epoch"] - 1]
    assert best["train/auc"] == pytest.approx(result["train"]["auc"]) and best["val/auc"] == pytest.approx(result["val"]["auc"])
    labels, logits = load_predictions(run_dir / "predictions_val.npz")
    assert result["val"]["auc"] == pytest.approx(metrics.evaluate(labels, logits)["auc"])
    if control.get("swa"):  # only the last epoch is in the window: nothing selectable before it
        assert records[0]["best_epoch"] == 0 and result["best_epoch"] == 2
    if control:  # the kept average is not the raw trajectory's weights (same seed, same batches)
        averaged, raw = load_weights(run_dir / "model.safetensors"), load_weights(plain_run[1] / "model.safetensors")
        assert not all(torch.equal(averaged[k], raw[k]) for k in raw)


def test_track_train_false_skips_the_training_split_pass(plain_run: tuple[dict, Path], synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluated_rows: list[int] = []
    real = metrics.evaluate
    monkeypatch.setattr(trainer, "metrics", SimpleNamespace(evaluate=lambda y, z: evaluated_rows.append(len(y)) or real(y, z)))
    result, run_dir = run(_spec(synthetic_root, tmp_path / "n", epochs=2, track_train=False))
    assert evaluated_rows == [32, 32]  # the validation split (32 rows) each epoch, never the training split (96)
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert all(not any(k.startswith("train/") for k in r) and "val/auc" in r for r in records)
    assert result["train"] == {} and result["train_val_gap"] is None
    # the pass only measures: the same seed trains the same weights, and the run id says which was asked
    assert result["val"]["auc"] == pytest.approx(plain_run[0]["val"]["auc"]) and result["test"]["auc"] == pytest.approx(plain_run[0]["test"]["auc"])
    assert result["config_hash"] != plain_run[0]["config_hash"]
    assert main(["report", "--runs", str(tmp_path), "-o", str(tmp_path / "rep")]) == 0


def test_early_stopping_run_stops_patience_epochs_after_the_best(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sequence = iter([0.9, 0.6, 0.95])
    real = metrics.evaluate
    # the trainer's validation AUC (val has 32 rows, train 96) is forced to fall after epoch 1
    monkeypatch.setattr(trainer, "metrics", SimpleNamespace(evaluate=lambda y, z: {**real(y, z), "auc": next(sequence)} if len(y) == 32 else real(y, z)))
    result, run_dir = run(_spec(synthetic_root, tmp_path / "p", epochs=4, patience=1))
    assert result["stopped_early"] and result["epochs_run"] == 2 and result["best_epoch"] == 1
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 2


def test_dropout_and_mixup_run_end_to_end_with_the_plain_weight_names(synthetic_root: Path, tmp_path: Path) -> None:
    result, run_dir = run(_spec(synthetic_root, tmp_path / "d", epochs=1, dropout=0.5, mixup=0.2, label_smoothing=0.1, augment="crop"))
    saved = load_weights(run_dir / "model.safetensors")
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in build_model("resnet18_28", 1, 1).state_dict().items()}
    assert 0.0 <= result["test"]["auc"] <= 1.0


def test_3d_augmentation_and_ema_run(synthetic_root: Path, tmp_path: Path) -> None:
    result, run_dir = run(RunSpec(task="adrenalmnist3d", method="ce", overrides={"epochs": 1, "augment": "flip", "ema": True}, data_root=str(synthetic_root), out=str(tmp_path / "v"), device="cpu", verify_md5=False))
    assert result["config"]["augment"] == "flip" and "train/auc" in read_jsonl(run_dir / "metrics.jsonl")[0]


def test_bad_control_values_are_clear_errors() -> None:
    task, ce = get_task("breastmnist"), METHODS.get("ce")
    for key, value in [("dropout", "1.5"), ("ema_decay", "2"), ("folds", "1"), ("val_fraction", "0.9"), ("val_strategy", "holdout"), ("patience", "-1")]:
        with pytest.raises(BenchError, match=f"invalid value for {key}"):
            resolve(task, ce, {key: value})
    with pytest.raises(BenchError, match="ema and swa"):
        controls.check_controls({"ema": True, "swa": True})
