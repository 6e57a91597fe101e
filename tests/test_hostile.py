"""Hostile and careless input: every case ends with exit 2, one line on stderr, no traceback and nothing written.

A generator of cases (`CASES`) against `bench evaluate`, `bench run`, `bench tune` and a few
other commands, run in-process through `benchmark.cli.main`: memory bombs (compressed archives,
extended tar headers claiming gigabytes), outputs that cannot be written (checked before
anything is), values out of range or of the wrong type, storage URLs that would create or
overwrite files, and messages that used to span several lines; plus cases that were always
refused, to keep them so. The bombs also run in a child process whose peak RSS is measured
(a generous bound, never a time). Leftovers of killed processes are simulated with the id of a
process that has exited.

`python tests/test_hostile.py` prints, for the code on the import path, how many cases of each
category are handled (run it with PYTHONPATH pointing at another checkout to compare).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import subprocess
import sys
import tarfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from benchmark import submission as sub
from benchmark.cli import main
from benchmark.models import build_model
from benchmark.store import write_json
from benchmark.synthetic import synthetic_arrays, write_synthetic
from benchmark.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
MiB = 2**20
SIZES = {"train": 32, "val": 16, "test": 24}
RSS_BOUND_MB = 400  # growth of a child's peak RSS while it refuses every bomb (they claim 1 to 100 GiB)


# --- bombs ---------------------------------------------------------------------------------------


def ext_header(kind: bytes, size: int, fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    """Return one 512-byte header of an extended header (PAX `x`, GNU long name `L`) declaring `size` bytes of data."""
    info = tarfile.TarInfo("././@PaxHeader" if kind in (tarfile.XHDTYPE, tarfile.XGLTYPE) else "././@LongLink")
    info.type, info.size = kind, size
    return info.tobuf(format=fmt)


def compressed_bomb(kind: bytes, claimed: int, codec: str) -> bytes:
    """Return a compressed tar whose first header declares `claimed` bytes of zeros, all present once decompressed.

    Built from concatenated members, each 1 MiB of zeros (gzip, bzip2 and xz readers read them as
    one stream): about claimed/1000 bytes for gzip, far less for bzip2 and xz, made in milliseconds.
    """
    compress: Callable[[bytes], bytes] = {"gz": lambda b: gzip.compress(b, mtime=0), "bz2": bz2.compress, "xz": lzma.compress}[codec]
    return compress(ext_header(kind, claimed)) + compress(b"\0" * MiB) * (claimed // MiB) + compress(b"\0" * 1024)


def pax_record(key: str, value: str) -> bytes:
    """Return one PAX record `<length> key=value\\n` (the length counts itself)."""
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def member(name: str, data: bytes, kind: bytes = tarfile.REGTYPE) -> bytes:
    """Return a ustar member (header and padded data)."""
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data)
    return info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)


def with_pax(records: bytes, *, times: int = 1) -> bytes:
    """Return a plain tar of one small file preceded by `times` PAX headers holding `records`."""
    header = ext_header(tarfile.XHDTYPE, len(records)) + records + b"\0" * (-len(records) % 512)
    return header * times + member("notes.txt", b"hello") + b"\0" * 1024


BOMBS: dict[str, Callable[[], bytes]] = {
    "gzip tar, PAX header claiming 1 GiB (1 MB file)": lambda: compressed_bomb(tarfile.XHDTYPE, 1024 * MiB, "gz"),
    "gzip tar, PAX header claiming 2 GiB (2 MB file)": lambda: compressed_bomb(tarfile.XHDTYPE, 2048 * MiB, "gz"),
    "gzip tar, GNU long name claiming 1 GiB": lambda: compressed_bomb(tarfile.GNUTYPE_LONGNAME, 1024 * MiB, "gz"),
    "bzip2 tar, PAX header claiming 1 GiB": lambda: compressed_bomb(tarfile.XHDTYPE, 1024 * MiB, "bz2"),
    "xz tar, PAX header claiming 1 GiB": lambda: compressed_bomb(tarfile.XHDTYPE, 1024 * MiB, "xz"),
    "plain tar, PAX header claiming 2 GiB (2 kB file)": lambda: ext_header(tarfile.XHDTYPE, 2048 * MiB) + b"\0" * 1536,
    "plain tar, PAX header claiming 100 GiB (base-256 size)": lambda: ext_header(tarfile.XHDTYPE, 100 * 1024 * MiB, tarfile.GNU_FORMAT) + b"\0" * 1536,
    "plain tar, GNU long name of 16 MiB": lambda: ext_header(tarfile.GNUTYPE_LONGNAME, 16 * MiB) + b"a" * (16 * MiB) + b"\0" * 1536,
}


# --- inputs shared by the cases (read-only) --------------------------------------------------------


@dataclass
class Inputs:
    root: Path
    data: Path  # a folder with a good synthetic breastmnist.npz
    bad_data: dict[str, Path]  # variant -> folder whose breastmnist.npz has bad labels in every split
    files: dict[str, bytes]  # the members of a valid submission (real weights)
    archive: Path  # that submission
    run_dir: Path  # the finished run it was packaged from
    afile: Path  # a plain file (for "a path below a file")
    adir: Path  # an existing, empty folder


BAD_LABELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "0-d": lambda y: np.array(1),
    "words": lambda y: np.where(y == 1, "pos", "neg"),
    "digit strings": lambda y: y.astype(str),
    "0.4": lambda y: np.where(y == 1, 1.0, 0.4),
    "1.4": lambda y: np.where(y == 1, 1.4, 0.0),
    "NaN": lambda y: np.where(y == 1, np.nan, 0.0),
}


def _fake_run(root: Path) -> Path:
    task = get_task("breastmnist")
    run_dir = root / "run"
    run_dir.mkdir()
    state = build_model(task.architecture, 1, task.n_labels).state_dict()
    (run_dir / sub.WEIGHTS).write_bytes(save_safetensors({k: v.contiguous() for k, v in state.items()}))
    config = {"task": "breastmnist", "method": "ce", "seed": 3, "lr": 1e-3, "epochs": 1, "batch_size": 128, "as_rgb": False}
    write_json(run_dir / "config.json", config)
    write_json(run_dir / "result.json", {"task": "breastmnist", "method": "ce", "seed": 3, "config": config, "architecture": task.architecture, "train_seconds": 1.5, "test": {"auc": 0.5}})
    return run_dir


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    return make_inputs(tmp_path_factory.mktemp("hostile-inputs"))


def make_inputs(root: Path) -> Inputs:
    task = get_task("breastmnist")
    write_synthetic(task, root / "data", sizes=SIZES)
    bad = {}
    for name, change in BAD_LABELS.items():
        arrays = synthetic_arrays(task, SIZES)
        for split in ("train", "val", "test"):
            arrays[f"{split}_labels"] = change(arrays[f"{split}_labels"])
        folder = root / "bad" / re.sub(r"\W+", "-", name)
        folder.mkdir(parents=True)
        np.savez(folder / task.filename(), **arrays)
        bad[name] = folder
    run_dir = _fake_run(root)
    archive = sub.package(run_dir, root / "good.tar")
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    (root / "afile").write_text("a file, not a folder\n")
    (root / "adir").mkdir()
    return Inputs(root, root / "data", bad, files, archive, run_dir, root / "afile", root / "adir")


# --- the cases -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One command line; `build(inputs, folder)` writes the case's own input files under folder/in and returns the argv."""

    name: str
    category: str
    build: Callable[[Inputs, Path], list[str]]
    expect: str  # a regular expression the message must match
    bomb: bool = False


BOMB = "1 memory bomb"
WRITE = "2 write before a failure"
TRACE = "3 traceback instead of a message"
SILENT = "4 bad input accepted silently"
LINES = "6 message of several lines"
KEPT = "kept: refused before, and still"


def _put(folder: Path, name: str, data: bytes) -> Path:
    path = folder / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def evaluate(path: Path, inp: Inputs, *extra: str, data: Path | None = None) -> list[str]:
    return ["evaluate", str(path), "--data-root", str(data or inp.data), "--no-verify", "--device", "cpu", *extra]


def archive_case(build_files: Callable[[Inputs], dict[str, bytes] | bytes], *extra: str) -> Callable[[Inputs, Path], list[str]]:
    """Return a builder: the archive made of `build_files(inputs)` (members, or raw file bytes), evaluated with `extra`."""

    def build(inp: Inputs, folder: Path) -> list[str]:
        made = build_files(inp)
        data = made if isinstance(made, bytes) else sub._tar_bytes(made)
        out = folder / "out"
        out.mkdir(parents=True, exist_ok=True)
        return evaluate(_put(folder, "sub.tar", data), inp, "--json", str(out / "eval.json"), "--leaderboard", "--leaderboard-dir", str(out / "lb"), *extra)

    return build


def manifest(inp: Inputs, *, tiny: bool = False, config: dict[str, Any] | None = None, text: Callable[[str], str] | None = None, **changes: Any) -> dict[str, bytes]:
    """Return the valid submission's members with the manifest changed, and then its JSON text through `text`.

    With `tiny`, the weights are small (valid safetensors, wrong for the architecture) and the
    checksum fixed: for cases refused before the weights are compared with the architecture.
    """
    files = dict(inp.files)
    m = json.loads(files[sub.MANIFEST])
    if tiny:
        files[sub.WEIGHTS] = save_safetensors({"x": torch.zeros(1)})
        m["files"] = {sub.WEIGHTS: {"sha256": hashlib.sha256(files[sub.WEIGHTS]).hexdigest(), "size": len(files[sub.WEIGHTS])}}
    m.update(changes)
    if config:
        m["config"] = {**m["config"], **config}
    raw = json.dumps(m)
    files[sub.MANIFEST] = (text(raw) if text else raw).encode()
    return files


def run_args(inp: Inputs, folder: Path, *extra: str, data: Path | None = None) -> list[str]:
    # one epoch on 32 images, should a check ever fail to stop it
    return ["run", "--task", "breastmnist", "--epochs", "1", "--data-root", str(data or inp.data), "--no-verify", "--device", "cpu", "--quiet", "--runs", str(folder / "out" / "runs"), *extra]


def tune_args(inp: Inputs, folder: Path, *extra: str) -> list[str]:
    return ["tune", "--task", "breastmnist", "--method", "ce", "--trials", "1", "--epochs", "1", "--space", "lr", "--data-root", str(inp.data), "--no-verify", "--device", "cpu", "--runs", str(folder / "out" / "runs"), *extra]


def _deep(raw: str, depth: int) -> str:
    return raw.replace('"method": "ce"', '"method": "ce", "deep": ' + "[" * depth + "]" * depth, 1)


CASES: list[Case] = [
    # 1. memory bombs: refused before anything is decompressed or read whole
    *[Case(name, BOMB, archive_case(lambda inp, make=make: make()), r"compressed; a submission must be a plain|declares \d+ bytes", bomb=True) for name, make in BOMBS.items()],
    Case("zstd-compressed file", BOMB, archive_case(lambda inp: b"\x28\xb5\x2f\xfd" + bytes(2048)), "zstd-compressed"),
    Case("zip archive", BOMB, archive_case(lambda inp: b"PK\x03\x04" + bytes(2048)), "is a zip archive"),
    Case("PAX record changing a member's size", BOMB, archive_case(lambda inp: with_pax(pax_record("size", "100000000"))), "sets 'size'"),
    Case("PAX GNU sparse map", BOMB, archive_case(lambda inp: with_pax(pax_record("GNU.sparse.map", "0,1"))), "sets 'GNU.sparse.map'"),
    Case("malformed PAX record", BOMB, archive_case(lambda inp: with_pax(b"99 path\n")), "malformed record"),
    Case("six PAX headers before one member", BOMB, archive_case(lambda inp: with_pax(pax_record("comment", "x"), times=6)), "more extended tar headers"),
    Case("GNU sparse member", BOMB, archive_case(lambda inp: member("model.safetensors", b"\0" * 512, tarfile.GNUTYPE_SPARSE) + bytes(1024)), "sparse file"),
    # 2. an output that cannot be written: refused before the leaderboard entry (or anything) is written
    Case("--json is an existing folder, with --leaderboard", WRITE, lambda inp, f: evaluate(inp.archive, inp, "--json", str(inp.adir), "--leaderboard", "--leaderboard-dir", str(f / "out" / "lb")), "is a folder; give a file name"),
    Case("--json in a folder that does not exist, with --leaderboard", WRITE, lambda inp, f: evaluate(inp.archive, inp, "--json", str(f / "out" / "missing" / "e.json"), "--leaderboard", "--leaderboard-dir", str(f / "out" / "lb")), "does not exist; create it first"),
    Case("--json below a file", WRITE, lambda inp, f: evaluate(inp.archive, inp, "--json", str(inp.afile / "e.json"), "--leaderboard", "--leaderboard-dir", str(f / "out" / "lb")), "is a file, not a folder"),
    Case("submit -o below a file", WRITE, lambda inp, f: ["submit", str(inp.run_dir), "-o", str(inp.afile / "x.tar")], "is a file, not a folder"),
    # 3. tracebacks (exit 1) before
    Case("manifest seed 1e30, --leaderboard", TRACE, archive_case(lambda inp: manifest(inp, config={"seed": 1e30})), "config/seed"),
    Case("manifest seed 2**40, --leaderboard", TRACE, archive_case(lambda inp: manifest(inp, config={"seed": 2**40})), "config/seed"),
    Case("manifest nested 500,000 levels deep", TRACE, archive_case(lambda inp: manifest(inp, tiny=True, text=lambda raw: _deep(raw, 500_000))), "nested more than"),
    Case("manifest in_channels 1.0", TRACE, archive_case(lambda inp: manifest(inp, tiny=True, in_channels=1.0)), "at in_channels"),
    Case("--max-size-mb nan", TRACE, lambda inp, f: evaluate(inp.archive, inp, "--max-size-mb", "nan"), "max-size-mb.*positive"),
    Case("--max-size-mb inf", TRACE, lambda inp, f: evaluate(inp.archive, inp, "--max-size-mb", "inf"), "max-size-mb.*positive"),
    Case("--leaderboard-dir below a file", TRACE, lambda inp, f: evaluate(inp.archive, inp, "--leaderboard", "--leaderboard-dir", str(inp.afile / "lb")), "is a file, not a folder"),
    Case("test labels a 0-d array (--no-verify)", TRACE, lambda inp, f: evaluate(inp.archive, inp, data=inp.bad_data["0-d"]), "test_labels has dtype"),
    Case("test labels words (--no-verify)", TRACE, lambda inp, f: evaluate(inp.archive, inp, data=inp.bad_data["words"]), "test_labels has dtype"),
    Case("run --seed 99999999999999999999999", TRACE, lambda inp, f: run_args(inp, f, "--seed", "99999999999999999999999"), "--seed: must be from 0 to 4294967295"),
    Case("run --out below a file", TRACE, lambda inp, f: run_args(inp, f, "--out", str(inp.afile / "run")), "is a file, not a folder"),
    Case("run --runs below a file", TRACE, lambda inp, f: [*run_args(inp, f)[:-2], "--runs", str(inp.afile / "runs")], "is a file, not a folder"),
    Case("run, train labels a 0-d array (--no-verify)", TRACE, lambda inp, f: run_args(inp, f, data=inp.bad_data["0-d"]), "train_labels has dtype"),
    Case("tune --runs below a file", TRACE, lambda inp, f: [*tune_args(inp, f)[:-2], "--runs", str(inp.afile / "runs")], "is a file, not a folder"),
    Case("tune --seed 2**64", TRACE, lambda inp, f: tune_args(inp, f, "--seed", str(2**64)), "--seed: must be from 0"),
    Case("leaderboard init --leaderboard-dir below a file", TRACE, lambda inp, f: ["leaderboard", "init", "--task", "breastmnist", "--leaderboard-dir", str(inp.afile / "lb")], "is a file, not a folder"),
    # 4. accepted silently before
    Case("tune --timeout nan", SILENT, lambda inp, f: tune_args(inp, f, "--timeout", "nan"), "--timeout: must be a positive finite number"),
    Case("tune --timeout inf", SILENT, lambda inp, f: tune_args(inp, f, "--timeout", "inf"), "--timeout: must be a positive finite number"),
    Case("tune --storage sqlite:///FILE, FILE a small text file", SILENT, lambda inp, f: tune_args(inp, f, "--storage", f"sqlite:///{_put(f, 'notes.txt', b'my notes')}"), "is not an SQLite database; refusing to overwrite"),
    Case("tune --storage sqlite:///DIR/missing/x.db", SILENT, lambda inp, f: tune_args(inp, f, "--storage", f"sqlite:///{f / 'out' / 'missing' / 'x.db'}"), "does not exist; create it first"),
    Case("tune --storage sqlite:///FOLDER", SILENT, lambda inp, f: tune_args(inp, f, "--storage", f"sqlite:///{inp.adir}"), "is a folder, not an SQLite database"),
    Case("report --storage notaurl", SILENT, lambda inp, f: ["report", "--runs", str(f / "out" / "runs"), "-o", str(f / "out" / "rep"), "--storage", "notaurl"], "not a database URL"),
    Case("report --storage sqlite:///missing.db", SILENT, lambda inp, f: ["report", "--runs", str(f / "out" / "runs"), "-o", str(f / "out" / "rep"), "--storage", f"sqlite:///{f / 'out' / 'missing.db'}"], "does not exist"),
    Case("test labels 0.4 (--no-verify)", SILENT, lambda inp, f: evaluate(inp.archive, inp, data=inp.bad_data["0.4"]), "values other than 0 and 1"),
    Case("test labels 1.4 (--no-verify)", SILENT, lambda inp, f: evaluate(inp.archive, inp, data=inp.bad_data["1.4"]), "values other than 0 and 1"),
    Case("test labels digit strings (--no-verify)", SILENT, lambda inp, f: evaluate(inp.archive, inp, data=inp.bad_data["digit strings"]), "test_labels has dtype"),
    Case("manifest seed 1.0", SILENT, archive_case(lambda inp: manifest(inp, config={"seed": 1.0})), "config/seed"),
    Case("manifest nested 100 levels deep", SILENT, archive_case(lambda inp: manifest(inp, text=lambda raw: _deep(raw, 100))), "nested more than"),
    Case("manifest num_outputs 1.0", SILENT, archive_case(lambda inp: manifest(inp, num_outputs=1.0)), "at num_outputs"),
    Case("manifest input_shape [28.0, 28.0]", SILENT, archive_case(lambda inp: manifest(inp, preprocessing={"normalize": sub.NORMALIZE, "as_rgb": False, "input_shape": [28.0, 28.0]})), "input_shape"),
    Case("manifest train_seconds NaN", SILENT, archive_case(lambda inp: manifest(inp, text=lambda raw: raw.replace('"train_seconds": 1.5', '"train_seconds": NaN'))), "NaN is not allowed"),
    Case("manifest train_seconds 1e400", SILENT, archive_case(lambda inp: manifest(inp, text=lambda raw: raw.replace('"train_seconds": 1.5', '"train_seconds": 1e400'))), "out of range"),
    # 6. several lines before
    Case("random bytes", LINES, archive_case(lambda inp: np.random.default_rng(0).bytes(5000)), "not a valid submission archive"),
    Case("an empty file", LINES, archive_case(lambda inp: b""), "not a valid submission archive"),
    Case("a JSON file", LINES, archive_case(lambda inp: inp.files[sub.MANIFEST]), "not a valid submission archive"),
    Case("tune --storage postgresql on a closed port", LINES, lambda inp, f: tune_args(inp, f, "--storage", "postgresql://bench@127.0.0.1:1/none"), "cannot connect to the storage"),
    # kept: refused before, keep them refused
    Case("missing file", KEPT, lambda inp, f: evaluate(f / "in" / "nothing.tar", inp), "does not exist"),
    Case("a folder as the submission", KEPT, lambda inp, f: evaluate(inp.adir, inp), "is not a file"),
    Case("--max-size-mb 0", KEPT, lambda inp, f: evaluate(inp.archive, inp, "--max-size-mb", "0"), "max-size-mb.*positive"),
    Case("--max-size-mb 1 (archive of 43 MB)", KEPT, lambda inp, f: evaluate(inp.archive, inp, "--max-size-mb", "1"), "over the allowed 1 MB"),
    Case("member with a parent path", KEPT, archive_case(lambda inp: member("../evil.txt", b"x") + bytes(1024)), "outside the archive's root"),
    Case("member that is a symlink", KEPT, archive_case(lambda inp: member("link", b"", tarfile.SYMTYPE) + bytes(1024)), "is a link"),
    Case("a pickle as the weights", KEPT, archive_case(lambda inp: {**inp.files, sub.WEIGHTS: b"\x80\x04K\x01."}), "contains a pickle"),
    Case("checksum mismatch", KEPT, archive_case(lambda inp: {**inp.files, sub.WEIGHTS: inp.files[sub.WEIGHTS][:-1] + b"\0"}), "checksum mismatch"),
    Case("manifest in_channels true", KEPT, archive_case(lambda inp: manifest(inp, tiny=True, in_channels=True)), "in_channels"),
    Case("manifest with a 5000-digit integer", KEPT, archive_case(lambda inp: manifest(inp, tiny=True, text=lambda raw: raw.replace('"train_seconds": 1.5', '"train_seconds": ' + "9" * 5000))), "not valid JSON"),
    Case("run --task nosuch", KEPT, lambda inp, f: ["run", "--task", "nosuch", "--runs", str(f / "out" / "runs")], "unknown task"),
    Case("run --set lr=nan", KEPT, lambda inp, f: run_args(inp, f, "--set", "lr=nan"), "invalid value for lr"),
    Case("tune --space nosuch", KEPT, lambda inp, f: tune_args(inp, f, "--space", "nosuch"), "unknown hyperparameter 'nosuch'"),
    Case("tune --trials 0", KEPT, lambda inp, f: [*tune_args(inp, f), "--trials", "0"], "trials"),
]


# --- running a case ----------------------------------------------------------------------------------


def listing(*roots: Path) -> dict[str, tuple[int, int]]:
    """Return {path: (size, mtime)} of every file and folder under `roots`."""
    out = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.exists() else []:
            stat = path.lstat()
            out[str(path)] = (stat.st_size if path.is_file() else -1, stat.st_mtime_ns if path.is_file() else 0)
    return out


@dataclass
class Outcome:
    code: Any
    out: str
    err: str
    written: list[str]

    def problems(self, expect: str | None) -> list[str]:
        """Return what is wrong with this outcome for a hostile input (empty when it is handled).

        With `expect` None the message's wording is not checked (the table does that separately).
        """
        found = []
        if self.code != 2:
            found.append(f"exit {self.code}")
        if "Traceback" in self.err or "Traceback" in self.out:
            found.append("traceback")
        lines = self.err.splitlines()
        if len(lines) != 1 or not re.match(r"^bench( \w+)?: error: ", self.err):
            found.append(f"{len(lines)} lines on stderr")
        elif expect is not None and not re.search(expect, self.err):
            found.append(f"message does not match {expect!r}")
        if self.out:
            found.append("printed on stdout")
        if self.written:
            found.append(f"wrote {', '.join(self.written[:3])}")
        return found


def run_case(case: Case, inp: Inputs, folder: Path) -> Outcome:
    """Build the case in `folder`, run it in-process from that folder, and return what happened."""
    folder.mkdir(parents=True, exist_ok=True)
    argv = case.build(inp, folder)
    before = listing(folder, inp.root)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code: Any = main(argv)
            except BaseException as exc:  # what used to escape main()
                traceback.print_exc()
                code = f"raised {type(exc).__name__}"
    finally:
        os.chdir(cwd)
    after = listing(folder, inp.root)
    written = sorted(p for p in after.keys() - before.keys()) + sorted(p for p in before.keys() & after.keys() if before[p] != after[p])
    return Outcome(code, out.getvalue(), err.getvalue(), written)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_gives_one_line_exit_2_and_writes_nothing(case: Case, inputs: Inputs, tmp_path: Path) -> None:
    outcome = run_case(case, inputs, tmp_path / "case")
    assert not outcome.problems(case.expect), f"{outcome.problems(case.expect)}; stderr: {outcome.err[-2000:]!r}"
    for path in (tmp_path / "case" / "in").glob("*"):  # the tampered archives are up to 43 MB each
        path.unlink()


# --- memory: the bombs in a child process, peak RSS measured --------------------------------------------

CHILD = """
import contextlib, io, json, resource, sys

def peak_kb():
    # VmHWM: this address space's own high-water mark. ru_maxrss would start at the parent's
    # RSS, which Linux carries over fork and exec, and hide growth below it
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

import benchmark.cli, benchmark.leaderboard, benchmark.submission  # imports are not what is measured
base = peak_kb()
cases = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = benchmark.cli.main(argv)
        except BaseException as exc:
            code = "raised " + type(exc).__name__
    cases.append({"code": code, "err": err.getvalue(), "peak_kb": peak_kb()})
print(json.dumps({"base_kb": base, "cases": cases}))
"""


def peak_rss(argvs: list[list[str]], pythonpath: Path = REPO) -> dict[str, Any]:
    """Run `bench` on each argv in one child process; return its peak RSS (KiB) after its imports and after each command."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argvs)], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_bombs_are_refused_within_a_small_fixed_memory_bound(tmp_path: Path) -> None:
    paths = []
    for i, make in enumerate(BOMBS.values()):
        paths.append(tmp_path / f"bomb{i}.tar")
        paths[-1].write_bytes(make())
    assert max(p.stat().st_size for p in paths) < 17 * MiB  # each under the default 200 MB cap
    measured = peak_rss([["evaluate", str(p), "--device", "cpu"] for p in paths])
    for name, case in zip(BOMBS, measured["cases"]):
        assert case["code"] == 2 and len(case["err"].splitlines()) == 1 and "Traceback" not in case["err"], (name, case)
    growth_mb = (measured["cases"][-1]["peak_kb"] - measured["base_kb"]) / 1024
    assert growth_mb < RSS_BOUND_MB, f"peak RSS grew by {growth_mb:.0f} MB refusing the bombs"


# --- the rollback: a failure after the leaderboard entry is written takes the entry back ------------------


def test_a_json_that_cannot_be_moved_into_place_rolls_the_leaderboard_entry_back(inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark import store

    board, report = tmp_path / "lb", tmp_path / "eval.json"
    argv = evaluate(inputs.archive, inputs, "--json", str(report), "--leaderboard", "--leaderboard-dir", str(board))
    commit = store.PendingWrite.commit

    def full_disk(self: store.PendingWrite) -> None:
        if self.path == report:
            raise OSError(28, "No space left on device", str(report))
        commit(self)

    monkeypatch.setattr(store.PendingWrite, "commit", full_disk)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "Traceback" not in err
    assert not report.exists() and not (board / "breastmnist.json").exists()
    assert not [p for p in board.rglob("*") if p.name != ".breastmnist.lock"]  # no sidecar, no temporary
    # the same command with room to write: both outputs, and the entry the JSON names
    monkeypatch.setattr(store.PendingWrite, "commit", commit)
    assert main(argv) == 0
    record = json.loads(report.read_text())
    entries = json.loads((board / "breastmnist.json").read_text())["entries"]
    assert record["leaderboard_entry"] in [e["id"] for e in entries]
    assert not [p for p in tmp_path.rglob("*.tmp")]


# --- leftovers of killed processes ---------------------------------------------------------------------------


def dead_pid() -> int:
    """Return the id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_leaderboard_writers_temporaries_and_sidecars_are_removed_by_the_next_write(tmp_path: Path) -> None:
    from benchmark import store

    board, dead = tmp_path / "lb", dead_pid()
    assert main(["leaderboard", "init", "--task", "breastmnist", "--leaderboard-dir", str(board)]) == 0
    (board / "breastmnist").mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [
            board / f".breastmnist.json.{dead}-{store.HOST_TAG}.abcd1234.tmp",
            board / "breastmnist" / f".sub-0123456789ab.0123456789ab.safetensors.{dead}-{store.HOST_TAG}.abcd1234.tmp",
            board / "breastmnist" / "sub-0123456789ab.0123456789ab.safetensors",  # written before a kill, never referenced
        ]
        kept = [
            board / f".breastmnist.json.{live.pid}-{store.HOST_TAG}.abcd1234.tmp",  # a live writer's
            board / f".breastmnist.json.{dead}-ffffff.abcd1234.tmp",  # another machine's (same id, other host)
            board / "breastmnist" / "notes.txt",  # not a sidecar
        ]
        for path in stale + kept:
            path.write_bytes(b"x")
        assert main(["leaderboard", "init", "--task", "breastmnist", "--leaderboard-dir", str(board)]) == 0
        assert [p.exists() for p in stale] == [False] * len(stale)
        assert [p.exists() for p in kept] == [True] * len(kept)
    finally:
        live.kill()
        live.wait()


def test_a_killed_runs_staging_folder_is_removed_and_a_run_left_aside_is_put_back(tmp_path: Path) -> None:
    from benchmark.runner import RunSpec, run

    dead = dead_pid()
    final = tmp_path / "runs" / "r1"
    final.parent.mkdir(parents=True)
    (final.parent / f".staging-r1-{dead}").mkdir()  # killed while training
    aside = final.parent / f".old-r1-{dead}"  # killed between the two renames of a commit
    aside.mkdir()
    (aside / "result.json").write_text(json.dumps({"task": "breastmnist", "seed": 0}))
    result, run_dir = run(RunSpec(task="breastmnist", method="ce", out=str(final), device="cpu"))
    assert run_dir == final and result["seed"] == 0  # the finished run, back in place: nothing retrained
    assert sorted(p.name for p in final.parent.iterdir()) == ["r1"]


def test_a_killed_reports_staging_folder_is_removed_by_the_next_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead = dead_pid()
    (tmp_path / f".staging-rep-{dead}" / "figures").mkdir(parents=True)
    (tmp_path / "runs").mkdir()
    assert main(["report", "--runs", str(tmp_path / "runs"), "-o", str(tmp_path / "rep"), "--leaderboards", str(tmp_path / "lb")]) == 2
    assert "no finished runs" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


# --- a table of the cases, for the code on the import path -------------------------------------------------


def leftover_scenarios() -> dict[str, Callable[[Path], bool]]:
    """Return {name: check(folder) -> handled} for the killed-process leftovers (category 5)."""

    def temp(folder: Path) -> bool:
        from benchmark import store

        tag = getattr(store, "HOST_TAG", "000000")
        board = folder / "lb"
        board.mkdir(parents=True)
        stale = board / f".breastmnist.json.{dead_pid()}-{tag}.abcd1234.tmp"
        stale.write_bytes(b"x")
        with contextlib.redirect_stdout(io.StringIO()):
            main(["leaderboard", "init", "--task", "breastmnist", "--leaderboard-dir", str(board)])
        return not stale.exists()

    def sidecar(folder: Path) -> bool:
        board = folder / "lb"
        (board / "breastmnist").mkdir(parents=True)
        orphan = board / "breastmnist" / "sub-0123456789ab.0123456789ab.safetensors"
        orphan.write_bytes(b"x")
        with contextlib.redirect_stdout(io.StringIO()):
            main(["leaderboard", "init", "--task", "breastmnist", "--leaderboard-dir", str(board)])
        return not orphan.exists()

    def report(folder: Path) -> bool:
        (folder / "runs").mkdir(parents=True)
        staging = folder / f".staging-rep-{dead_pid()}"
        staging.mkdir()
        with contextlib.redirect_stderr(io.StringIO()):
            main(["report", "--runs", str(folder / "runs"), "-o", str(folder / "rep"), "--leaderboards", str(folder / "lb")])
        return not staging.exists()

    return {"killed leaderboard add: its temporary file": temp, "killed leaderboard add: an unreferenced sidecar": sidecar, "killed report: its staging folder": report}


def table(root: Path) -> None:  # pragma: no cover - run as a script
    """Print category, cases tried, handled, failed (and the failures) for the code on the import path.

    Handled: exit 2, one line on stderr, no traceback, nothing written, and for the bombs a peak
    RSS growth under RSS_BOUND_MB; cases refused with a message about something else are listed.
    """
    import benchmark

    inp = make_inputs(root / "inputs")
    rows: dict[str, list[int]] = {}
    failures: list[str] = []
    others: list[str] = []  # handled (exit 2, one line, nothing written) with a message about something else
    bombs = {c.name for c in CASES if c.bomb}
    for i, case in enumerate(CASES):
        outcome = run_case(case, inp, root / f"case{i}")
        problems = outcome.problems(None)
        if case.name in bombs:
            measured = peak_rss([case.build(inp, root / f"case{i}-rss")], Path(benchmark.__file__).parents[1])
            growth = (measured["cases"][0]["peak_kb"] - measured["base_kb"]) / 1024
            print(f"  peak RSS growth {growth:7.0f} MiB  {case.name}")
            if growth >= RSS_BOUND_MB:
                problems.append(f"peak RSS grew {growth:.0f} MiB")
        row = rows.setdefault(case.category, [0, 0])
        row[0] += 1
        row[1] += not problems
        last = outcome.err.strip().splitlines()[-1][:160] if outcome.err.strip() else ""
        if problems:
            failures.append(f"{case.category} | {case.name}: {'; '.join(problems)} | {last}")
        elif outcome.problems(case.expect):
            others.append(f"{case.category} | {case.name}: refused, but not for this: {last}")
        for path in (root / f"case{i}" / "in").glob("*"):
            path.unlink()
    for i, (name, check) in enumerate(leftover_scenarios().items()):
        handled = check(root / f"left{i}")
        row = rows.setdefault("5 leftovers after a kill", [0, 0])
        row[0] += 1
        row[1] += handled
        if not handled:
            failures.append(f"5 leftovers after a kill | {name}: left behind")
    print(f"code: {benchmark.__file__}")
    print(f"{'category':<36} {'tried':>5} {'handled':>7} {'failed':>6}")
    for category in sorted(rows):
        tried, handled = rows[category]
        print(f"{category:<36} {tried:>5} {handled:>7} {tried - handled:>6}")
    print("failed:\n" + "\n".join(failures))
    print("handled, with a message about something else:\n" + "\n".join(others))


if __name__ == "__main__":  # pragma: no cover
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        table(Path(folder))
