"""`bench throughput`: the harness's training and evaluation speed beside the official pipeline's.

Both pipelines train the same network (same initial weights) with the same method and batch
size in one process, on the same device:
- harness: `trainer.fit` over device-resident uint8 splits, batches by index, the run's
  precision / compile settings, validation under inference mode in large batches;
- reference: `reference_pipeline`, the official MedMNIST way (medmnist's Dataset, per-sample
  torchvision transforms, DataLoader, float32, the loss read every step, an evaluation pass
  over the training split and the validation split after every epoch).

Timing: one or more warm-up rounds are discarded, then `repeats` rounds are timed. A round
is, for each pipeline in turn, a training window of `steps` steps (the start of a fresh epoch)
followed by that pipeline's per-epoch evaluation. The pipelines alternate which goes first
(ABBA), so load from other processes on a shared machine falls on both alike. Reported rates
are medians over the timed rounds.

One epoch's wall time each way is
  harness:   n_train / train rate + the per-epoch work `fit` does after training
             (validation pass, metrics, best-weights copy, and with track_train (the default)
             the training-split pass for the train AUC)
  reference: n_train / train rate + validation pass + training-split evaluation pass
and `epoch_speedup` is the reference's epoch seconds over the harness's. When the window is a
whole epoch (steps >= steps per epoch) every term is measured directly; otherwise the
training-split evaluation pass is the measured evaluation rate applied to n_train.
With track_train on, `epoch_speedup` is like for like: both epochs include a training-split
pass (the official script's evaluation, the harness's train AUC for the generalization gap).
With track_train=false the harness skips work the official script always does, which is what
the harness offers a tuning study; `epoch_speedup_train_val` (the reference without its
training-split pass) is then the like-for-like figure, and a lower bound otherwise.
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import metrics, reference_pipeline
from .config import resolve
from .flops import matmul_peak_flops, training_flops_per_image
from .data import DeviceSplit, ShuffleSampler
from .errors import BenchError
from .methods import METHODS, TrainInfo
from .models import build_model
from .runner import positive_prior, resolve_device, seed_everything
from .tasks import get_task, load_arrays
from .trainer import fit, predict, prepare_model, resolve_precision

PIPELINES = ("harness", "reference")
LOAD_NOTE = (
    "Both pipelines ran in one process with their timed windows interleaved (ABBA), so load from "
    "other processes affects both alike; absolute rates on a shared machine are lower than on an idle one."
)


@dataclass
class ThroughputSpec:
    """What `bench throughput` measures: a task, a method and its settings, and the timing plan."""

    task: str
    method: str = "ce"
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    steps: int | None = None  # training steps per timed window; None: default_steps()
    repeats: int = 3
    warmup: int = 1
    seed: int = 0
    data_root: str | None = None
    verify_md5: bool = True
    workers: int = 0  # the reference DataLoader's worker processes (official: 0)


def default_steps(dims: int, steps_per_epoch: int, device: torch.device) -> int:
    """Return the default training window: a whole epoch up to 10 steps (1 step for 3D on CPU, where a step takes seconds)."""
    if dims == 3 and device.type == "cpu":
        return 1
    return min(steps_per_epoch, 10)


class _WindowSampler:
    """Each `epoch()` call returns the first `steps` batches of the next epoch of `sampler` (a fresh epoch per window)."""

    def __init__(self, sampler: ShuffleSampler, steps: int) -> None:
        self.sampler = sampler
        self.steps = steps
        self._next = 1

    def epoch(self, epoch: int) -> list[torch.Tensor]:
        if epoch >= 10_000_000:  # fit's independent second stream: pass through
            return self.sampler.epoch(epoch)
        batches = self.sampler.epoch(self._next)[: self.steps]
        self._next += 1
        return batches

    def steps_per_epoch(self) -> int:
        return min(self.steps, self.sampler.steps_per_epoch())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _validate(spec: ThroughputSpec) -> None:
    if spec.steps is not None and spec.steps < 1:
        raise BenchError(f"--steps must be at least 1, got {spec.steps}")
    if spec.repeats < 1:
        raise BenchError(f"--repeats must be at least 1, got {spec.repeats}")
    if spec.warmup < 0:
        raise BenchError(f"--warmup must be 0 or more, got {spec.warmup}")
    if spec.workers < 0:
        raise BenchError(f"--workers must be 0 or more, got {spec.workers}")


def measure(spec: ThroughputSpec) -> dict[str, Any]:
    """Time both pipelines side by side; return the figures (rates, epoch seconds, speedups, raw windows)."""
    _validate(spec)
    task = get_task(spec.task)
    method_cls = METHODS.get(spec.method)
    config = resolve(task, method_cls, spec.overrides)
    device = resolve_device(spec.device)
    config["precision"], precision_reason = resolve_precision(config["precision"], device)
    data = load_arrays(task, spec.data_root, verify_md5=spec.verify_md5, splits=("train", "val"))
    seed_everything(spec.seed)
    load_before = os.getloadavg()

    batch_size, as_rgb = config["batch_size"], config["as_rgb"]
    train = DeviceSplit(data.images("train"), data.labels("train"), device, as_rgb=as_rgb)
    val = DeviceSplit(data.images("val"), data.labels("val"), device, as_rgb=as_rgb)
    sampler = ShuffleSampler(train.labels_np, batch_size, spec.seed)
    steps_per_epoch = sampler.steps_per_epoch()
    steps = min(spec.steps or default_steps(task.dims, steps_per_epoch, device), steps_per_epoch)
    full_epoch = steps == steps_per_epoch

    info = TrainInfo(
        n_train=len(train),
        n_labels=task.n_labels,
        multilabel=task.multilabel,
        prior=positive_prior(train.labels_np),
        epochs=config["epochs"],
        steps_per_epoch=steps_per_epoch,
        device=device,
        train_labels=train.labels_np,
    )
    initial = build_model(task.architecture, train.in_channels, task.n_labels)
    # the reference gets the official treatment: float32, default memory format, not compiled
    ref_model = copy.deepcopy(initial).to(device)
    model = prepare_model(initial, device, task.dims, compile=config["compile"], memory_format=config["memory_format"])
    method = method_cls(config, model, info)
    ref_method = method_cls(config, ref_model, info)

    windows = _WindowSampler(sampler, steps)
    train_set = reference_pipeline.official_dataset(data.images("train"), data.labels("train"), as_rgb=as_rgb)
    val_set = reference_pipeline.official_dataset(data.images("val"), data.labels("val"), as_rgb=as_rgb)
    ref_trainer = reference_pipeline.ReferenceTrainer(
        ref_model, ref_method, reference_pipeline.train_loader(train_set, batch_size, spec.seed, spec.workers), device
    )
    ref_val_loader = reference_pipeline.eval_loader(val_set, batch_size, spec.workers)
    ref_train_eval_loader = reference_pipeline.eval_loader(train_set, batch_size, spec.workers)

    # process CPU seconds ride along with the wall times: on a shared machine they show the work
    # done, where wall time also counts the time other processes held the cores
    def harness_round() -> dict[str, float]:
        cpu = time.process_time()
        fitted = fit(model, method, train, val, windows, 1, precision=config["precision"], track_train=config["track_train"], fuse_bn=config["eval_fuse_bn"])
        train_cpu = time.process_time() - cpu
        record = fitted.history[0]
        started, cpu = time.perf_counter(), time.process_time()
        metrics.evaluate(val.labels_np, predict(model, val, precision=config["precision"], fuse_bn=config["eval_fuse_bn"]))
        eval_seconds, eval_cpu = time.perf_counter() - started, time.process_time() - cpu
        return {
            "train_seconds": fitted.train_seconds,
            "train_images": fitted.images_seen,
            "epoch_end_seconds": record["seconds"] - fitted.train_seconds,
            "eval_seconds": eval_seconds,
            "window_cpu_seconds": train_cpu,  # fit's window: training plus its end-of-epoch work
            "eval_cpu_seconds": eval_cpu,
        }

    def reference_round() -> dict[str, float]:
        started, cpu = time.perf_counter(), time.process_time()
        _steps, images, _losses = ref_trainer.train(max_steps=steps)
        _sync(device)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        reference_pipeline.evaluate(ref_model, ref_val_loader, val.labels_np, device)
        eval_seconds = time.perf_counter() - started
        out = {"train_seconds": train_seconds, "train_images": images, "eval_seconds": eval_seconds}
        out["window_cpu_seconds"] = time.process_time() - cpu  # training window plus validation pass
        if full_epoch:
            started = time.perf_counter()
            reference_pipeline.evaluate(ref_model, ref_train_eval_loader, train.labels_np, device)
            out["train_eval_seconds"] = time.perf_counter() - started
        return out

    rounds = {"harness": harness_round, "reference": reference_round}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in PIPELINES}
    started_all = time.perf_counter()
    for r in range(spec.warmup + spec.repeats):
        order = PIPELINES if r % 2 == 0 else PIPELINES[::-1]
        for name in order:
            sample = rounds[name]()
            if r >= spec.warmup:
                samples[name].append(sample)
    wall = time.perf_counter() - started_all

    # how close to the limit: the model's training FLOPs per image times the images per second,
    # against a large matmul of the same precision timed here, after the pipelines' rounds
    flops_per_image = training_flops_per_image(model, train.batch(torch.arange(min(batch_size, len(train)))).x, config["precision"])
    peak = matmul_peak_flops(device, config["precision"])

    n_train, n_val = len(train), len(val)
    h, ref = samples["harness"], samples["reference"]
    h_train_rate = _median([s["train_images"] / s["train_seconds"] for s in h])
    r_train_rate = _median([s["train_images"] / s["train_seconds"] for s in ref])
    h_eval_rate = _median([n_val / s["eval_seconds"] for s in h])
    r_eval_rate = _median([n_val / s["eval_seconds"] for s in ref])
    h_epoch_end = _median([s["epoch_end_seconds"] for s in h])
    r_val_pass = _median([s["eval_seconds"] for s in ref])
    r_train_pass = _median([s["train_eval_seconds"] for s in ref]) if full_epoch else n_train / r_eval_rate
    h_epoch = n_train / h_train_rate + h_epoch_end
    h_cpu = _median([s["window_cpu_seconds"] for s in h])
    r_cpu = _median([s["window_cpu_seconds"] for s in ref])
    r_epoch_train_val = n_train / r_train_rate + r_val_pass
    r_epoch = r_epoch_train_val + r_train_pass

    return {
        "task": task.flag,
        "method": method_cls.name,
        "architecture": task.architecture,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine()),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "config": {k: config[k] for k in ("precision", "memory_format", "compile", "track_train", "eval_fuse_bn", "batch_size", "as_rgb")},
        "precision_reason": precision_reason,
        "n_train": n_train,
        "n_val": n_val,
        "steps_per_window": steps,
        "steps_per_epoch": steps_per_epoch,
        "window_is_full_epoch": full_epoch,
        "warmup_rounds": spec.warmup,
        "timed_rounds": spec.repeats,
        "reference_workers": spec.workers,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "wall_seconds": wall,
        "note": LOAD_NOTE,
        "train_flops_per_image": flops_per_image,
        "matmul_peak_flops": peak,
        "matmul_precision": config["precision"],
        "harness": {
            "train_images_per_second": h_train_rate,
            "train_flops": flops_per_image * h_train_rate,
            "fraction_of_peak": flops_per_image * h_train_rate / peak,
            "eval_images_per_second": h_eval_rate,
            "epoch_end_seconds": h_epoch_end,
            "epoch_seconds": h_epoch,
            "window_cpu_seconds": h_cpu,
            "windows": h,
        },
        "reference": {
            "train_images_per_second": r_train_rate,
            "train_flops": flops_per_image * r_train_rate,
            "eval_images_per_second": r_eval_rate,
            "val_pass_seconds": r_val_pass,
            "train_eval_pass_seconds": r_train_pass,
            "train_eval_pass_measured": full_epoch,
            "epoch_seconds": r_epoch,
            "epoch_seconds_train_val": r_epoch_train_val,
            "window_cpu_seconds": r_cpu,
            "windows": ref,
        },
        "train_speedup": h_train_rate / r_train_rate,
        "eval_speedup": h_eval_rate / r_eval_rate,
        "epoch_speedup": r_epoch / h_epoch,
        "epoch_speedup_train_val": r_epoch_train_val / h_epoch,
    }


def check_json_target(path: str | os.PathLike[str]) -> Path:
    """Return `path` as a Path if a JSON file can be written there, else raise BenchError (before any timing)."""
    target = Path(path)
    if target.is_dir():
        raise BenchError(f"--json {target} is a folder; give a file name")
    parent = target.parent if str(target.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise BenchError(f"--json {target}: {parent} is not a folder")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise BenchError(f"--json {target}: cannot write in {parent}")
    return target


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the printed table's rows: one per pipeline and one of ratios (harness over reference)."""
    h, r = result["harness"], result["reference"]
    return [
        {
            "pipeline": "harness",
            "train img/s": h["train_images_per_second"],
            "eval img/s": h["eval_images_per_second"],
            "epoch s": h["epoch_seconds"],
            "epoch s (train+val)": h["epoch_seconds"],
            "train TFLOP/s": h["train_flops"] / 1e12,
            "of peak": h["fraction_of_peak"],
        },
        {
            "pipeline": "reference (official)",
            "train img/s": r["train_images_per_second"],
            "eval img/s": r["eval_images_per_second"],
            "epoch s": r["epoch_seconds"],
            "epoch s (train+val)": r["epoch_seconds_train_val"],
            "train TFLOP/s": r["train_flops"] / 1e12,
            "of peak": None,  # fp32; the peak was timed in the harness's precision
        },
        {
            "pipeline": "speedup (x)",
            "train img/s": result["train_speedup"],
            "eval img/s": result["eval_speedup"],
            "epoch s": result["epoch_speedup"],
            "epoch s (train+val)": result["epoch_speedup_train_val"],
            "train TFLOP/s": None,
            "of peak": None,
        },
    ]


def describe(result: dict[str, Any]) -> str:
    """Return the lines printed above the table: what ran, how it was timed."""
    cfg = result["config"]
    tracked = cfg["track_train"]
    train_pass = "harness: train AUC for the gap; " if tracked else "harness: none, track_train=false; "
    like = "" if tracked else " (like for like with track_train=false)"
    unit = "volumes" if result["architecture"].endswith("3d") else "images"
    return (
        f"{result['task']} / {result['method']} on {result['device']} ({result['device_name']}, {result['torch_threads']} threads); "
        f"batch {cfg['batch_size']}; harness precision {cfg['precision']}, memory format {cfg['memory_format']}, compile {str(cfg['compile']).lower()}, "
        f"track_train {str(tracked).lower()}; "
        f"rates in {unit}/s.\n"
        f"{result['steps_per_window']} training steps per window ({'a whole epoch' if result['window_is_full_epoch'] else 'part of an epoch'} "
        f"of {result['steps_per_epoch']}), medians of {result['timed_rounds']} timed rounds after {result['warmup_rounds']} warm-up; "
        f"{result['wall_seconds']:.0f} s in all; load average {result['load_average_before'][0]:.1f} -> {result['load_average_after'][0]:.1f}.\n"
        f"epoch s: train + validation pass + training-split pass ({train_pass}reference: "
        f"the official script's evaluation, {'measured' if result['reference']['train_eval_pass_measured'] else 'from the measured evaluation rate'}); "
        f"the (train+val) column drops the reference's training-split pass only{like}.\n"
        f"Process CPU seconds per window: harness (training + validation{' + training-split pass' if tracked else ''}) {result['harness']['window_cpu_seconds']:.2f}, "
        f"reference (training + validation pass) {result['reference']['window_cpu_seconds']:.2f}.\n"
        f"Model training FLOPs (forward + backward, torch.utils.flop_counter): {result['train_flops_per_image'] / 1e9:.3f} GFLOP per image; "
        f"'of peak' is achieved training FLOP/s over a {result['matmul_precision']} matmul timed here "
        f"({result['matmul_peak_flops'] / 1e12:.3f} TFLOP/s). The reference trains in fp32 whatever the harness precision.\n"
        f"{result['note']}"
    )
