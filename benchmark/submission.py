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
"""

from __future__ import annotations

import hashlib
import io
import json
import pickletools
import tarfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from . import __version__, metrics
from .errors import BenchError
from .models import ARCHITECTURES, build_model
from .store import RESULT, atomic_write_bytes, read_json
from .tasks import TASKS, Task, get_task

FORMAT = "medauc-bench-submission"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
DEFAULT_MAX_MB = 200.0
MAX_MANIFEST_BYTES = 1 << 20
MAX_MEMBERS = 16
# what DeviceSplit.inputs does: ToTensor + Normalize(0.5, 0.5) of uint8 images
NORMALIZE = "x / 127.5 - 1"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".bin", ".joblib", ".npy", ".npz")

MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["format", "schema_version", "task", "architecture", "in_channels", "num_outputs", "preprocessing", "config", "harness_version", "files"],
    "properties": {
        "format": {"const": FORMAT},
        "schema_version": {"const": SCHEMA_VERSION},
        "task": {"type": "string", "maxLength": 64},
        "architecture": {"type": "string", "maxLength": 64},
        "in_channels": {"enum": [1, 3]},
        "num_outputs": {"type": "integer", "minimum": 1, "maximum": 1000},
        "preprocessing": {
            "type": "object",
            "additionalProperties": False,
            "required": ["normalize", "as_rgb", "input_shape"],
            "properties": {
                "normalize": {"const": NORMALIZE},
                "as_rgb": {"type": "boolean"},
                "input_shape": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3},
            },
        },
        "config": {
            "type": "object",
            "required": ["task", "method", "seed"],
            "properties": {"task": {"type": "string"}, "method": {"type": "string", "maxLength": 64}, "seed": {"type": "integer"}},
        },
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,48}$"},
        "harness_version": {"type": "string", "maxLength": 64},
        "git_commit": {"type": ["string", "null"], "maxLength": 80},
        "created": {"type": ["string", "null"], "maxLength": 40},
        "train_seconds": {"type": ["number", "null"]},
        "files": {
            "type": "object",
            "additionalProperties": False,
            "required": [WEIGHTS],
            "properties": {
                WEIGHTS: {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["sha256", "size"],
                    "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "size": {"type": "integer", "minimum": 0}},
                }
            },
        },
    },
}


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


def package(run_dir: str | Path, out: str | Path, *, name: str | None = None) -> Path:
    """Package a finished run's selected weights as a submission archive at `out`; return `out`.

    The archive is validated like any submission before it is moved into place.
    """
    run_dir, out = Path(run_dir), Path(out)
    for needed in (RESULT, "config.json", WEIGHTS):
        if not (run_dir / needed).is_file():
            raise BenchError(f"{run_dir} is not a finished run directory (no {needed})")
    if out.is_dir():
        raise BenchError(f"{out} is a directory; give the archive's file name, e.g. -o submission.tar")
    result = read_json(run_dir / RESULT)
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
    data = _tar_bytes({MANIFEST: (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode(), WEIGHTS: weights})
    # refuse to hand out an archive that `bench evaluate` would reject
    validate_bytes(data, out, max_bytes=len(data))
    atomic_write_bytes(out, data)
    return out


# --- validation ------------------------------------------------------------------------------


def _looks_like_pickle(name: str, data: bytes) -> bool:
    """Return whether a member is (or starts with) a pickle, judged without unpickling anything.

    By name (.pkl, .pt, ...), by the protocol 2-5 header, as a torch.save zip (which holds
    data.pkl), or, for protocols 0-1, because pickletools, which only parses opcodes and checks
    the stack, reads a complete pickle at the start of the file.
    """
    if name.lower().endswith(PICKLE_SUFFIXES):
        return True
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                return any(n.endswith(".pkl") for n in archive.namelist())
        except zipfile.BadZipFile:
            return False
    try:
        pickletools.dis(data[: 1 << 20], out=io.StringIO())
    except Exception:  # any parse error: not a pickle
        return False
    return True


def _member_name(member: tarfile.TarInfo, path: Path) -> str:
    name = member.name
    pure = PurePosixPath(name)
    if not name or name.startswith(("/", "\\")) or "\\" in name or ".." in pure.parts or (len(name) > 1 and name[1] == ":"):
        raise BenchError(f"{path}: member {name!r} has a path outside the archive's root")
    return str(PurePosixPath(*[p for p in pure.parts if p != "."]))


def read_members(data: bytes, path: Path, max_bytes: int) -> dict[str, bytes]:
    """Return {name: bytes} of an archive's regular files after checking every header (nothing extracted).

    Rejects: not a tar archive; links and special files; absolute or parent-relative names;
    duplicate names; more than MAX_MEMBERS members; declared contents beyond `max_bytes`.
    """
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise BenchError(f"{path} is not a valid submission archive (a tar file): {exc}") from None
    files: dict[str, bytes] = {}
    total = 0
    with tar:
        try:
            members = []
            for member in tar:  # one header at a time, so a compressed bomb is stopped at its header
                members.append(member)
                if len(members) > MAX_MEMBERS:
                    raise BenchError(f"{path} has more than {MAX_MEMBERS} members; a submission holds {MANIFEST} and {WEIGHTS}")
                if member.issym() or member.islnk():
                    raise BenchError(f"{path}: member {member.name!r} is a link; links are not allowed in a submission")
                name = _member_name(member, path)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BenchError(f"{path}: member {member.name!r} is not a regular file")
                total += member.size
                if total > max_bytes:
                    raise BenchError(f"{path} unpacks to more than the allowed {max_bytes / 2**20:.0f} MB (raise it with --max-size-mb)")
                if name in files:
                    raise BenchError(f"{path}: member {name!r} appears twice")
                handle = tar.extractfile(member)
                content = handle.read(member.size + 1) if handle is not None else b""
                if len(content) != member.size:
                    raise BenchError(f"{path}: member {name!r} is truncated")
                files[name] = content
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BenchError(f"{path} is not a valid submission archive (damaged tar): {exc}") from None
    return files


def validate_bytes(data: bytes, path: Path, *, max_bytes: int) -> Submission:
    """Return the validated Submission in archive bytes `data`, or raise BenchError saying what is wrong."""
    if len(data) > max_bytes:
        raise BenchError(f"{path} is {len(data) / 2**20:.1f} MB, over the allowed {max_bytes / 2**20:.0f} MB (raise it with --max-size-mb)")
    files = read_members(data, path, max_bytes)
    state: dict[str, torch.Tensor] | None = None
    weights_error = None
    if WEIGHTS in files:
        # a file that parses as safetensors is not a pickle, whatever its first bytes happen to be
        try:
            state = load_safetensors(files[WEIGHTS])
        except (SafetensorError, ValueError, RuntimeError) as exc:
            weights_error = exc
    pickles = sorted(
        name for name, content in files.items() if not (name == WEIGHTS and state is not None) and _looks_like_pickle(name, content)
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
    try:
        manifest = json.loads(files[MANIFEST].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BenchError(f"{path}: {MANIFEST} is not valid JSON ({exc})") from None
    try:
        jsonschema.validate(manifest, MANIFEST_SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise BenchError(f"{path}: {MANIFEST} fails its schema at {where}: {exc.message}") from None
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
    max_bytes = int(max_mb * 2**20)
    if path.stat().st_size > max_bytes:
        raise BenchError(f"{path} is {path.stat().st_size / 2**20:.1f} MB, over the allowed {max_mb:g} MB (raise it with --max-size-mb)")
    return validate_bytes(path.read_bytes(), path, max_bytes=max_bytes)


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


def evaluate(submission: Submission, *, data_root: str | None = None, device: str = "auto", verify_md5: bool = True) -> Evaluation:
    """Rebuild the declared architecture, load the weights and return its metrics on the task's test split.

    Inference follows the run's own path (DeviceSplit preprocessing, trainer.predict, channels-last
    on CUDA for 2D), so a submission packaged from a run reproduces that run's test AUC exactly.
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
    data = load_arrays(task, data_root, verify_md5=verify_md5, splits=("test",))
    test = DeviceSplit(data.images("test"), data.labels("test"), torch_device, as_rgb=submission.as_rgb)
    try:
        logits = predict(model, test)
    except RuntimeError as exc:
        raise BenchError(f"{submission.path}: architecture {submission.manifest['architecture']} cannot run on {task.flag} inputs ({exc})") from None
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(axis=1).sum())
        raise BenchError(f"{submission.path}: the model's outputs are NaN or infinite on {bad} of {len(logits)} test cases")
    return Evaluation(
        submission=submission,
        labels=test.labels_np,
        logits=logits,
        test=metrics.leaderboard_metrics(test.labels_np, logits),
        data_md5=data.md5,
        data_md5_verified=data.md5_verified,
        device=str(torch_device),
    )


def seed_result(evaluation: Evaluation):  # -> leaderboard.SeedResult
    """Return the leaderboard SeedResult of an evaluated submission (its own entry, id `sub-<weights sha12>`)."""
    from .leaderboard import SeedResult
    from .store import package_versions

    manifest = evaluation.submission.manifest
    config = {k: v for k, v in manifest["config"].items() if k not in ("task", "method", "seed")}
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
