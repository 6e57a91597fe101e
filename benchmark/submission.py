"""Model submissions: package a run's weights (`bench submit`), validate and evaluate one (`bench evaluate`).

A submission is an uncompressed tar archive with exactly two files:

  manifest.json       task, architecture id, input channels, outputs, preprocessing, the run's
                      configuration, harness version and git commit, and the SHA-256 and size of
                      every other file in the archive
  model.safetensors   the weights (safetensors: a JSON header and raw tensor bytes; no code)

Submissions come from strangers, so evaluation never runs their code: nothing is unpickled
(weights are read only by safetensors; a pickle anywhere in the archive rejects it), nothing
is extracted to disk (members are read into memory after every header has been checked), and
the network is rebuilt from the harness's own architecture registry, never from the file.
Everything is validated before the test split is touched, and nothing is written unless every
check, including finite outputs, has passed.

The archive must be plain tar, read by `archive.py` with every header bounded before any content
is read (compressed files are refused undecompressed). The manifest is parsed strictly: no NaN or
infinite numbers, at most MAX_JSON_DEPTH levels of nesting, and integers must be JSON integers
(1.0 and true are not 1).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from . import __version__, metrics
from .archive import looks_like_pickle, read_members
from .errors import BenchError
from .hparams import MAX_SEED
from .models import ARCHITECTURES, build_model
from .store import RESULT, JSONError, atomic_write_bytes, check_file_target, loads_bounded, read_json
from .tasks import TASKS, Task, get_task

FORMAT = "medauc-bench-submission"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
DEFAULT_MAX_MB = 200.0
MAX_MANIFEST_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
# what DeviceSplit.inputs does: ToTensor + Normalize(0.5, 0.5) of uint8 images
NORMALIZE = "x / 127.5 - 1"

MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["format", "schema_version", "task", "architecture", "in_channels", "num_outputs", "preprocessing", "config", "harness_version", "files"],
    "properties": {
        "format": {"const": FORMAT},
        "schema_version": {"const": SCHEMA_VERSION},
        "task": {"type": "string", "maxLength": 64},
        "architecture": {"type": "string", "maxLength": 64},
        "in_channels": {"type": "integer", "enum": [1, 3]},
        "num_outputs": {"type": "integer", "minimum": 1, "maximum": 1000},
        "preprocessing": {
            "type": "object",
            "additionalProperties": False,
            "required": ["normalize", "as_rgb", "input_shape"],
            "properties": {
                "normalize": {"const": NORMALIZE},
                "as_rgb": {"type": "boolean"},
                "input_shape": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 4096}, "minItems": 2, "maxItems": 3},
            },
        },
        "config": {
            "type": "object",
            "required": ["task", "method", "seed"],
            "properties": {
                "task": {"type": "string"},
                "method": {"type": "string", "maxLength": 64},
                "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
            },
        },
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,48}$"},
        "harness_version": {"type": "string", "maxLength": 64},
        "git_commit": {"type": ["string", "null"], "maxLength": 80},
        "created": {"type": ["string", "null"], "maxLength": 40},
        "train_seconds": {"type": ["number", "null"], "minimum": 0},
        "files": {
            "type": "object",
            "additionalProperties": False,
            "required": [WEIGHTS],
            "properties": {
                WEIGHTS: {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["sha256", "size"],
                    "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "size": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
                }
            },
        },
    },
}



def _strict_integer(_checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


def _strict_number(_checker: Any, instance: Any) -> bool:
    return isinstance(instance, (int, float)) and not isinstance(instance, bool)


# JSON Schema calls 1.0 an integer; a manifest's integers must be written as integers (1.0 is not 1)
_StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({"integer": _strict_integer, "number": _strict_number}),
)
MANIFEST_VALIDATOR = _StrictValidator(MANIFEST_SCHEMA)


@dataclass
class Submission:
    """A validated submission: its manifest, task, weights and the SHA-256 of the weights file."""

    manifest: dict[str, Any]
    task: Task
    state: dict[str, torch.Tensor]
    weights_sha256: str
    path: Path

    @property
    def as_rgb(self) -> bool:
        """Return whether the model takes the grayscale channel repeated three times."""
        return bool(self.manifest["preprocessing"]["as_rgb"])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- packaging -----------------------------------------------------------------------------


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    """Return a deterministic uncompressed tar of `files` (fixed order, mtime 0, root-owned, mode 0644)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files, key=lambda n: (n != MANIFEST, n)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def manifest_for(task: Task, config: dict[str, Any], weights: bytes, *, architecture: str, git_commit: str | None, created: str | None, train_seconds: float | None, name: str | None) -> dict[str, Any]:
    """Return the manifest of a submission of `weights` trained with the run configuration `config`."""
    as_rgb = bool(config.get("as_rgb", False))
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "task": task.flag,
        "architecture": architecture,
        "in_channels": 3 if as_rgb else 1,
        "num_outputs": task.n_labels,
        "preprocessing": {"normalize": NORMALIZE, "as_rgb": as_rgb, "input_shape": list(task.image_shape)},
        "config": config,
        "harness_version": __version__,
        "git_commit": git_commit,
        "created": created,
        "train_seconds": train_seconds,
        "files": {WEIGHTS: {"sha256": _sha256(weights), "size": len(weights)}},
    }
    if name:
        manifest["name"] = name
    return manifest


def run_archive(run_dir: str | Path, *, name: str | None = None, allow_tuning_trial: bool = False) -> bytes:
    """Return the submission archive (tar bytes) of a finished run's selected weights, as `bench submit` writes it.

    A tuning trial's run (one trained without a test evaluation, `result["test"]` null) is refused
    unless `allow_tuning_trial`: `bench evaluate` (or `bench robustness`) would report its test
    AUC, and tuning promises that the test split plays no part in choosing a configuration.
    """
    run_dir = Path(run_dir)
    for needed in (RESULT, "config.json", WEIGHTS):
        if not (run_dir / needed).is_file():
            raise BenchError(f"{run_dir} is not a finished run directory (no {needed})")
    result = read_json(run_dir / RESULT)
    if "test" in result and result["test"] is None and not allow_tuning_trial:  # a trial records its test as null
        raise BenchError(
            f"{run_dir} is a tuning trial's run (never evaluated on the test split, which is for final models); "
            "retrain its configuration with `bench run --set ...` and submit that run, or pass --allow-tuning-trial"
        )
    config = read_json(run_dir / "config.json")
    env = read_json(run_dir / "environment.json") if (run_dir / "environment.json").is_file() else {}
    task = get_task(result["task"])
    weights = (run_dir / WEIGHTS).read_bytes()
    created = datetime.fromtimestamp((run_dir / RESULT).stat().st_mtime, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = manifest_for(
        task,
        config,
        weights,
        architecture=result.get("architecture", task.architecture),
        git_commit=env.get("git_commit"),
        created=created,
        train_seconds=result.get("train_seconds"),
        name=name,
    )
    return _tar_bytes({MANIFEST: (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode(), WEIGHTS: weights})


def package(run_dir: str | Path, out: str | Path, *, name: str | None = None, allow_tuning_trial: bool = False) -> Path:
    """Package a finished run's selected weights as a submission archive at `out`; return `out`.

    The archive is validated like any submission before it is moved into place; a tuning
    trial's run is refused unless `allow_tuning_trial` (see `run_archive`).
    """
    run_dir, out = Path(run_dir), Path(out)
    for needed in (RESULT, "config.json", WEIGHTS):
        if not (run_dir / needed).is_file():
            raise BenchError(f"{run_dir} is not a finished run directory (no {needed})")
    if out.is_dir():
        raise BenchError(f"{out} is a directory; give the archive's file name, e.g. -o submission.tar")
    check_file_target(out, "-o", make_parents=True)
    data = run_archive(run_dir, name=name, allow_tuning_trial=allow_tuning_trial)
    # refuse to hand out an archive that `bench evaluate` would reject
    validate_bytes(data, out, max_bytes=len(data))
    atomic_write_bytes(out, data)
    return out


def load_run(run_dir: str | Path, *, max_mb: float = DEFAULT_MAX_MB) -> Submission:
    """Return a finished run's selected weights as a validated Submission: every check `bench evaluate` makes on an archive."""
    data = run_archive(run_dir)
    if len(data) > max_mb * 2**20:
        raise BenchError(f"{run_dir}: its weights are {len(data) / 2**20:.1f} MB, over the allowed {max_mb:g} MB (raise it with --max-size-mb)")
    return validate_bytes(data, Path(run_dir), max_bytes=len(data))


# --- validation ------------------------------------------------------------------------------


def validate_bytes(data: bytes, path: Path, *, max_bytes: int) -> Submission:
    """Return the validated Submission in archive bytes `data`, or raise BenchError saying what is wrong."""
    if len(data) > max_bytes:
        raise BenchError(f"{path} is {len(data) / 2**20:.1f} MB, over the allowed {max_bytes / 2**20:.0f} MB (raise it with --max-size-mb)")
    files = read_members(data, path, max_bytes, what=f"{MANIFEST} and {WEIGHTS}")
    state: dict[str, torch.Tensor] | None = None
    weights_error = None
    if WEIGHTS in files:
        # a file that parses as safetensors is not a pickle, whatever its first bytes happen to be
        try:
            state = load_safetensors(files[WEIGHTS])
        except (SafetensorError, ValueError, RuntimeError) as exc:
            weights_error = exc
    pickles = sorted(
        name for name, content in files.items() if not (name == WEIGHTS and state is not None) and looks_like_pickle(name, content)
    )
    if pickles:
        raise BenchError(
            f"{path} contains a pickle ({', '.join(pickles)}); pickles can run code when loaded, so a "
            f"submission may hold only {WEIGHTS} (safetensors) and {MANIFEST}"
        )
    if MANIFEST not in files:
        raise BenchError(f"{path} has no {MANIFEST}")
    if len(files[MANIFEST]) > MAX_MANIFEST_BYTES:
        raise BenchError(f"{path}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
    manifest = parse_manifest(files[MANIFEST], path)
    listed = set(manifest["files"])
    extra = sorted(set(files) - listed - {MANIFEST})
    if extra:
        raise BenchError(f"{path} holds files its manifest does not list: {', '.join(extra)}")
    for name, spec in sorted(manifest["files"].items()):
        if name not in files:
            raise BenchError(f"{path}: {MANIFEST} lists {name}, which the archive lacks")
        if len(files[name]) != spec["size"] or _sha256(files[name]) != spec["sha256"]:
            raise BenchError(f"{path}: checksum mismatch for {name} (the manifest's SHA-256 or size does not match the file)")
    task = TASKS.get(manifest["task"])
    ARCHITECTURES.get(manifest["architecture"])
    _check_consistency(manifest, task, path)
    if state is None:
        raise BenchError(f"{path}: {WEIGHTS} is not a valid safetensors file ({weights_error})")
    _check_weights(state, manifest, task, path)
    return Submission(manifest=manifest, task=task, state=state, weights_sha256=manifest["files"][WEIGHTS]["sha256"], path=path)


def parse_manifest(raw: bytes, path: Path) -> dict[str, Any]:
    """Return the manifest in `raw` after strict parsing (depth, NaN, exact types) and its schema, else BenchError."""
    try:
        manifest = loads_bounded(raw.decode("utf-8"), max_depth=MAX_JSON_DEPTH, finite=True)
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path}: {MANIFEST} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (JSONError, ValueError) as exc:
        raise BenchError(f"{path}: {MANIFEST} is not valid JSON ({str(exc)[:200]})") from None
    error = jsonschema.exceptions.best_match(MANIFEST_VALIDATOR.iter_errors(manifest))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise BenchError(f"{path}: {MANIFEST} fails its schema at {where}: {_short(error.message)}")
    return manifest


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_consistency(manifest: dict[str, Any], task: Task, path: Path) -> None:
    pre = manifest["preprocessing"]
    problems = []
    if manifest["in_channels"] != (3 if pre["as_rgb"] else 1):
        problems.append(f"in_channels {manifest['in_channels']} does not match preprocessing.as_rgb={pre['as_rgb']}")
    if manifest["num_outputs"] != task.n_labels:
        problems.append(f"num_outputs {manifest['num_outputs']} but {task.flag} has {task.n_labels} label(s)")
    if list(pre["input_shape"]) != list(task.image_shape):
        problems.append(f"input_shape {pre['input_shape']} but {task.flag} images are {list(task.image_shape)}")
    if manifest["config"]["task"] != task.flag:
        problems.append(f"config.task {manifest['config']['task']!r} differs from task {task.flag!r}")
    if problems:
        raise BenchError(f"{path}: {MANIFEST} is inconsistent: " + "; ".join(problems))


def _check_weights(state: dict[str, torch.Tensor], manifest: dict[str, Any], task: Task, path: Path) -> None:
    """Raise BenchError unless `state` has exactly the names, shapes and dtypes of the declared architecture."""
    expected = build_model(manifest["architecture"], manifest["in_channels"], task.n_labels).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: {tuple(state[k].shape)} {str(state[k].dtype).removeprefix('torch.')} (expected {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')})"
        for k, v in expected.items()
        if k in state and (state[k].shape != v.shape or state[k].dtype != v.dtype)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})")
        if wrong:
            parts.append(f"wrong shape or dtype {len(wrong)} ({'; '.join(wrong[:3])}{'; ...' if len(wrong) > 3 else ''})")
        raise BenchError(f"{path}: weights do not match architecture {manifest['architecture']}: " + ", ".join(parts))


def load_submission(path: str | Path, *, max_mb: float = DEFAULT_MAX_MB) -> Submission:
    """Return the validated submission at `path` (BenchError naming the first problem otherwise)."""
    path = Path(path)
    if not path.exists():
        raise BenchError(f"{path} does not exist")
    if not path.is_file():
        raise BenchError(f"{path} is not a file")
    if isinstance(max_mb, bool) or not isinstance(max_mb, (int, float)) or not math.isfinite(max_mb) or max_mb <= 0:
        raise BenchError(f"--max-size-mb must be a positive finite number, got {max_mb!r}")
    max_bytes = int(max_mb * 2**20)
    if path.stat().st_size > max_bytes:
        raise BenchError(f"{path} is {path.stat().st_size / 2**20:.1f} MB, over the allowed {max_mb:g} MB (raise it with --max-size-mb)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BenchError(f"{path} could not be read ({exc.strerror or exc})") from None
    return validate_bytes(data, path, max_bytes=max_bytes)


# --- evaluation ------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """A submission's test-split predictions and metrics."""

    submission: Submission
    labels: np.ndarray
    logits: np.ndarray
    test: dict[str, float]
    data_md5: str
    data_md5_verified: bool
    device: str
    val_labels: np.ndarray | None = None  # the official validation split, where the test-split threshold is chosen
    val_logits: np.ndarray | None = None


def inference_precision(manifest: dict[str, Any]) -> str:
    """Return the precision a submission is evaluated in: the one its run trained and was tested in ("fp32" or "bf16"), else fp32.

    Taking it from the run, not from the evaluating machine's `auto`, keeps an organizer's
    number equal to the run's own on any machine that computes that precision alike.
    """
    precision = manifest.get("config", {}).get("precision")
    return precision if precision in ("fp32", "bf16") else "fp32"


def evaluate(submission: Submission, *, data_root: str | None = None, device: str = "auto", verify_md5: bool = True) -> Evaluation:
    """Rebuild the declared architecture, load the weights and return its metrics on the task's test split.

    Inference follows the run's own path (DeviceSplit preprocessing, trainer.predict in the run's
    precision, the run's memory layout), so a submission packaged from a run reproduces that
    run's test AUC exactly on the device kind it ran on.
    """
    from .data import DeviceSplit
    from .runner import resolve_device, seed_everything
    from .tasks import load_arrays
    from .trainer import predict, prepare_model

    task = submission.task
    torch_device = resolve_device(device)
    seed_everything(0)
    model = build_model(submission.manifest["architecture"], submission.manifest["in_channels"], task.n_labels)
    model.load_state_dict(submission.state, strict=True)
    model = prepare_model(model, torch_device, task.dims)  # the layout a run of this task gets, so logits match it
    data = load_arrays(task, data_root, verify_md5=verify_md5, splits=("test", "val"))
    test = DeviceSplit(data.images("test"), data.labels("test"), torch_device, as_rgb=submission.as_rgb)
    val = DeviceSplit(data.images("val"), data.labels("val"), torch_device, as_rgb=submission.as_rgb)
    try:
        precision = inference_precision(submission.manifest)
        logits = predict(model, test, precision=precision)
        val_logits = predict(model, val, precision=precision)
    except RuntimeError as exc:
        raise BenchError(f"{submission.path}: architecture {submission.manifest['architecture']} cannot run on {task.flag} inputs ({exc})") from None
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(axis=1).sum())
        raise BenchError(f"{submission.path}: the model's outputs are NaN or infinite on {bad} of {len(logits)} test cases")
    return Evaluation(
        submission=submission,
        labels=test.labels_np,
        logits=logits,
        # the threshold for the thresholded accuracies is chosen on the official validation split, never on the test split
        test=metrics.leaderboard_metrics(test.labels_np, logits, (val.labels_np, val_logits) if np.isfinite(val_logits).all() else None),
        data_md5=data.md5,
        data_md5_verified=data.md5_verified,
        device=str(torch_device),
        val_labels=val.labels_np,
        val_logits=val_logits,
    )


def seed_result(evaluation: Evaluation):  # -> leaderboard.SeedResult
    """Return the leaderboard SeedResult of an evaluated submission (its own entry, id `sub-<weights sha12>`)."""
    from .leaderboard import SeedResult
    from .store import package_versions

    manifest = evaluation.submission.manifest
    config = {k: v for k, v in manifest["config"].items() if k not in ("task", "method", "seed")}
    val_ok = evaluation.val_logits is not None and bool(np.isfinite(evaluation.val_logits).all())
    return SeedResult(
        kind="submission",
        task=evaluation.submission.task.flag,
        method=str(manifest["config"]["method"]),
        config=config,
        seed=int(manifest["config"]["seed"]),
        architecture=manifest["architecture"],
        labels=evaluation.labels.reshape(len(evaluation.labels), -1),
        logits=evaluation.logits.reshape(len(evaluation.logits), -1),
        data_md5=evaluation.data_md5,
        data_md5_verified=evaluation.data_md5_verified,
        record={
            "weights_sha256": evaluation.submission.weights_sha256,
            "harness_version": manifest["harness_version"],
            "git_commit": manifest.get("git_commit"),
            "date": manifest.get("created"),
            "train_seconds": manifest.get("train_seconds"),
            "device": evaluation.device,
        },
        packages=package_versions(),
        entry_id=f"sub-{evaluation.submission.weights_sha256[:12]}",
        name=manifest.get("name"),
        val_labels=evaluation.val_labels.reshape(len(evaluation.val_labels), -1) if val_ok else None,
        val_logits=evaluation.val_logits.reshape(len(evaluation.val_logits), -1).astype(np.float32) if val_ok else None,
    )


def evaluation_record(evaluation: Evaluation, entry: str | None = None) -> dict[str, Any]:
    """Return what `bench evaluate --json` writes: the submission's identity and its `test` metrics."""
    manifest = evaluation.submission.manifest
    return {
        "submission": str(evaluation.submission.path),
        "weights_sha256": evaluation.submission.weights_sha256,
        "task": evaluation.submission.task.flag,
        "architecture": manifest["architecture"],
        "fixed_architecture": manifest["architecture"] == evaluation.submission.task.architecture and not manifest["config"].get("pretrained", False),
        "method": manifest["config"]["method"],
        "seed": manifest["config"]["seed"],
        "name": manifest.get("name"),
        "test": evaluation.test,
        "n_test": int(len(evaluation.labels)),
        "data_md5": evaluation.data_md5,
        "data_md5_verified": evaluation.data_md5_verified,
        "device": evaluation.device,
        "leaderboard_entry": entry,
    }
