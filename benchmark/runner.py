"""One training run end to end: task -> data -> model -> method -> trainer -> metrics -> run store.

`run()` is what `bench run` calls and what the tuner calls for each trial. The test split is
loaded only after training, once, for the final evaluation of the selected weights.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import metrics
from .config import config_hash, resolve
from .data import DeviceSplit
from .data.sampling import build_sampler
from .errors import BenchError
from .methods import METHODS, TrainInfo
from .models import build_model
from .store import StagedRun, append_jsonl, environment, is_done, read_json, save_predictions, save_weights, write_json
from .tasks import Task, get_task, load_arrays
from .trainer import Callback, fit, predict, prepare_model

DEFAULT_RUNS = Path("runs")


def resolve_device(name: str = "auto") -> torch.device:
    """Return the torch device for 'auto' (CUDA if available, else CPU), 'cpu' or 'cuda[:N]'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BenchError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda was asked for, but torch sees no CUDA device here")
    if device.type not in ("cpu", "cuda"):
        raise BenchError(f"unsupported device {name!r}; use auto, cpu or cuda")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and make CPU kernels deterministic."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@dataclass
class RunSpec:
    """Everything that defines a run, as given by the user."""

    task: str
    method: str
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    out: str | None = None
    runs_root: str | None = None
    device: str = "auto"
    verify_md5: bool = True
    force: bool = False
    # False for tuning trials: the test split is then never loaded and result["test"] is None
    evaluate_test: bool = True


def run_dir_for(spec: RunSpec, config: dict[str, Any]) -> Path:
    """Return the run directory: --out, else <runs>/<task>/<method>/<config-hash>."""
    if spec.out:
        return Path(spec.out)
    root = Path(spec.runs_root) if spec.runs_root else DEFAULT_RUNS
    return root / spec.task / spec.method / config_hash(spec.task, spec.method, spec.seed, config)


def positive_prior(labels: np.ndarray) -> np.ndarray:
    """Return the positive share of each label column, as float64."""
    return np.asarray(labels, dtype=np.float64).reshape(len(labels), -1).mean(axis=0)


def run(
    spec: RunSpec,
    *,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    progress: Callable[[Task, dict[str, Any]], Callback] | None = None,
) -> tuple[dict[str, Any], Path]:
    """Train and evaluate one configuration; return (result, run directory).

    A finished run with the same configuration is reused, not retrained, unless `spec.force`.
    """
    task = get_task(spec.task)
    method_cls = METHODS.get(spec.method)
    config = resolve(task, method_cls, spec.overrides)
    final_dir = run_dir_for(spec, config)
    if is_done(final_dir) and not spec.force:
        return read_json(final_dir / "result.json"), final_dir
    if final_dir.is_file() or (final_dir.is_dir() and any(final_dir.iterdir()) and not is_done(final_dir)):
        # never replace a folder that is not one of our finished runs: it may be the user's
        raise BenchError(f"{final_dir} exists and is not a finished run directory; choose another --out")
    device = resolve_device(spec.device)
    data = load_arrays(task, spec.data_root, verify_md5=spec.verify_md5, splits=("train", "val"))

    seed_everything(spec.seed)
    staged = StagedRun(final_dir)
    try:
        result = _train_and_evaluate(spec, task, method_cls, config, data, device, staged.path, callbacks, progress)
        final = staged.commit()
    except BaseException:
        staged.abort()
        raise
    return result, final


def _train_and_evaluate(spec, task, method_cls, config, data, device, out: Path, callbacks, progress) -> dict[str, Any]:
    started = time.perf_counter()
    full_config = {"task": task.flag, "method": method_cls.name, "seed": spec.seed, **config}
    write_json(out / "config.json", full_config)
    write_json(out / "environment.json", environment(device, data.path, data.md5, data.md5_verified))

    train = DeviceSplit(data.images("train"), data.labels("train"), device, as_rgb=config["as_rgb"])
    val = DeviceSplit(data.images("val"), data.labels("val"), device, as_rgb=config["as_rgb"])
    # prior: the positive share per label of the distribution batches are drawn from (the AUC losses' p)
    sampler, prior = build_sampler(train.labels_np, config["batch_size"], config["sampling_rate"], spec.seed)
    model = build_model(task.architecture, train.in_channels, task.n_labels)
    model = prepare_model(model, device, task.dims, compile=config["compile"], memory_format=config["memory_format"])
    info = TrainInfo(
        n_train=len(train),
        n_labels=task.n_labels,
        multilabel=task.multilabel,
        prior=prior,
        epochs=config["epochs"],
        steps_per_epoch=sampler.steps_per_epoch(),
        device=device,
        train_labels=train.labels_np,
    )
    method = method_cls(config, model, info)

    log_path = out / "metrics.jsonl"
    all_callbacks: list[Callback] = [lambda record, _model: append_jsonl(log_path, record)]
    if progress is not None:
        all_callbacks.append(progress(task, config))
    all_callbacks.extend(callbacks)
    fitted = fit(model, method, train, val, sampler, config["epochs"], callbacks=all_callbacks, precision=config["precision"])

    model.load_state_dict(fitted.best_state)
    save_weights(out / "model.safetensors", fitted.best_state, {"task": task.flag, "architecture": task.architecture, "epoch": str(fitted.best_epoch)})
    del train, val
    test_metrics = None
    if spec.evaluate_test:
        # the test split is read here, once, for the selected weights only
        test_data = load_arrays(task, spec.data_root, verify_md5=spec.verify_md5, download=False, splits=("test",))
        test = DeviceSplit(test_data.images("test"), test_data.labels("test"), device, as_rgb=config["as_rgb"])
        test_logits = predict(model, test, precision=config["precision"])
        test_metrics = metrics.evaluate(test.labels_np, test_logits)
        save_predictions(out / "predictions_test.npz", test.labels_np, test_logits)

    result = {
        "task": task.flag,
        "method": method_cls.name,
        "seed": spec.seed,
        "config": config,
        "config_hash": config_hash(task.flag, method_cls.name, spec.seed, config),
        "architecture": task.architecture,
        "best_epoch": fitted.best_epoch,
        "epochs_run": len(fitted.history),
        "stopped_early": fitted.stopped_early,
        "val": fitted.best_val,
        "test": test_metrics,
        "reference": task.reference,
        "train_seconds": fitted.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "images_per_second": fitted.images_per_second,
        "device": str(device),
        "data_md5": data.md5,
        "data_md5_verified": data.md5_verified,
    }
    write_json(out / "result.json", result)
    return result
