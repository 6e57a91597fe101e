"""`bench throughput`, the official-pipeline baseline it times against, and the precision / compile settings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from benchmark import metrics, reference_pipeline, trainer
from benchmark.cli import main
from benchmark.config import resolve
from benchmark.data import DeviceSplit
from benchmark.errors import BenchError
from benchmark.methods import METHODS, TrainInfo
from benchmark.models import build_model
from benchmark.synthetic import write_synthetic
from benchmark.tasks import get_task, load_arrays
from benchmark.trainer import PARAMS, autocast, native_bf16_cpu, predict, prepare_model

TOP_KEYS = {
    "task", "method", "device", "config", "n_train", "n_val", "steps_per_window", "steps_per_epoch",
    "window_is_full_epoch", "timed_rounds", "warmup_rounds", "harness", "reference",
    "train_speedup", "eval_speedup", "epoch_speedup", "epoch_speedup_train_val", "note",
}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Very small synthetic files: a 3D forward pass on CPU is slow, so four volumes per split."""
    root = tmp_path_factory.mktemp("tiny")
    write_synthetic(get_task("breastmnist"), root)
    write_synthetic(get_task("chestmnist"), root, sizes={"train": 40, "val": 16, "test": 16})
    write_synthetic(get_task("adrenalmnist3d"), root, sizes={"train": 4, "val": 4, "test": 4})
    return root


def _run_cli(root: Path, out: Path, task: str, *extra: str) -> dict:
    argv = ["throughput", "--task", task, "--data-root", str(root), "--no-verify", "--repeats", "2", "--warmup", "0", "--json", str(out), *extra]
    assert main(argv) == 0
    return json.loads(out.read_text())


def _check_sane(result: dict, n_train: int, n_val: int, repeats: int) -> None:
    assert TOP_KEYS <= set(result)
    assert result["n_train"] == n_train and result["n_val"] == n_val
    h, r = result["harness"], result["reference"]
    assert len(h["windows"]) == repeats and len(r["windows"]) == repeats
    for pipeline in (h, r):
        for key in ("train_images_per_second", "eval_images_per_second", "epoch_seconds"):
            assert math.isfinite(pipeline[key]) and pipeline[key] > 0, key
        for window in pipeline["windows"]:
            assert window["train_seconds"] > 0 and window["eval_seconds"] > 0
            # each timed window trained on exactly the batches of the window
            assert 0 < window["train_images"] <= result["steps_per_window"] * result["config"]["batch_size"]
    # the derived figures follow from the raw windows as documented
    rates = sorted(w["train_images"] / w["train_seconds"] for w in h["windows"])
    assert h["train_images_per_second"] == pytest.approx(float(np.median(rates)))
    assert h["epoch_seconds"] == pytest.approx(n_train / h["train_images_per_second"] + h["epoch_end_seconds"])
    assert r["epoch_seconds_train_val"] == pytest.approx(n_train / r["train_images_per_second"] + r["val_pass_seconds"])
    assert r["epoch_seconds"] == pytest.approx(r["epoch_seconds_train_val"] + r["train_eval_pass_seconds"])
    assert r["epoch_seconds"] > r["epoch_seconds_train_val"]
    assert result["epoch_speedup"] == pytest.approx(r["epoch_seconds"] / h["epoch_seconds"])
    assert result["epoch_speedup_train_val"] == pytest.approx(r["epoch_seconds_train_val"] / h["epoch_seconds"])
    assert result["train_speedup"] == pytest.approx(h["train_images_per_second"] / r["train_images_per_second"])
    # how close to the limit: model FLOPs per image x images per second, over the matmul peak timed in the run
    assert result["train_flops_per_image"] > 0 and result["matmul_peak_flops"] > 0
    assert h["train_flops"] == pytest.approx(result["train_flops_per_image"] * h["train_images_per_second"])
    assert h["fraction_of_peak"] == pytest.approx(h["train_flops"] / result["matmul_peak_flops"])
    assert r["train_flops"] == pytest.approx(result["train_flops_per_image"] * r["train_images_per_second"])


def test_throughput_cli_2d_whole_epoch(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _run_cli(tiny_root, tmp_path / "t.json", "breastmnist", "--steps", "3")
    printed = capsys.readouterr().out
    assert "harness" in printed and "reference (official)" in printed and "speedup" in printed
    _check_sane(result, n_train=96, n_val=32, repeats=2)
    # 96 images at batch 128 are one step: --steps 3 is capped to the epoch, so every term is measured
    assert result["steps_per_epoch"] == 1 and result["steps_per_window"] == 1 and result["window_is_full_epoch"]
    assert result["reference"]["train_eval_pass_measured"]
    assert all("train_eval_seconds" in w for w in result["reference"]["windows"])
    assert all(w["train_images"] == 96 for w in result["harness"]["windows"] + result["reference"]["windows"])
    # "auto" is recorded as the precision it resolved to on this device, with the reason
    assert result["config"] == {"precision": "fp32", "memory_format": "auto", "compile": False, "track_train": True, "eval_fuse_bn": False, "batch_size": 128, "as_rgb": False}
    assert result["precision_reason"].startswith("fp32: auto on a CPU without native bf16")
    assert "track_train true" in printed


def test_throughput_without_train_tracking_says_so(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _run_cli(tiny_root, tmp_path / "t.json", "breastmnist", "--steps", "1", "--set", "track_train=false")
    printed = capsys.readouterr().out
    _check_sane(result, n_train=96, n_val=32, repeats=2)
    assert result["config"]["track_train"] is False
    assert "track_train false" in printed and "like for like with track_train=false" in printed


def test_throughput_cli_partial_epoch_multilabel_settings(tiny_root: Path, tmp_path: Path) -> None:
    result = _run_cli(
        tiny_root, tmp_path / "t.json", "chestmnist", "--steps", "1", "--set", "batch_size=16", "--set", "precision=bf16", "--set", "as_rgb=true"
    )
    _check_sane(result, n_train=40, n_val=16, repeats=2)
    assert result["steps_per_epoch"] == 3 and result["steps_per_window"] == 1 and not result["window_is_full_epoch"]
    # the training-split evaluation pass is then the measured evaluation rate applied to n_train
    ref = result["reference"]
    assert not ref["train_eval_pass_measured"]
    assert ref["train_eval_pass_seconds"] == pytest.approx(40 / ref["eval_images_per_second"])
    assert all(w["train_images"] == 16 for w in result["harness"]["windows"] + ref["windows"])
    assert result["config"]["precision"] == "bf16" and result["config"]["as_rgb"] is True


def test_throughput_cli_3d(tiny_root: Path, tmp_path: Path) -> None:
    result = _run_cli(tiny_root, tmp_path / "t.json", "adrenalmnist3d", "--steps", "1")
    _check_sane(result, n_train=4, n_val=4, repeats=2)
    assert result["architecture"] == "resnet18_3d" and result["config"]["batch_size"] == 32


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "argument --steps: must be from 1 to"),
        (["--repeats", "0"], "argument --repeats: must be from 1 to"),
        (["--set", "precision=fp16"], "auto, fp32, bf16"),
        (["--method", "nope"], "ce"),
    ],
)
def test_throughput_bad_input_is_a_clean_error(tiny_root: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code = main(["throughput", "--task", "breastmnist", "--data-root", str(tiny_root), "--no-verify", *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_throughput_json_to_a_folder_fails_before_timing(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["throughput", "--task", "breastmnist", "--data-root", str(tiny_root), "--no-verify", "--json", str(tmp_path)])
    assert code == 2
    assert "is a folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("as_rgb", [False, True])
def test_reference_dataset_is_medmnists_own(tiny_root: Path, as_rgb: bool) -> None:
    """The reference's per-sample items equal those of the medmnist package's dataset read from the file."""
    import medmnist

    task = get_task("breastmnist")
    data = load_arrays(task, tiny_root, verify_md5=False, splits=("train",))
    ours = reference_pipeline.official_dataset(data.images("train"), data.labels("train"), as_rgb=as_rgb)
    official = medmnist.BreastMNIST(
        split="train", root=str(tiny_root), transform=reference_pipeline.official_transform(2), as_rgb=as_rgb
    )
    split = DeviceSplit(data.images("train"), data.labels("train"), torch.device("cpu"), as_rgb=as_rgb)
    for i in (0, 1, 57):
        x, y = ours[i]
        x_off, y_off = official[i]
        assert torch.equal(x, x_off) and np.array_equal(y, y_off)
        assert x.shape == (3 if as_rgb else 1, 28, 28)
        # ToTensor + Normalize(0.5, 0.5) is the harness's batched x / 127.5 - 1
        assert torch.allclose(x, split.inputs(torch.tensor([i]))[0], atol=1e-6)


def test_reference_3d_items_are_official_scaling(tiny_root: Path) -> None:
    task = get_task("adrenalmnist3d")
    data = load_arrays(task, tiny_root, verify_md5=False, splits=("val",))
    dataset = reference_pipeline.official_dataset(data.images("val"), data.labels("val"))
    x, y = dataset[2]
    assert x.dtype == np.float32 and x.shape == (1, 28, 28, 28)
    np.testing.assert_allclose(x[0], data.images("val")[2] / 255.0, rtol=1e-6)
    assert y.tolist() == data.labels("val")[2].tolist()


def test_reference_evaluation_matches_harness_metrics(tiny_root: Path) -> None:
    task = get_task("chestmnist")
    data = load_arrays(task, tiny_root, verify_md5=False, splits=("val",))
    torch.manual_seed(0)
    model = build_model(task.architecture, 1, task.n_labels)
    split = DeviceSplit(data.images("val"), data.labels("val"), torch.device("cpu"))
    ours = metrics.evaluate(split.labels_np, predict(model, split, precision="fp32"))
    loader = reference_pipeline.eval_loader(reference_pipeline.official_dataset(data.images("val"), data.labels("val")), 5)
    theirs = reference_pipeline.evaluate(model, loader, split.labels_np, torch.device("cpu"))
    assert theirs["auc"] == pytest.approx(ours["auc"], abs=1e-6)
    assert theirs["acc"] == pytest.approx(ours["acc"], abs=1e-6)
    assert model.training  # evaluation puts the model back in training mode


def test_reference_trainer_steps_and_images(tiny_root: Path) -> None:
    task = get_task("breastmnist")
    data = load_arrays(task, tiny_root, verify_md5=False, splits=("train",))
    config = resolve(task, METHODS.get("ce"), {"batch_size": "32"})
    model = build_model(task.architecture, 1, 1)
    info = TrainInfo(96, 1, False, np.array([0.7]), 10, 3, torch.device("cpu"), data.labels("train"))
    method = METHODS.get("ce")(config, model, info)
    loader = reference_pipeline.train_loader(reference_pipeline.official_dataset(data.images("train"), data.labels("train")), 32, seed=0)
    trainer = reference_pipeline.ReferenceTrainer(model, method, loader, torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    assert trainer.train(max_steps=2)[:2] == (2, 64)
    steps, images, losses = trainer.train()
    assert (steps, images, len(losses)) == (3, 96, 3) and all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_precision_setting_is_declared_once_and_takes_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "precision" in PARAMS and "compile" in PARAMS
    task, ce = get_task("breastmnist"), METHODS.get("ce")
    assert resolve(task, ce)["precision"] == "auto"
    assert resolve(task, ce, {"precision": "bf16"})["precision"] == "bf16"
    with pytest.raises(BenchError, match="auto, fp32, bf16"):
        resolve(task, ce, {"precision": "half"})
    layer = torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)
    monkeypatch.setattr(trainer, "native_bf16_cpu", lambda: [])
    with autocast(torch.device("cpu")):
        assert layer(x).dtype == torch.float32  # auto is fp32 on a CPU without native bf16
    monkeypatch.setattr(trainer, "native_bf16_cpu", lambda: ["amx_bf16"])
    with autocast(torch.device("cpu")):
        assert layer(x).dtype == torch.bfloat16  # and bf16 on one with it
    with autocast(torch.device("cpu"), "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert layer(x).dtype == torch.float32


def test_predict_precision_changes_the_arithmetic(tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer, "native_bf16_cpu", lambda: [])  # auto is then fp32
    task = get_task("breastmnist")
    data = load_arrays(task, tiny_root, verify_md5=False, splits=("val",))
    torch.manual_seed(0)
    model = build_model(task.architecture, 1, 1)
    split = DeviceSplit(data.images("val"), data.labels("val"), torch.device("cpu"))
    fp32, auto, bf16 = (predict(model, split, precision=p) for p in ("fp32", "auto", "bf16"))
    assert fp32.dtype == bf16.dtype == np.float32
    np.testing.assert_array_equal(fp32, auto)
    assert not np.array_equal(fp32, bf16)
    np.testing.assert_allclose(bf16, fp32, atol=0.1 * (np.abs(fp32).max() + 1))


def test_prepare_model_compile_keeps_state_dict_keys() -> None:
    plain = build_model("resnet18_28", 1, 1)
    keys = list(plain.state_dict())
    compiled = prepare_model(build_model("resnet18_28", 1, 1), torch.device("cpu"), 2, compile=True)
    assert list(compiled.state_dict()) == keys
    assert not any(k.startswith("_orig_mod") for k in compiled.state_dict())


@pytest.mark.parametrize(
    ("memory_format", "dims", "expected"),
    [("auto", 2, True), ("channels_last", 2, True), ("contiguous", 2, False), ("auto", 3, True), ("channels_last", 3, True), ("contiguous", 3, False)],
)
def test_prepare_model_memory_format_on_cpu(memory_format: str, dims: int, expected: bool) -> None:
    model = prepare_model(build_model("resnet18_28" if dims == 2 else "resnet18_3d", 1, 1), torch.device("cpu"), dims, memory_format=memory_format)
    weight = model.layer1[0].conv1.weight  # 64 input channels: the two layouts differ
    assert weight.is_contiguous() != expected
    layout = torch.channels_last if dims == 2 else torch.channels_last_3d
    assert weight.is_contiguous(memory_format=layout) == expected


def test_auto_memory_format_keeps_3d_contiguous_on_cuda_only() -> None:
    assert trainer.channels_last("auto", torch.device("cuda"), 2) and not trainer.channels_last("auto", torch.device("cuda"), 3)
    assert trainer.channels_last("auto", torch.device("cpu"), 3) and not trainer.channels_last("contiguous", torch.device("cpu"), 2)


@pytest.mark.parametrize(("dims", "device", "expected"), [(2, "cpu", 128), (3, "cpu", 16), (2, "cuda", 1024), (3, "cuda", 128)])
def test_eval_batch_size_is_smaller_on_cpu(dims: int, device: str, expected: int) -> None:
    assert trainer.eval_batch_size(SimpleNamespace(dims=dims, device=torch.device(device))) == expected


def test_training_flops_are_the_convolutions_and_matmuls_counted_by_hand() -> None:
    from benchmark.flops import matmul_peak_flops, training_flops_per_image

    # conv 1 -> 2 channels, 3x3, padding 1, on 5x5: 5*5*2*9 multiply-adds; then linear 50 -> 3: 150.
    # backward: weight gradients of both (same counts), the input gradient of the linear layer only
    # (the conv's input needs none): 2 FLOPs per multiply-add
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(50, 3))
    conv, lin = 5 * 5 * 2 * 9, 50 * 3
    expected = 2 * (conv + lin) + 2 * (conv + lin) + 2 * lin
    weights = [p.detach().clone() for p in model.parameters()]
    assert training_flops_per_image(model, torch.randn(4, 1, 5, 5), "fp32") == expected
    assert all(torch.equal(a, b) and p.grad is None for a, b, p in zip(weights, model.parameters(), model.parameters()))
    assert matmul_peak_flops(torch.device("cpu"), "fp32", size=64, repeats=1) > 0


@pytest.mark.parametrize("native", [["avx512_bf16"], []])
def test_auto_precision_resolves_per_device_and_names_the_cpus_bf16(native: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer, "native_bf16_cpu", lambda: native)
    precision, reason = trainer.resolve_precision("auto", torch.device("cpu"))
    if native:  # bf16 where the CPU computes it natively, and the reason names the instruction set
        assert (precision, reason) == ("bf16", "bf16: auto on a CPU with native bf16 (avx512_bf16)")
    else:
        assert precision == "fp32" and "without native bf16" in reason
    # autocast follows the same rule for "auto"
    context = trainer.autocast(torch.device("cpu"), "auto")
    assert isinstance(context, torch.autocast) == bool(native)
    assert trainer.resolve_precision("auto", torch.device("cuda"))[0] == "bf16"
    assert trainer.resolve_precision("bf16", torch.device("cpu")) == ("bf16", "bf16: set explicitly")
    assert trainer.resolve_precision("fp32", torch.device("cuda"))[0] == "fp32"


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import builtins

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16 avx512_bf16\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(fake if path == "/proc/cpuinfo" else path, *a, **k))
    assert native_bf16_cpu() == ["avx512_bf16", "amx_bf16"]  # the real function (conftest patches trainer's)
    fake.write_text("flags\t\t: fpu sse2\n")
    assert native_bf16_cpu() == []


def test_a_run_is_never_reused_for_a_request_that_resolves_to_another_precision(tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.runner import RunSpec, run

    def spec(**overrides: Any) -> RunSpec:
        return RunSpec(task="breastmnist", method="ce", overrides={"epochs": 1, **overrides}, data_root=str(tiny_root),
                       runs_root=str(tmp_path / "runs"), device="cpu", verify_md5=False)

    monkeypatch.setattr(trainer, "native_bf16_cpu", lambda: [])  # a CPU without native bf16: auto is fp32
    _, auto_dir = run(spec())
    assert json.loads((auto_dir / "config.json").read_text())["precision"] == "fp32"
    assert json.loads((auto_dir / "environment.json").read_text())["precision"].startswith("fp32: auto on a CPU without native bf16")
    assert run(spec(precision="fp32"))[1] == auto_dir  # the same computation, the same run
    _, bf16_dir = run(spec(precision="bf16"))
    assert bf16_dir != auto_dir
    # on a CPU with native bf16, "auto" is bf16: the stored fp32 run must not be reused, it is the bf16 run's id
    monkeypatch.setattr(trainer, "native_bf16_cpu", lambda: ["avx512_bf16"])
    _, auto_bf16_dir = run(spec())
    assert auto_bf16_dir == bf16_dir
    assert json.loads((bf16_dir / "environment.json").read_text())["precision"] == "bf16: set explicitly"  # the stored run's own record


@pytest.mark.parametrize("arch", ["resnet18_28", "resnet18_3d"])
def test_batchnorm_folded_evaluation_equals_the_unfused_one(arch: str) -> None:
    torch.manual_seed(0)
    dims = 3 if arch.endswith("3d") else 2
    model = prepare_model(build_model(arch, 1, 1), torch.device("cpu"), dims)
    shape = (6, 28, 28, 28) if dims == 3 else (40, 28, 28)
    rng = np.random.default_rng(0)
    split = DeviceSplit(rng.integers(0, 255, shape, dtype=np.uint8), rng.integers(0, 2, (shape[0], 1)), torch.device("cpu"))
    model.train()
    with torch.no_grad():  # BatchNorm statistics away from their initial 0 / 1
        for _ in range(2):
            model(split.inputs(torch.arange(shape[0])))
    fused = trainer.fused_for_eval(model)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert model.training  # the model itself is untouched
    plain, folded = predict(model, split), predict(model, split, fuse_bn=True)
    assert np.allclose(folded, plain, rtol=1e-4, atol=1e-6) and not np.array_equal(folded, np.zeros_like(folded))
    assert np.allclose(predict(model, split, precision="bf16", fuse_bn=True), predict(model, split, precision="bf16"), rtol=0.05, atol=0.02)


def test_fit_with_folded_evaluation_reports_the_same_validation_auc(tiny_root: Path) -> None:
    data = load_arrays(get_task("breastmnist"), str(tiny_root), verify_md5=False, splits=("train", "val"))
    train = DeviceSplit(data.images("train"), data.labels("train"), torch.device("cpu"))
    val = DeviceSplit(data.images("val"), data.labels("val"), torch.device("cpu"))
    aucs = []
    for fuse in (False, True):
        torch.manual_seed(0)
        model = build_model("resnet18_28", 1, 1)
        info = TrainInfo(len(train), 1, False, np.array([0.5]), 2, 1, torch.device("cpu"), train.labels_np)
        method = METHODS.get("ce")(resolve(get_task("breastmnist"), METHODS.get("ce")), model, info)
        from benchmark.data import ShuffleSampler

        fitted = trainer.fit(model, method, train, val, ShuffleSampler(train.labels_np, 128, 0), 2, fuse_bn=fuse)
        aucs.append([r["val/auc"] for r in fitted.history] + [r["train/auc"] for r in fitted.history])
    assert aucs[0] == pytest.approx(aucs[1], abs=1e-9)
