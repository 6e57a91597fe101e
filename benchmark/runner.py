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
from .controls import add_head_dropout, build_average, check_controls, control_callbacks
from .data import DeviceSplit
from .data.sampling import build_sampler
from .data.augment import build_augmenter, check_method_accepts
from .data.splits import Fold, folds_for
from .errors import BenchError
from .hparams import MAX_SEED
from .methods import METHODS, TrainInfo
from .models import build_model
from .store import StagedRun, append_jsonl, check_folder_target, clean_stale_folders, environment, is_done, read_json, save_predictions, save_weights, write_json
from .tasks import Task, get_task, load_arrays
from .trainer import Callback, FitResult, eval_batch_size, fit, predict, prepare_model, resolve_precision

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


def check_seed(seed: object, what: str = "--seed") -> int:
    """Return `seed` if it is an integer numpy and torch both accept (0 .. 2**32 - 1), else raise BenchError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise BenchError(f"{what} must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    return seed


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


def gap(train_metrics: dict[str, float], val_metrics: dict[str, float]) -> float | None:
    """Return train AUC minus validation AUC, or None when the training split was not evaluated (track_train=false)."""
    if "auc" not in train_metrics or "auc" not in val_metrics:
        return None
    return train_metrics["auc"] - val_metrics["auc"]


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
    check_seed(spec.seed)
    config = resolve(task, method_cls, spec.overrides)
    check_method_accepts(config, method_cls)
    check_controls(config)
    device = resolve_device(spec.device)
    # the id and record name the precision computed in, so "auto" never reuses a run of the other one
    config["precision"], precision_reason = resolve_precision(config["precision"], device)
    final_dir = run_dir_for(spec, config)
    check_folder_target(final_dir, "--out" if spec.out else "--runs")
    clean_stale_folders(final_dir.parent, final_dir.name)  # a killed run's staging folder, or the run a kill left aside
    if is_done(final_dir) and not spec.force:
        return read_json(final_dir / "result.json"), final_dir
    if final_dir.is_file() or (final_dir.is_dir() and any(final_dir.iterdir()) and not is_done(final_dir)):
        # never replace a folder that is not one of our finished runs: it may be the user's
        raise BenchError(f"{final_dir} exists and is not a finished run directory; choose another --out")
    data = load_arrays(task, spec.data_root, verify_md5=spec.verify_md5, splits=("train", "val"))
    folds = folds_for(config, data.labels("train"), data.labels("val"))  # before staging: a bad split writes nothing

    seed_everything(spec.seed)
    staged = StagedRun(final_dir)
    try:
        result = _train_and_evaluate(spec, task, method_cls, config, data, folds, device, staged.path, callbacks, progress, precision_reason)
        final = staged.commit()
    except BaseException:
        staged.abort()
        raise
    return result, final


@dataclass
class FoldFit:
    """One fitted model: the fit's outcome and the selected weights' logits on its validation rows."""

    name: str
    fitted: FitResult
    val_rows: np.ndarray
    val_logits: np.ndarray
    digest: str


def fold_seed(seed: int, k: int) -> int:
    """Return the training seed of fold k (fold 0 trains with the run's own seed)."""
    return seed if k == 0 else int(np.random.SeedSequence([seed, k]).generate_state(1)[0] % 2**31)


def _fit_rows(
    task: Task,
    method_cls: type,
    config: dict[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    device: torch.device,
    seed: int,
    callbacks: list[Callback],
    *,
    epochs: int | None = None,
    select: bool = True,
) -> tuple[torch.nn.Module, FitResult, np.ndarray]:
    """Fit one model on `train_rows` of the pool, selecting on `val_rows`; return (model with the kept weights, fit, val logits)."""
    seed_everything(seed)
    train = DeviceSplit(images[train_rows], labels[train_rows], device, as_rgb=config["as_rgb"])
    val = DeviceSplit(images[val_rows], labels[val_rows], device, as_rgb=config["as_rgb"])
    # prior: the positive share per label of the distribution batches are drawn from (the AUC losses' p)
    sampler, prior = build_sampler(train.labels_np, config["batch_size"], config["sampling_rate"], seed)
    model = build_model(task.architecture, train.in_channels, task.n_labels)
    model = prepare_model(model, device, task.dims, compile=config["compile"], memory_format=config["memory_format"])
    add_head_dropout(model, config["dropout"])
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
    bn_batches = lambda: (train.inputs(index) for index in train.sequential(eval_batch_size(train)))  # noqa: E731
    average = build_average(config, model, config["epochs"], bn_batches)
    augment = build_augmenter(config, task.dims, seed, task.flag)
    fitted = fit(
        model, method, train, val, sampler, epochs or config["epochs"], callbacks=callbacks, augment=augment, precision=config["precision"], average=average, select=select,
        track_train=config["track_train"], fuse_bn=config["eval_fuse_bn"],
    )
    model.load_state_dict(fitted.best_state)
    return model, fitted, predict(model, val, precision=config["precision"])


def _train_and_evaluate(spec, task, method_cls, config, data, folds: list[Fold], device, out: Path, callbacks, progress, precision_reason: str) -> dict[str, Any]:
    started, cpu_started = time.perf_counter(), time.process_time()
    full_config = {"task": task.flag, "method": method_cls.name, "seed": spec.seed, **config}
    write_json(out / "config.json", full_config)
    write_json(out / "environment.json", {**environment(device, data.path, data.md5, data.md5_verified), "precision": precision_reason})

    # the train+val pool every validation strategy draws its rows from; the test split is not in it
    images = np.concatenate([data.images("train"), data.images("val")])
    labels = np.concatenate([data.labels("train"), data.labels("val")])
    strategy = config["val_strategy"]
    log_path = out / "metrics.jsonl"

    def fit_callbacks(tag: dict[str, Any], epochs: int) -> list[Callback]:
        # the tag (fold or phase) goes into the record itself, so every callback sees it
        found: list[Callback] = [lambda record, _model: record.update(tag), lambda record, _model: append_jsonl(log_path, record)]
        found += ([progress(task, {**config, "epochs": epochs})] if progress is not None else []) + list(callbacks)
        return found + control_callbacks(config) if tag.get("phase") != "refit" else found

    fits: list[FoldFit] = []
    states: list[dict[str, torch.Tensor]] = []
    for k, fold in enumerate(folds):
        tag = {"fold": fold.name} if strategy == "kfold" else ({"phase": "select"} if strategy == "refit" else {})
        model, fitted, val_logits = _fit_rows(task, method_cls, config, images, labels, fold.train, fold.val, device, fold_seed(spec.seed, k), fit_callbacks(tag, config["epochs"]))
        fits.append(FoldFit(fold.name, fitted, fold.val, val_logits, fold.digest()))
        states.append(fitted.best_state)
    refit = None
    if strategy == "refit":
        # retrain from the same start on train+val for the selected number of epochs; the official
        # val rows are now training rows, so nothing is selected: the last epoch is the model
        selected = fits[0].fitted.best_epoch
        everything = np.arange(len(labels))
        model, refit, _ = _fit_rows(
            task, method_cls, config, images, labels, everything, folds[0].val, device, spec.seed, fit_callbacks({"phase": "refit"}, selected), epochs=selected, select=False
        )
        states = [refit.best_state]

    meta = {"task": task.flag, "architecture": task.architecture, "val_strategy": strategy}
    if strategy == "kfold":
        for fold_fit, state in zip(fits, states):
            save_weights(out / f"model_{fold_fit.name}.safetensors", state, {**meta, "epoch": str(fold_fit.fitted.best_epoch), "fold": fold_fit.name})
    else:
        kept = refit or fits[0].fitted
        save_weights(out / "model.safetensors", states[0], {**meta, "epoch": str(kept.best_epoch)})

    # validation: out-of-fold logits for kfold, the selected model's logits otherwise
    val_rows = np.concatenate([f.val_rows for f in fits])
    val_logits = np.concatenate([f.val_logits for f in fits])
    order = np.argsort(val_rows, kind="stable")
    val_rows, val_logits = val_rows[order], val_logits[order]
    val_metrics = metrics.evaluate(labels[val_rows], val_logits) if strategy == "kfold" else dict(fits[0].fitted.best_val)
    save_predictions(out / "predictions_val.npz", labels[val_rows], val_logits)
    train_metrics = {key: float(np.mean([f.fitted.best_train[key] for f in fits])) for key in fits[0].fitted.best_train}
    del images

    test_metrics = None
    if spec.evaluate_test:
        # the test split is read here, once, for the kept weights only; kfold averages its models' logits
        test_data = load_arrays(task, spec.data_root, verify_md5=spec.verify_md5, download=False, splits=("test",))
        test = DeviceSplit(test_data.images("test"), test_data.labels("test"), device, as_rgb=config["as_rgb"])
        logits = []
        for state in states:
            model.load_state_dict(state)
            logits.append(predict(model, test, precision=config["precision"]))
        test_logits = np.mean(logits, axis=0)
        test_metrics = metrics.evaluate(test.labels_np, test_logits)
        if strategy != "refit":  # a refit model has no held-out validation rows to choose a threshold on
            test_metrics.update(metrics.val_threshold_metrics(labels[val_rows], val_logits, test.labels_np, test_logits))
        save_predictions(out / "predictions_test.npz", test.labels_np, test_logits)

    all_fits = [f.fitted for f in fits] + ([refit] if refit is not None else [])
    train_seconds = sum(f.train_seconds for f in all_fits)
    result = {
        "task": task.flag,
        "method": method_cls.name,
        "seed": spec.seed,
        "config": config,
        "config_hash": config_hash(task.flag, method_cls.name, spec.seed, config),
        "architecture": task.architecture,
        "val_strategy": strategy,
        "best_epoch": None if strategy == "kfold" else fits[0].fitted.best_epoch,
        "epochs_run": sum(len(f.history) for f in all_fits),
        "stopped_early": any(f.fitted.stopped_early for f in fits),
        "val": val_metrics,
        "train": train_metrics,
        "train_val_gap": gap(train_metrics, val_metrics),
        # chosen on the validation predictions alone (Youden's J, one logit per label); scores test.*_at_val_threshold
        "val_threshold": metrics.thresholds_record(labels[val_rows], val_logits) if strategy != "refit" else None,
        "val_digest": [f.digest for f in fits],
        "test": test_metrics,
        "reference": task.reference,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - started,
        # CPU time of this process (all threads): with wall time, what a run cost on a CPU machine
        "cpu_seconds": time.process_time() - cpu_started,
        "images_per_second": sum(f.images_seen for f in all_fits) / train_seconds if train_seconds > 0 else float("nan"),
        "device": str(device),
        "data_md5": data.md5,
        "data_md5_verified": data.md5_verified,
    }
    if strategy == "kfold":
        result["folds"] = [
            {
                "fold": f.name,
                "best_epoch": f.fitted.best_epoch,
                "epochs_run": len(f.fitted.history),
                "val": f.fitted.best_val,
                "train": f.fitted.best_train,
                "train_val_gap": gap(f.fitted.best_train, f.fitted.best_val),
            }
            for f in fits
        ]
    if refit is not None:
        result["refit"] = {"epochs": refit.best_epoch, "rows": int(len(labels)), "train": refit.best_train}
    write_json(out / "result.json", result)
    return result
