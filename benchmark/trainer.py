"""The training loop: epochs of method steps, validation after each, best-by-validation weights kept.

`fit` knows nothing of any particular method or task: it asks the sampler for batches, the
method for steps, the metrics module for validation numbers and calls its callbacks with one
record per epoch. It never reads the test split.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from .data import Batch, DeviceSplit
from .hparams import Bool, Choice, Int
from .lazy import lazy_import
from .methods.base import Method, StepContext

torch = lazy_import("torch", globals())
metrics = lazy_import("benchmark.metrics", globals())  # SciPy and scikit-learn: only once a model is evaluated

PARAMS = {
    "epochs": Int(100, "training epochs (official: 100; the learning rate decays at 50 % and 75 %)", minimum=1),
    "precision": Choice("auto", "autocast precision: auto = bf16 on CUDA and on CPUs with native bf16 (avx512_bf16 or AMX), else fp32 (the official protocol's float32); a run records the one it used", choices=("auto", "fp32", "bf16")),
    "compile": Bool(False, "torch.compile the model (costs a compile at start; see `bench throughput` for whether it pays)"),
    "memory_format": Choice("auto", "model memory format: auto = channels-last for 2D models, and for 3D models on CPU (3D on CUDA: contiguous)", choices=("auto", "channels_last", "contiguous")),
    "eval_fuse_bn": Bool(
        False, "per-epoch evaluation (val, train) folds each BatchNorm into its convolution (torch.fx fuse); logits equal to float tolerance", hash_at_default=False
    ),
    "track_train": Bool(
        True, "evaluate the un-augmented training split after every epoch (train AUC, the train-val gap); false skips that forward pass", hash_at_default=False
    ),
}


class Sampler(Protocol):
    """Draws a training epoch's batches as index tensors."""

    def epoch(self, epoch: int) -> list[torch.Tensor]: ...

    def steps_per_epoch(self) -> int: ...


class WeightAverage(Protocol):
    """An average of the weights (EMA, SWA) that is evaluated and kept instead of the raw weights."""

    def update(self, model: torch.nn.Module) -> None: ...

    def evaluated(self, model: torch.nn.Module, epoch: int) -> tuple[torch.nn.Module, bool]: ...


class StopTraining(Exception):
    """Raised by a callback to end training after the current epoch (early stopping, pruning)."""


Callback = Callable[[dict[str, Any], "torch.nn.Module"], None]


@dataclass
class FitResult:
    """What training produced: the selected epoch, its weights and the per-epoch history."""

    best_epoch: int
    best_val: dict[str, float]
    best_state: dict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    images_seen: int = 0
    stopped_early: bool = False
    best_train: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        """Return training images (or volumes) processed per second of training wall time."""
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else float("nan")


def native_bf16_cpu() -> list[str]:
    """Return this CPU's bf16 instruction sets (avx512_bf16, amx_bf16) from /proc/cpuinfo; empty where it has none or does not say."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [name for name in ("avx512_bf16", "amx_bf16") if name in flags]
    except OSError:
        pass
    return []


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """Return (the precision a run computes in, "fp32" or "bf16", and why), for `precision` on `device`.

    "auto" is bf16 autocast on CUDA and on a CPU with native bf16 (avx512_bf16 or AMX), where
    it trained 2.5x faster on the 2-core development CPU (146 against 58 images/s, `bench
    throughput`) at no measured cost in test AUC (README, "bf16 by default");
    elsewhere fp32, the official protocol's float32 (bf16 there is emulated, and slower).
    """
    device = torch.device(device)
    if precision != "auto":
        return precision, f"{precision}: set explicitly"
    if device.type == "cuda":
        return "bf16", "bf16: auto on CUDA (bf16 autocast)"
    native = native_bf16_cpu()
    if native:
        return "bf16", f"bf16: auto on a CPU with native bf16 ({', '.join(native)})"
    return "fp32", "fp32: auto on a CPU without native bf16 (avx512_bf16 or AMX), the official protocol's float32"


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager[Any]:
    """Return the autocast context for `precision` on `device`: bf16 autocast, or a no-op for fp32.

    "auto" resolves as `resolve_precision` does; callers that train pass the resolved precision.
    """
    device = torch.device(device)
    if precision == "auto":
        precision = resolve_precision(precision, device)[0]
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(
    model: torch.nn.Module, device: torch.device, dims: int, *, compile: bool = False, memory_format: str = "auto"
) -> torch.nn.Module:
    """Return `model` on `device` in the memory format asked for, compiled in place if `compile`.

    Channels-last weights make the convolutions run channels-last whatever the input's layout
    (a 1-channel batch is laid out the same either way). `Module.compile` keeps the module and
    its state-dict keys as they are, so saved weights look the same with and without it.
    """
    device = torch.device(device)
    model = model.to(device)
    if channels_last(memory_format, device, dims):
        model = model.to(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
    if compile:
        model.compile()
    return model


def channels_last(memory_format: str, device: torch.device, dims: int) -> bool:
    """Return whether a model runs channels-last: as asked, or for "auto" where it was measured faster.

    On CPU (oneDNN) channels-last was faster for both 2D and 3D training steps and inference;
    on CUDA it is the layout tensor cores want for 2D; 3D on CUDA was not measured, so stays contiguous.
    """
    if memory_format != "auto":
        return memory_format == "channels_last"
    return dims == 2 or torch.device(device).type == "cpu"


def eval_batch_size(split: DeviceSplit) -> int:
    """Return the inference batch: large on CUDA; on CPU the size whose activations stay cache-friendly.

    On a 2-core CPU, inference over BreastMNIST's training split ran about 1.6x slower at batch
    1024 than at 128, and AdrenalMNIST3D volumes about 1.4x slower at batch 64 than at 16
    (timed with `predict` on the real files), so CPU uses those sizes.
    """
    if split.device.type == "cpu":
        return 128 if split.dims == 2 else 16
    return 1024 if split.dims == 2 else 128


def fused_for_eval(model: torch.nn.Module) -> torch.nn.Module:
    """Return an eval-mode copy of `model` with every BatchNorm folded into the convolution before it.

    `torch.fx.experimental.optimization.fuse` (PyTorch's own conv + BN folding for 1D/2D/3D) on a
    traced copy; the weights keep the model's memory format. `model` itself is left as it is.
    """
    from torch.fx.experimental.optimization import fuse

    was_training = model.training
    model.eval()
    try:
        fused = fuse(model, inplace=False)
    finally:
        model.train(was_training)
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)), None)
    if conv is not None and conv.weight.dim() in (4, 5):
        layout = torch.channels_last if conv.weight.dim() == 4 else torch.channels_last_3d
        if conv.weight.is_contiguous(memory_format=layout) and not conv.weight.is_contiguous():
            fused = fused.to(memory_format=layout)
    return fused.eval()


def predict(model: torch.nn.Module, split: DeviceSplit, batch_size: int | None = None, precision: str = "auto", fuse_bn: bool = False) -> np.ndarray:
    """Return the model's float32 logits on every row of `split`, shape (N, n_outputs), in eval mode (BatchNorm folded if `fuse_bn`)."""
    precision = resolve_precision(precision, split.device)[0]  # once, not per batch: "auto" reads /proc/cpuinfo
    with torch.inference_mode():  # a block, not the decorator: a decorator would import torch with this module
        if fuse_bn:
            model = fused_for_eval(model)
        was_training = model.training
        model.eval()
        outputs = []
        for index in split.sequential(batch_size or eval_batch_size(split)):
            with autocast(split.device, precision):
                outputs.append(model(split.inputs(index)).float())
        model.train(was_training)
        return torch.cat(outputs).cpu().numpy()


def state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Return a CPU copy of the model's state dict (parameters and BN buffers)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def fit(
    model: torch.nn.Module,
    method: Method,
    train: DeviceSplit,
    val: DeviceSplit,
    sampler: Sampler,
    epochs: int,
    *,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    augment: Callable[[Batch], Batch] | None = None,
    precision: str = "auto",
    average: WeightAverage | None = None,
    select: bool = True,
    track_train: bool = True,
    fuse_bn: bool = False,
) -> FitResult:
    """Train `model` with `method` for `epochs`; return the epoch with the best validation AUC and its weights.

    Ties keep the earlier epoch (as the official script's `>`). Each epoch produces one record
    {epoch, train_loss, lr, train/*, val/*, best_epoch, seconds}, the train metrics measured
    on the un-augmented training images; callbacks receive it and may raise StopTraining to
    end training after that epoch; they get the model the record describes (the averaged one
    with `average`). With `average` (EMA, SWA) the averaged weights are the ones evaluated and
    kept, and only epochs it marks may be selected. With `select=False` (a refit whose
    validation rows are in the training data) the last selectable epoch is kept, whatever its
    validation AUC. With `track_train=False` the training split is not evaluated: records and
    `best_train` hold no train metrics. With `fuse_bn` each epoch's evaluation runs on a copy
    with BatchNorm folded into the convolutions (`fused_for_eval`).
    """
    device = train.device
    precision = resolve_precision(precision, device)[0]  # once, not in the training step: "auto" reads /proc/cpuinfo

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            return model(x).float()

    def prepared(index: torch.Tensor) -> Batch:
        batch = train.batch(index)
        return augment(batch) if augment is not None else batch

    # an independent stream of batches, for methods that need a second mini-batch per step
    extra: Iterator[torch.Tensor] = itertools.chain.from_iterable(sampler.epoch(10_000_000 + k) for k in itertools.count())
    ctx = StepContext(forward=forward, next_batch=lambda: prepared(next(extra)))

    best_auc, best_epoch, best_state, best_val, best_train = -np.inf, 0, None, {}, {}
    history: list[dict[str, Any]] = []
    train_seconds, images_seen, stopped = 0.0, 0, False
    model.train()
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        method.on_epoch_start(epoch)
        lr = method.current_lr()
        total = torch.zeros((), device=device)
        steps = 0
        for index in sampler.epoch(epoch):
            total += method.train_step(prepared(index), ctx)
            if average is not None:
                average.update(model)
            steps += 1
            images_seen += len(index)
        train_loss = float(total) / max(steps, 1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds += time.perf_counter() - started
        evaluated, averaged = average.evaluated(model, epoch) if average is not None else (model, True)
        scorer = fused_for_eval(evaluated) if fuse_bn else evaluated  # folded once, used for both splits
        val_metrics = metrics.evaluate(val.labels_np, predict(scorer, val, precision=precision))
        train_metrics = metrics.evaluate(train.labels_np, predict(scorer, train, precision=precision)) if track_train else {}
        method.on_epoch_end(epoch, val_metrics)
        # False in a pretraining stage or before an SWA window: validated, never selected
        selectable = method.selectable(epoch) and averaged
        improved = selectable and bool(np.isfinite(val_metrics["auc"]) and val_metrics["auc"] > best_auc)
        if improved or (selectable and (best_state is None or not select)):
            best_auc = val_metrics["auc"] if improved else best_auc
            best_epoch, best_val, best_train, best_state = epoch, dict(val_metrics), dict(train_metrics), state_copy(evaluated)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "lr": lr,
            **{f"train/{k}": v for k, v in train_metrics.items()},
            **{f"val/{k}": v for k, v in val_metrics.items()},
            "best_epoch": best_epoch,
            "seconds": time.perf_counter() - started,
        }
        history.append(record)
        try:
            for callback in callbacks:
                callback(record, evaluated)
        except StopTraining:
            stopped = True
            break
    if best_state is None:  # stopped before any selectable epoch: the last weights are all there is
        best_epoch, best_val, best_train, best_state = history[-1]["epoch"], dict(val_metrics), dict(train_metrics), state_copy(evaluated)
    return FitResult(best_epoch, best_val, best_state, history, train_seconds, images_seen, stopped, best_train)
