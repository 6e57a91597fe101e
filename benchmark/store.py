"""The run store: one directory per run with its config, environment, metrics, result and weights.

Layout of a run directory:
  config.json         the resolved configuration (task, method, seed, every hyperparameter)
  environment.json    package versions, device, git commit, data file and its MD5
  metrics.jsonl       one JSON line per epoch
  result.json         the final record (written last: its presence marks the run done)
  model.safetensors   the selected (best-validation) weights
  predictions_test.npz  test labels and logits of the selected weights
A run is built in a staging directory beside its final place and renamed into place when
complete, so a killed run never leaves a half-written run directory, and every file is
written atomically.

Leftovers of killed processes carry their process id: temporary files
`.<name>.<pid>-<host>.<random>.tmp`, staging folders `.staging-<name>-<pid>` and replaced
folders `.old-<name>-<pid>`. The next command that writes in the same folder removes those
whose process is gone (`remove_stale_temporaries`, `clean_stale_folders`); a live process's
are never touched, nor those of another machine sharing the folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import BenchError
from .lazy import lazy_import

torch = lazy_import("torch", globals())

PACKAGES = ("torch", "torchvision", "monai", "medmnist", "numpy", "scikit-learn", "timm", "optuna", "medauc-bench")
RESULT = "result.json"
MAX_JSON_DEPTH = 64  # of the files we read; ours are a few levels deep


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would have given; mkstemp's 0600 is too strict for shared run stores


def _clean(value: Any) -> Any:
    """Return `value` with NaN/inf floats as None and numpy scalars as Python ones (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(obj: Any) -> str:
    """Return deterministic JSON: sorted keys, two-space indent, trailing newline."""
    return json.dumps(_clean(obj), sort_keys=True, indent=2) + "\n"


# --- leftovers of killed processes -----------------------------------------------------------

# a short tag of this machine, so a folder shared between machines never loses a live process's file
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TEMPORARY = re.compile(r"^\..+\.(\d+)-([0-9a-f]{6})\.[A-Za-z0-9_]+\.tmp$")


def _temporary(path: Path) -> tuple[int, str]:
    """Return (fd, name) of a new temporary file beside `path`, named with this process's id and machine."""
    return tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-{HOST_TAG}.", suffix=".tmp", dir=path.parent)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files that processes of this machine now gone left in `folder`; return them."""
    removed = []
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.name.endswith(".tmp")]
    except OSError:
        return removed
    for name in names:
        match = _TEMPORARY.match(name)
        # this process's own temporaries are live (another output of the same command may be pending)
        if match and match.group(2) == HOST_TAG and int(match.group(1)) != os.getpid() and not _pid_alive(match.group(1)):
            with _suppress():
                (Path(folder) / name).unlink()
                removed.append(Path(folder) / name)
    return removed


def clean_stale_folders(parent: Path, name: str) -> None:
    """Tidy what processes now gone left while building or replacing `parent/name`.

    A staging folder `.staging-<name>-<pid>` is removed. A replaced folder `.old-<name>-<pid>` is
    removed when `name` exists, and moved back into place when it does not (the process died
    between its two renames, so the old folder is the last complete one).
    """
    parent = Path(parent)
    try:
        entries = [p for p in parent.iterdir() if p.name.startswith((f".staging-{name}-", f".old-{name}-"))]
    except OSError:
        return
    for stale in sorted(entries, key=lambda p: p.name):
        prefix = f".staging-{name}-" if stale.name.startswith(f".staging-{name}-") else f".old-{name}-"
        pid = stale.name[len(prefix) :]
        if not pid.isdigit() or _pid_alive(pid) or not stale.is_dir():
            continue
        if prefix.startswith(".old-") and not (parent / name).exists():
            with _suppress():
                os.replace(stale, parent / name)
            continue
        shutil.rmtree(stale, ignore_errors=True)


# --- checking where a command will write, before it writes -------------------------------------


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_folder_target(path: str | os.PathLike[str], what: str) -> Path:
    """Return `path` if a folder can be made (or already is) there, else raise BenchError naming `what` (e.g. --out)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BenchError(f"{what} {path} is a file, not a folder")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise BenchError(f"{what} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise BenchError(f"{what} {path}: cannot write in {base} (permission denied)")
    return path


def check_file_target(path: str | os.PathLike[str], what: str, *, make_parents: bool = False) -> Path:
    """Return `path` if a file can be written there, else raise BenchError naming `what` (e.g. --json).

    The parent folder must exist, unless `make_parents` (then it must be creatable).
    """
    path = Path(path)
    if path.is_dir():
        raise BenchError(f"{what} {path} is a folder; give a file name")
    parent = path.parent
    if make_parents:
        check_folder_target(parent, what)
        return path
    if not parent.exists():
        raise BenchError(f"{what} {path}: the folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise BenchError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise BenchError(f"{what} {path}: cannot write there (permission denied)")
    return path


# --- files ---------------------------------------------------------------------------------


class PendingWrite:
    """`data` written now to a temporary file beside `path`; `commit()` renames it into place, `discard()` removes it.

    For a command with several outputs: write each one's bytes first, then commit them together,
    so a failure while writing leaves no output changed.
    """

    def __init__(self, path: Path, data: bytes) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path.parent)
        fd, self.tmp = _temporary(self.path)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(self.tmp, FILE_MODE)
        except BaseException:
            self.discard()
            raise

    def commit(self) -> None:
        """Move the written file into place (atomically replacing what was there)."""
        try:
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Remove the temporary file (nothing happens if it was committed)."""
        with _suppress():
            os.unlink(self.tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename."""
    PendingWrite(path, data).commit()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return True


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as deterministic JSON, atomically."""
    atomic_write_bytes(path, dumps(obj).encode())


class JSONError(ValueError):
    """JSON nested too deeply, or holding NaN or infinity where they are refused."""


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth_exceeds(text: str, max_depth: int) -> bool:
    """Return whether the JSON `text` nests arrays and objects more than `max_depth` deep (strings skipped)."""
    depth = 0
    for char in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        depth += 1 if char in "[{" else -1
        if depth > max_depth:
            return True
    return False


def _refuse_constant(name: str) -> Any:
    raise JSONError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONError(f"the number {text[:40]} is out of range")
    return value


def loads_bounded(text: str, *, max_depth: int = MAX_JSON_DEPTH, finite: bool = False) -> Any:
    """Return the parsed JSON `text`, refusing (JSONError) more than `max_depth` levels of nesting.

    With `finite`, NaN, Infinity and numbers too large for a float are refused too. The depth is
    checked on the text first, so a deeply nested file never reaches the parser.
    """
    if json_depth_exceeds(text, max_depth):
        raise JSONError(f"nested more than {max_depth} levels deep")
    try:
        if finite:
            return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        return json.loads(text)
    except RecursionError:
        raise JSONError(f"nested more than {max_depth} levels deep") from None


def read_json(path: Path) -> Any:
    """Return the parsed JSON at `path` (ValueError if it is not JSON or nested absurdly deep)."""
    return loads_bounded(Path(path).read_text())


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one compact JSON line to `path`."""
    with Path(path).open("a") as handle:
        handle.write(json.dumps(_clean(dict(record)), sort_keys=True) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Return the records of a JSON-lines file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def save_weights(path: Path, state: Mapping[str, torch.Tensor], metadata_: Mapping[str, str] | None = None) -> None:
    """Write a state dict as safetensors, atomically (no pickle anywhere)."""
    path = Path(path)
    remove_stale_temporaries(path.parent)
    fd, tmp = _temporary(path)
    os.close(fd)
    from safetensors.torch import save_file

    try:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata=dict(metadata_ or {}))
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Return the state dict stored in a safetensors file."""
    from safetensors.torch import load_file

    return load_file(str(path))


def save_predictions(path: Path, labels: np.ndarray, logits: np.ndarray) -> None:
    """Write the labels and logits of a split to an npz file, atomically."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, labels=np.asarray(labels), logits=np.asarray(logits, dtype=np.float32))
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels, logits) from a predictions file."""
    with np.load(path, allow_pickle=False) as npz:
        return npz["labels"], npz["logits"]


# The records a study writes into the checkout while it runs; a change there is not a change of the
# code that produced a result, so it does not make the commit '-dirty'.
RECORD_PATHS = ("leaderboards", "studies/*.journal", "reports")


def git_commit(root: Path | None = None) -> str | None:
    """Return the commit of the checkout holding the harness root `root` (with '-dirty' if a tracked file outside its RECORD_PATHS has local changes), or None."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        # the whole checkout (':/'), less the records, which are relative to the harness root (the cwd)
        excluded = [f":(exclude){path}" for path in RECORD_PATHS]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", *excluded], cwd=root, capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Return {package: installed version or None}."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment(device: torch.device, data_file: Path | None = None, data_md5: str | None = None, md5_verified: bool | None = None) -> dict[str, Any]:
    """Return what is needed to reproduce a run: versions, device, commit and data file identity."""
    device = torch.device(device)
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        # absolute: the run may be read from anywhere (bench submit's hint, a report, another machine's copy)
        "data_file": str(Path(data_file).resolve()) if data_file else None,
        "data_md5": data_md5,
        "data_md5_verified": md5_verified,
        "command": " ".join(sys.argv),
    }


def is_done(run_dir: Path) -> bool:
    """Return whether `run_dir` holds a finished run."""
    return (Path(run_dir) / RESULT).is_file()


class StagedRun:
    """A run directory built in a staging folder and moved into place by `commit()`.

    Until commit, `path` is the staging folder (inspect it to follow a long run); if the
    process dies, the final directory is untouched and the staging folder is left behind
    with a `.staging-` prefix (removed by the next run of the same config, `clean_stale_folders`).
    """

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_folders(self.final.parent, self.final.name)
        self.path = self.final.parent / f".staging-{self.final.name}-{os.getpid()}"
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir()

    def commit(self) -> Path:
        """Move the staged run to its final place (replacing an older run there) and return that path."""
        old = None
        if self.final.exists():
            old = self.final.parent / f".old-{self.final.name}-{os.getpid()}"
            os.replace(self.final, old)
        os.replace(self.path, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        """Remove the staging folder."""
        shutil.rmtree(self.path, ignore_errors=True)


def _pid_alive(text: str) -> bool:
    try:
        pid = int(text)
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
