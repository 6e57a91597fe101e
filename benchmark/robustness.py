"""Robustness of a kept model under shift: corrupted copies of the test split, MedMNIST-C's metric, prevalence shift.

`evaluate` takes a validated model (a run's weights or a submission, `load_model`), rebuilds it
as `bench evaluate` does and scores it on the clean test split and on every corruption of the
task's list at five severities (`corruptions2d`: MedMNIST-C's list for the 2D sets;
`corruptions3d`: MONAI's artifacts for the 3D ones). Corrupted copies are made on the device,
a few thousand images at a time, from a seed per (seed, corruption, severity), and are never
written to disk. The result is one JSON-ready block:

- per corruption and severity: AUC, ACC (score > 0.5, MedMNIST's) and balanced error at the
  validation threshold; the clean numbers; the mean corrupted AUC over all corruptions and
  severities and its drop relative to the clean AUC;
- `medmnistc` (the 2D sets MedMNIST-C covers): its own metric as its `Evaluator` computes it,
  error = 1 - balanced accuracy at a threshold (here chosen on the validation split by Youden's
  J, per label), BE = mean corrupted error / AlexNet's, rBE = (corrupted - clean error) /
  AlexNet's (corrupted - clean), each averaged over the corruptions;
- `prevalence_shift` (binary tasks): ACC and balanced accuracy at 0.5 on the test split
  resampled, stratified and seeded, to the training split's positive share and to 0.5.
"""

from __future__ import annotations

import copy
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, roc_curve

from . import metrics
from .corruptions2d import SEVERITIES, Corruption
from .errors import BenchError
from .submission import DEFAULT_MAX_MB, Submission, inference_precision, load_run, load_submission
from .tasks import Task

SCHEMA = 1
SEED = 0  # the corruption seed of every leaderboard block, so their corrupted test sets are the same
RESAMPLES = 100  # stratified resamples per target prevalence
CHUNK = {2: 4096, 3: 256}  # images / volumes corrupted at once (fixed: the random stream depends on it)


def corruption_list(task: Task) -> dict[str, Corruption]:
    """Return the task's corruptions: MedMNIST-C's list of a 2D task, MONAI's artifacts for a 3D one."""
    if task.dims == 2:
        from .corruptions2d import corruptions_for

        return corruptions_for(task.flag)
    from .corruptions3d import corruptions

    return corruptions()


def corruption_set_name(task: Task) -> str:
    """Return what a block's corruptions are, in words."""
    if task.dims == 3:
        return "MONAI acquisition artifacts (benchmark/corruptions3d.py), 5 severities"
    from .corruptions2d import PARAMETERS

    which = task.flag if task.flag in PARAMETERS else "chestmnist"
    return f"MedMNIST-C's {which} list, its severity parameters applied to the 28 px images"


def load_model(source: str | Path, *, max_mb: float = DEFAULT_MAX_MB) -> Submission:
    """Return the validated model of a run directory or a submission archive (the checks of `bench evaluate`)."""
    path = Path(source)
    if path.is_dir():
        if not (path / "model.safetensors").is_file() and (path / "model_fold1.safetensors").is_file():
            raise BenchError(f"{path} is a k-fold run, which keeps one model per fold; bench robustness evaluates one model")
        return load_run(path, max_mb=max_mb)
    return load_submission(path, max_mb=max_mb)


def generator_for(seed: int, corruption: str, severity: int) -> torch.Generator:
    """Return the CPU generator of one corrupted copy, seeded by (seed, the corruption's name, severity) alone."""
    state = np.random.SeedSequence([seed, zlib.crc32(corruption.encode()), severity]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def corrupt(corruption: Corruption, images: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    """Return a corrupted copy of uint8 `images` (on their device), chunk by chunk from one seeded generator."""
    generator = generator_for(seed, corruption.name, severity)
    step = CHUNK[images.dim() - 1]
    return torch.cat([corruption(images[i : i + step], severity, generator) for i in range(0, len(images), step)])


# --- thresholded metrics -------------------------------------------------------------------------


def youden_thresholds(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Return per label the logit threshold t maximising balanced accuracy of logit > t (Youden's J) on these cases.

    t lies halfway between the selected score and the next lower one, so `>` reproduces the
    ROC point. A label with one class gets 0 (score 0.5).
    """
    labels, logits = np.asarray(labels).reshape(len(labels), -1), np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    out = np.zeros(labels.shape[1])
    for j in range(labels.shape[1]):
        if len(np.unique(labels[:, j])) < 2:
            continue
        fpr, tpr, thresholds = roc_curve(labels[:, j], logits[:, j], drop_intermediate=False)
        k = int(np.argmax(tpr - fpr))
        high = thresholds[k] if np.isfinite(thresholds[k]) else logits[:, j].max()
        low = thresholds[k + 1] if k + 1 < len(thresholds) else high - 1.0
        out[j] = (high + low) / 2.0
    return out


def balanced_error(labels: np.ndarray, logits: np.ndarray, thresholds: np.ndarray) -> float:
    """Return 1 - balanced accuracy of logit > threshold, averaged over labels with both classes (MedMNIST-C's error)."""
    labels, logits = np.asarray(labels).reshape(len(labels), -1), np.asarray(logits).reshape(len(logits), -1)
    values = [
        1.0 - balanced_accuracy_score(labels[:, j], logits[:, j] > thresholds[j]) for j in range(labels.shape[1]) if len(np.unique(labels[:, j])) == 2
    ]
    return float(np.mean(values)) if values else float("nan")


def scores(labels: np.ndarray, logits: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """Return {'auc', 'acc', 'balanced_error'} of logits on a (possibly corrupted) test split."""
    probabilities = metrics.sigmoid(logits)
    return {"auc": metrics.auc(labels, probabilities), "acc": metrics.acc(labels, probabilities), "balanced_error": balanced_error(labels, logits, thresholds)}


def medmnistc_metric(task: Task, clean_error: float, errors: dict[str, list[float]]) -> dict[str, Any] | None:
    """Return MedMNIST-C's BE and rBE (its Evaluator.populate_summary) against its AlexNet baseline, or None where it has none."""
    from .corruptions2d import ALEXNET_BASELINES

    baseline = ALEXNET_BASELINES.get(task.flag) if task.dims == 2 else None
    if baseline is None or set(errors) != set(baseline["corrupted"]):
        return None  # its BE averages over its whole list; a part of it is not its metric
    per = {}
    for name, values in errors.items():
        mean, alexnet = float(np.mean(values)), baseline["corrupted"][name]
        per[name] = {"error": mean, "be": mean / alexnet, "rbe": (mean - clean_error) / (alexnet - baseline["clean"])}
    return {
        "clean_error": clean_error,
        "be": float(np.mean([p["be"] for p in per.values()])),
        "rbe": float(np.mean([p["rbe"] for p in per.values()])),
        "per_corruption": per,
        "baseline": "AlexNet, MedMNIST-C utils/baselines.py (224 px)",
    }


# --- prevalence shift ----------------------------------------------------------------------------


def resample_rows(labels: np.ndarray, prevalence: float, rng: np.random.Generator) -> np.ndarray:
    """Return the rows of the largest subset with positive share `prevalence`: one class whole, the other drawn without replacement."""
    labels = np.asarray(labels).reshape(-1)
    positive, negative = np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)
    if not 0.0 < prevalence < 1.0 or len(positive) == 0 or len(negative) == 0:
        raise BenchError(f"cannot resample to a positive share of {prevalence} from {len(positive)} positives and {len(negative)} negatives")
    if len(positive) / len(labels) < prevalence:
        negative = rng.choice(negative, size=min(len(negative), round(len(positive) * (1 - prevalence) / prevalence)), replace=False)
    else:
        positive = rng.choice(positive, size=min(len(positive), round(len(negative) * prevalence / (1 - prevalence))), replace=False)
    return np.sort(np.concatenate([positive, negative]))


def prevalence_shift(labels: np.ndarray, logits: np.ndarray, train_prevalence: float, seed: int = SEED, resamples: int = RESAMPLES) -> dict[str, Any]:
    """Return ACC and balanced accuracy (score > 0.5) on the test split and on it resampled to the training prevalence and to 0.5."""
    labels, predicted = np.asarray(labels).reshape(-1), metrics.sigmoid(np.asarray(logits).reshape(-1)) > 0.5

    def measured(rows: np.ndarray) -> tuple[float, float]:
        return float(np.mean(predicted[rows] == (labels[rows] == 1))), float(balanced_accuracy_score(labels[rows], predicted[rows]))

    out: dict[str, Any] = {"test_prevalence": float(np.mean(labels == 1)), "train_prevalence": float(train_prevalence), "resamples": resamples, "seed": seed}
    acc, ba = measured(np.arange(len(labels)))
    out["test"] = {"n": int(len(labels)), "acc": acc, "balanced_accuracy": ba}
    for key, target in (("to_train", float(train_prevalence)), ("to_0.5", 0.5)):
        draws = [resample_rows(labels, target, np.random.default_rng([seed, r, int(round(target * 1e6))])) for r in range(resamples)]
        values = np.array([measured(rows) for rows in draws])
        out[key] = {
            "prevalence": float(np.mean(labels[draws[0]] == 1)),
            "n": int(len(draws[0])),
            "acc": {"mean": float(values[:, 0].mean()), "sd": float(values[:, 0].std(ddof=1))},
            "balanced_accuracy": {"mean": float(values[:, 1].mean()), "sd": float(values[:, 1].std(ddof=1))},
        }
    return out


# --- evaluation ----------------------------------------------------------------------------------


class Scorer:
    """A submission's network rebuilt as `bench evaluate` rebuilds it; `logits(split)` as it predicts."""

    def __init__(self, submission: Submission, device: torch.device) -> None:
        from .models import build_model
        from .runner import seed_everything
        from .trainer import prepare_model

        seed_everything(0)
        model = build_model(submission.manifest["architecture"], submission.manifest["in_channels"], submission.task.n_labels)
        model.load_state_dict(submission.state, strict=True)
        self.model = prepare_model(model, device, submission.task.dims)
        self.submission = submission
        self.precision = inference_precision(submission.manifest)

    def logits(self, split: Any) -> np.ndarray:
        """Return the model's float32 logits on every row of a DeviceSplit, as submission.evaluate computes them."""
        from .trainer import predict

        try:
            out = predict(self.model, split, precision=self.precision)
        except RuntimeError as exc:
            raise BenchError(f"{self.submission.path}: the model cannot run on {self.submission.task.flag} inputs ({exc})") from None
        if not np.isfinite(out).all():
            raise BenchError(f"{self.submission.path}: the model's outputs are NaN or infinite on a corrupted test set")
        return out


def with_images(split: Any, images: torch.Tensor) -> Any:
    """Return a shallow copy of a DeviceSplit holding `images` (uint8, same shape) instead of its own."""
    out = copy.copy(split)
    out.images = images
    return out


def evaluate(
    submission: Submission,
    *,
    data_root: str | None = None,
    device: str = "auto",
    verify_md5: bool = True,
    seed: int = SEED,
    corruptions: dict[str, Corruption] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Return the robustness block of a validated model (see the module docstring); `corruptions` defaults to the task's list."""
    from .data import DeviceSplit
    from .runner import check_seed, resolve_device
    from .tasks import load_arrays

    check_seed(seed)
    task = submission.task
    corruptions = corruption_list(task) if corruptions is None else corruptions
    torch_device = resolve_device(device)
    data = load_arrays(task, data_root, verify_md5=verify_md5)
    scorer = Scorer(submission, torch_device)
    as_rgb = submission.as_rgb
    val = DeviceSplit(data.images("val"), data.labels("val"), torch_device, as_rgb=as_rgb)
    test = DeviceSplit(data.images("test"), data.labels("test"), torch_device, as_rgb=as_rgb)
    labels = test.labels_np
    thresholds = youden_thresholds(val.labels_np, scorer.logits(val))
    clean_logits = scorer.logits(test)
    clean = scores(labels, clean_logits, thresholds)
    block: dict[str, Any] = {
        "schema": SCHEMA,
        "corruption_set": corruption_set_name(task),
        "seed": seed,
        "severities": max((len(c.params) for c in corruptions.values()), default=SEVERITIES),
        "n_test": int(len(labels)),
        "device": str(torch_device),
        "threshold": [float(p) for p in metrics.sigmoid(thresholds)],
        "threshold_rule": "Youden's J on the validation split (score > threshold)",
        "clean": clean,
        "corruptions": {},
    }
    for name, corruption in corruptions.items():
        cells = [scores(labels, scorer.logits(with_images(test, corrupt(corruption, test.images, s, seed))), thresholds) for s in range(1, len(corruption.params) + 1)]
        block["corruptions"][name] = {"family": corruption.family, **{key: [c[key] for c in cells] for key in ("auc", "acc", "balanced_error")}}
        if progress is not None:
            progress(name)
    aucs = [a for c in block["corruptions"].values() for a in c["auc"]]
    block["mean_corrupted_auc"] = float(np.mean(aucs)) if aucs else None
    usable = aucs and np.isfinite(clean["auc"]) and clean["auc"] > 0
    block["relative_drop"] = (clean["auc"] - block["mean_corrupted_auc"]) / clean["auc"] if usable else None
    block["medmnistc"] = medmnistc_metric(task, clean["balanced_error"], {n: c["balanced_error"] for n, c in block["corruptions"].items()})
    block["prevalence_shift"] = None if task.multilabel else prevalence_shift(labels, clean_logits, float(np.mean(data.labels("train") == 1)), seed)
    return block


# --- printing ------------------------------------------------------------------------------------


def table_rows(block: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Return (columns, rows) of the AUC table: one row per corruption (AUC per severity and their mean), then the clean AUC."""
    columns = ["corruption", "family"] + [f"s{s}" for s in range(1, block["severities"] + 1)] + ["mean"]
    rows: list[dict[str, Any]] = []
    for name, c in block["corruptions"].items():
        rows.append({"corruption": name, "family": c["family"], **{f"s{i}": v for i, v in enumerate(c["auc"], 1)}, "mean": float(np.mean(c["auc"]))})
    rows.append({"corruption": "clean", "family": "-", "mean": block["clean"]["auc"]})
    return columns, rows


def summary_lines(block: dict[str, Any]) -> list[str]:
    """Return the lines printed under the AUC table: MedMNIST-C's metric and the prevalence shift."""
    lines = []
    if block["relative_drop"] is not None:
        lines.append(
            f"mean corrupted AUC {block['mean_corrupted_auc']:.3f} against clean {block['clean']['auc']:.3f}: "
            f"relative drop {100 * block['relative_drop']:.1f} %"
        )
    m = block.get("medmnistc")
    if m:
        lines.append(
            f"MedMNIST-C metric (threshold {', '.join(f'{t:.3f}' for t in block['threshold'])} on validation): clean balanced error {m['clean_error']:.3f}, "
            f"BE {m['be']:.3f}, rBE {m['rbe']:.3f} (AlexNet = 1)"
        )
    p = block.get("prevalence_shift")
    if p:
        lines.append(f"prevalence shift (score > 0.5; test positive share {p['test_prevalence']:.3f}, train {p['train_prevalence']:.3f}):")
        lines.append(f"    test split as is             n {p['test']['n']:<5} ACC {p['test']['acc']:.3f}  balanced accuracy {p['test']['balanced_accuracy']:.3f}")
        for key, label in (("to_train", "to the train share"), ("to_0.5", "to 0.5")):
            q = p[key]
            lines.append(
                f"    resampled {label:<18} n {q['n']:<5} ACC {q['acc']['mean']:.3f} +/- {q['acc']['sd']:.3f}  "
                f"balanced accuracy {q['balanced_accuracy']['mean']:.3f} +/- {q['balanced_accuracy']['sd']:.3f}  ({p['resamples']} stratified resamples)"
            )
    return lines
