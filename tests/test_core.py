"""The harness core: tasks, model, metrics, configuration, runs and the CLI's error paths."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from benchmark import metrics
from benchmark.cli import main
from benchmark.config import SHARED_PARAMS, config_hash, resolve
from benchmark.errors import BenchError
from benchmark.methods import METHODS
from benchmark.models import build_model
from benchmark.runner import RunSpec, run
from benchmark.store import git_commit, load_predictions, load_weights, read_jsonl
from benchmark.tasks import TASKS, get_task, load_arrays

ALL_TASKS = TASKS.names()


def test_seven_tasks_match_medmnist_info() -> None:
    from medmnist import INFO

    assert ALL_TASKS == ["breastmnist", "pneumoniamnist", "chestmnist", "nodulemnist3d", "adrenalmnist3d", "vesselmnist3d", "synapsemnist3d"]
    for flag in ALL_TASKS:
        task, info = get_task(flag), INFO[flag]
        assert task.md5 == info["MD5"]
        assert task.url == info["url"]
        assert task.n_labels == len(info["label"]) if task.multilabel else task.n_labels == 1
        assert task.splits == info["n_samples"]
        assert task.channels == info["n_channels"]
        assert 0.5 < task.reference["auc"] < 1 and 0.5 < task.reference["acc"] < 1


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(BenchError, match="breastmnist"):
        get_task("mnist")


@pytest.mark.parametrize(("architecture", "channels", "expected"), [("resnet18_28", 1, 11_168_706), ("resnet18_28", 3, 11_169_858)])
def test_resnet18_28_parameter_count_matches_reference(architecture: str, channels: int, expected: int) -> None:
    model = build_model(architecture, channels, 2)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("architecture", ["resnet18_28", "resnet18_3d"])
def test_models_use_pytorchs_default_init_like_the_reference_code(architecture: str) -> None:
    # kaiming_uniform(a=sqrt(5)) bounds every weight by 1 / sqrt(fan_in); MONAI's own
    # kaiming_normal(fan_out) breaks that bound in every 64 -> 64 conv
    model = build_model(architecture, 1, 1)
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear))]
    assert len(convs) >= 21
    for conv in convs:
        fan_in = conv.weight[0].numel()
        assert conv.weight.abs().max() <= 1 / fan_in**0.5 + 1e-7
        assert conv.weight.std() > 0.5 / (3 * fan_in) ** 0.5  # uniform(-b, b) has sd b / sqrt(3)
    assert model.fc.bias.abs().max() > 0  # drawn, not zeroed


def test_resnet18_architecture_details() -> None:
    model2d, model3d = build_model("resnet18_28", 1, 1), build_model("resnet18_3d", 1, 1)
    assert model2d.conv1.kernel_size == (3, 3) and model2d.conv1.stride == (1, 1)
    assert model3d.conv1.kernel_size == (3, 3, 3)
    shortcuts = [m for n, m in model2d.named_modules() if n.endswith("downsample.0")]
    assert len(shortcuts) == 3 and all(c.bias is None and c.kernel_size == (1, 1) for c in shortcuts)
    # 3D: every 2D layer has its 3D counterpart, so the parameter count is the 2D one with 3x3x3 kernels
    n3d = sum(p.numel() for p in model3d.parameters())
    assert n3d > 2.9 * sum(p.numel() for p in model2d.parameters())
    with torch.no_grad():
        assert model2d.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 1)
        assert model3d.eval()(torch.zeros(2, 1, 28, 28, 28)).shape == (2, 1)
        # 512 channels at 4x4 before the pool, as in the reference (no max-pool, strides 1-2-2-2)
        feats = model2d.layer4(model2d.layer3(model2d.layer2(model2d.layer1(model2d.act(model2d.bn1(model2d.conv1(torch.zeros(1, 1, 28, 28))))))))
        assert feats.shape == (1, 512, 4, 4)


def test_metrics_against_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(200, 1))
    s = rng.random((200, 1))
    assert metrics.auc(y, s) == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    assert metrics.acc(y, s) == pytest.approx(np.mean((s[:, 0] > 0.5) == y[:, 0]))
    ym = rng.integers(0, 2, size=(200, 14))
    sm = rng.random((200, 14))
    assert metrics.auc(ym, sm) == pytest.approx(np.mean([roc_auc_score(ym[:, j], sm[:, j]) for j in range(14)]))
    assert metrics.acc(ym, sm) == pytest.approx(np.mean([np.mean((sm[:, j] > 0.5) == ym[:, j]) for j in range(14)]))
    logits = rng.normal(size=(50, 3)) * 30
    assert np.allclose(metrics.sigmoid(logits), 1 / (1 + np.exp(-logits)))


def test_config_layers_and_validation() -> None:
    ce = METHODS.get("ce")
    assert resolve(get_task("breastmnist"), ce)["batch_size"] == 128
    assert resolve(get_task("adrenalmnist3d"), ce)["batch_size"] == 32
    cfg = resolve(get_task("adrenalmnist3d"), ce, {"batch_size": "64", "lr": "0.01", "as_rgb": "true"})
    assert cfg["batch_size"] == 64 and cfg["lr"] == 0.01 and cfg["as_rgb"] is True
    with pytest.raises(BenchError, match="unknown setting 'lrr'"):
        resolve(get_task("breastmnist"), ce, {"lrr": "0.1"})
    with pytest.raises(BenchError, match="invalid value for lr"):
        resolve(get_task("breastmnist"), ce, {"lr": "fast"})
    with pytest.raises(BenchError, match="invalid value for lr"):
        resolve(get_task("breastmnist"), ce, {"lr": "-1"})


@pytest.mark.parametrize("flag", ALL_TASKS)
def test_every_task_trains_one_epoch(flag: str, synthetic_root: Path, tmp_path: Path) -> None:
    spec = RunSpec(task=flag, method="ce", overrides={"epochs": 1}, data_root=str(synthetic_root), runs_root=str(tmp_path), device="cpu", verify_md5=False)
    result, run_dir = run(spec)
    for name in ("config.json", "environment.json", "metrics.jsonl", "result.json", "model.safetensors", "predictions_test.npz"):
        assert (run_dir / name).is_file(), name
    on_disk = json.loads((run_dir / "result.json").read_text())
    for key in ("task", "method", "seed", "config", "best_epoch", "val", "test", "train_seconds", "images_per_second"):
        assert key in on_disk
    assert 0.0 <= on_disk["test"]["auc"] <= 1.0 and 0.0 <= on_disk["val"]["acc"] <= 1.0
    labels, logits = load_predictions(run_dir / "predictions_test.npz")
    task = get_task(flag)
    assert logits.shape == (len(labels), task.n_labels) and len(labels) > 0
    assert on_disk["test"]["auc"] == pytest.approx(metrics.evaluate(labels, logits)["auc"])
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["data_md5"] and env["data_md5_verified"] is False and "torch" in env["packages"]
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 1


def test_same_seed_same_metrics_on_cpu(synthetic_root: Path, tmp_path: Path) -> None:
    def once(out: str) -> dict:
        spec = RunSpec(task="breastmnist", method="ce", seed=3, overrides={"epochs": 2}, data_root=str(synthetic_root), out=str(tmp_path / out), device="cpu", verify_md5=False)
        return run(spec)[0]

    a, b = once("a"), once("b")
    assert a["test"] == b["test"] and a["val"] == b["val"]
    assert read_jsonl(tmp_path / "a" / "metrics.jsonl")[-1]["train_loss"] == read_jsonl(tmp_path / "b" / "metrics.jsonl")[-1]["train_loss"]


def test_test_split_is_evaluated_with_the_selected_epochs_weights(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The val AUC sequence is forced to peak at epoch 2 of 3; the stored weights and test predictions must be epoch 2's."""
    from benchmark import trainer

    sequence = iter([0.6, 0.9, 0.7])
    real_evaluate = metrics.evaluate
    from types import SimpleNamespace

    # only the trainer's view of the metrics module is replaced; the final test evaluation is real
    # (the validation split is the one with 32 rows; the trainer also evaluates the 96 training rows)
    monkeypatch.setattr(trainer, "metrics", SimpleNamespace(evaluate=lambda y, z: {**real_evaluate(y, z), "auc": next(sequence)} if len(y) == 32 else real_evaluate(y, z)))
    states: list[dict] = []
    snapshot = lambda record, model: states.append({k: v.detach().clone() for k, v in model.state_dict().items()})  # noqa: E731
    spec = RunSpec(task="breastmnist", method="ce", overrides={"epochs": 3}, data_root=str(synthetic_root), out=str(tmp_path / "r"), device="cpu", verify_md5=False)
    result, run_dir = run(spec, callbacks=[snapshot])
    assert result["best_epoch"] == 2
    saved = load_weights(run_dir / "model.safetensors")
    assert all(torch.equal(saved[k], states[1][k]) for k in saved)
    assert not all(torch.equal(saved[k], states[2][k]) for k in saved)
    # recompute the test predictions from the saved weights
    from benchmark.data import DeviceSplit
    from benchmark.trainer import predict

    model = build_model("resnet18_28", 1, 1)
    model.load_state_dict(saved)
    data = load_arrays(get_task("breastmnist"), synthetic_root, verify_md5=False, splits=("test",))
    logits = predict(model, DeviceSplit(data.images("test"), data.labels("test"), torch.device("cpu")))
    assert np.allclose(logits, load_predictions(run_dir / "predictions_test.npz")[1], atol=1e-5)


def test_a_run_that_dies_leaves_nothing_behind(synthetic_root: Path, tmp_path: Path) -> None:
    def boom(record, model):
        raise RuntimeError("killed")

    spec = RunSpec(task="breastmnist", method="ce", overrides={"epochs": 2}, data_root=str(synthetic_root), out=str(tmp_path / "r"), device="cpu", verify_md5=False)
    with pytest.raises(RuntimeError):
        run(spec, callbacks=[boom])
    assert list(tmp_path.iterdir()) == []


def test_finished_run_is_reused_and_force_retrains(synthetic_root: Path, tmp_path: Path) -> None:
    spec = RunSpec(task="breastmnist", method="ce", overrides={"epochs": 1}, data_root=str(synthetic_root), out=str(tmp_path / "r"), device="cpu", verify_md5=False)
    first, _ = run(spec)
    again, _ = run(spec)
    assert again == json.loads(json.dumps(first))  # read back from disk, not retrained
    spec.force = True
    forced, run_dir = run(spec)
    assert forced["wall_seconds"] != first["wall_seconds"] and (run_dir / "result.json").is_file()


# --- the CLI's error paths: clear message, non-zero exit, no traceback, nothing written -------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("harness", ["", "harness/"])  # the checkout itself, or a folder of a larger one
def test_records_written_into_the_checkout_do_not_make_the_commit_dirty(tmp_path: Path, harness: str) -> None:
    files = {"benchmark/code.py": "x = 1\n", "studies/s.toml": "tasks = []\n", "studies/s.journal": "{}\n", "leaderboards/t.json": "{}\n", "reports/README.md": "r\n"}
    root = tmp_path / harness
    for name, text in {**{harness + k: v for k, v in files.items()}, "outside.txt": "o\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(root) == head
    for record in ("studies/s.journal", "leaderboards/t.json", "reports/README.md"):
        (root / record).write_text("changed\n")
    assert git_commit(root) == head, "a study writing its records"
    for code in (harness + "studies/s.toml", harness + "benchmark/code.py", "outside.txt"):
        (tmp_path / code).write_text("changed\n")
        assert git_commit(root) == head + "-dirty", code
        subprocess.run(["git", "checkout", "-q", "--", code], cwd=tmp_path, check=True)


def test_cli_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _cli(capsys, "run", "--task", "breastmnist", "--data-root", str(tmp_path / "nowhere"), "--runs", str(tmp_path / "runs"), "--quiet")
    assert code == 2 and "breastmnist.npz not found" in err and "750601b1f35ba3300ea97c75c52ff8f6" in err and "zenodo" in err
    assert not (tmp_path / "runs").exists()


def test_cli_corrupt_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "breastmnist.npz").write_bytes(b"not an npz at all")
    code, err = _cli(capsys, "run", "--task", "breastmnist", "--data-root", str(tmp_path), "--runs", str(tmp_path / "runs"), "--quiet")
    assert code == 2 and "MD5" in err and "corrupt" in err
    assert not (tmp_path / "runs").exists()
    code, err = _cli(capsys, "run", "--task", "breastmnist", "--data-root", str(tmp_path), "--runs", str(tmp_path / "runs"), "--quiet", "--no-verify")
    assert code == 2 and "could not be read" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "mnist"], "unknown task 'mnist'"),
        (["--task", "breastmnist", "--method", "svm"], "unknown method 'svm'"),
        (["--task", "breastmnist", "--set", "lrr=1"], "unknown setting 'lrr'"),
        (["--task", "breastmnist", "--set", "lr=abc"], "invalid value for lr"),
        (["--task", "breastmnist", "--set", "batch_size=7"], "invalid value for batch_size"),
        (["--task", "breastmnist", "--set", "novalue"], "key=value"),
        (["--task", "breastmnist", "--epochs", "0"], "argument --epochs: must be from 1 to"),
        (["--task", "breastmnist", "--device", "tpu"], "device"),
    ],
)
def test_cli_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path, synthetic_root: Path, argv: list[str], message: str) -> None:
    code, err = _cli(capsys, "run", *argv, "--data-root", str(synthetic_root), "--no-verify", "--runs", str(tmp_path / "runs"), "--quiet")
    assert code == 2 and message in err
    assert not (tmp_path / "runs").exists()


def test_cli_refuses_to_overwrite_a_foreign_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path, synthetic_root: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    code, err = _cli(capsys, "run", "--task", "breastmnist", "--epochs", "1", "--data-root", str(synthetic_root), "--no-verify", "--out", str(tmp_path / "mine"), "--quiet")
    assert code == 2 and "not a finished run" in err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_cli_run_prints_summary_with_reference(capsys: pytest.CaptureFixture[str], tmp_path: Path, synthetic_root: Path) -> None:
    code = main(["run", "--task", "breastmnist", "--epochs", "1", "--data-root", str(synthetic_root), "--no-verify", "--out", str(tmp_path / "r"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "test AUC" in out and "0.901" in out and str(tmp_path / "r") in out


def test_cli_tasks_and_methods(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ALL_TASKS) and "0.768" in out
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in METHODS)


@pytest.mark.realdata
def test_real_breastmnist_file_is_verified_and_trains(real_root: Path, tmp_path: Path) -> None:
    data = load_arrays(get_task("breastmnist"), real_root)
    assert data.md5_verified and data.images("train").shape == (546, 28, 28)
    assert data.labels("train").mean() == pytest.approx(0.731, abs=0.001)
    result, _ = run(RunSpec(task="breastmnist", method="ce", overrides={"epochs": 1}, data_root=str(real_root), out=str(tmp_path / "r"), device="cpu"))
    assert result["data_md5_verified"] is True and 0 <= result["test"]["auc"] <= 1


def test_a_setting_added_later_keeps_earlier_run_ids_at_its_default() -> None:
    task, ce = get_task("breastmnist"), METHODS.get("ce")
    config = resolve(task, ce, {})
    added_later = [k for k, param in SHARED_PARAMS.items() if not param.hash_at_default]
    assert added_later  # track_train, at least
    before = {k: v for k, v in config.items() if k not in added_later}  # a config stored before the settings existed
    blob = json.dumps({"task": "breastmnist", "method": "ce", "seed": 0, "config": before}, sort_keys=True)
    assert config_hash("breastmnist", "ce", 0, config) == hashlib.sha256(blob.encode()).hexdigest()[:12]
    for key in added_later:
        changed = resolve(task, ce, {key: str(not config[key]).lower()})
        assert config_hash("breastmnist", "ce", 0, changed) != config_hash("breastmnist", "ce", 0, config)
