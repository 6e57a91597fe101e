"""Submissions: packaging, the exact round trip, every rejection, and that nothing is ever unpickled."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from benchmark import leaderboard as lb
from benchmark import submission as sub
from benchmark.cli import main
from benchmark.errors import BenchError
from benchmark.models import build_model
from benchmark.runner import RunSpec, run
from benchmark.store import load_predictions, write_json
from benchmark.synthetic import write_synthetic
from benchmark.tasks import get_task


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic files for the tasks used here (evaluation reads only the test split)."""
    root = tmp_path_factory.mktemp("sub-data")
    write_synthetic(get_task("breastmnist"), root, sizes={"train": 64, "val": 16, "test": 24})
    write_synthetic(get_task("adrenalmnist3d"), root, sizes={"train": 8, "val": 4, "test": 6})
    return root


def _fake_run_dir(root: Path, task: str = "breastmnist", state: dict | None = None, as_rgb: bool = False) -> Path:
    """A finished run directory holding freshly initialised weights (no training needed to package)."""
    t = get_task(task)
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    model = build_model(t.architecture, 3 if as_rgb else 1, t.n_labels)
    weights = state if state is not None else model.state_dict()
    (run_dir / "model.safetensors").write_bytes(save_safetensors({k: v.contiguous() for k, v in weights.items()}))
    config = {"task": task, "method": "ce", "seed": 3, "lr": 1e-3, "epochs": 1, "batch_size": 128, "as_rgb": as_rgb, "weight_decay": 0.0}
    write_json(run_dir / "config.json", config)
    write_json(run_dir / "result.json", {"task": task, "method": "ce", "seed": 3, "config": config, "architecture": t.architecture, "train_seconds": 1.5, "test": {"auc": 0.5}})
    return run_dir


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid submission packaged from a run directory."""
    root = tmp_path_factory.mktemp("sub-archive")
    return sub.package(_fake_run_dir(root), root / "submission.tar", name="team-a")


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def make_tar(path: Path, files: dict[str, bytes], extra: Callable[[tarfile.TarFile], None] | None = None, mode: str = "w") -> Path:
    """Write a tar with `files` (and whatever `extra` adds: links, odd names)."""
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tar)
    return path


def with_manifest(files: dict[str, bytes], **changes) -> dict[str, bytes]:
    """Return `files` with the manifest updated (and its checksum list recomputed for the weights)."""
    manifest = json.loads(files[sub.MANIFEST])
    for key, value in changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    if sub.WEIGHTS in files and "files" not in changes:
        manifest["files"] = {sub.WEIGHTS: {"sha256": hashlib.sha256(files[sub.WEIGHTS]).hexdigest(), "size": len(files[sub.WEIGHTS])}}
    return {**files, sub.MANIFEST: json.dumps(manifest).encode()}


class Payload:
    """Unpickling this calls open(target, "w"): it creates a file. It must never be unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


# --- round trip ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "precision"), [("breastmnist", "fp32"), ("breastmnist", "bf16"), ("adrenalmnist3d", "auto")])
def test_round_trip_reproduces_the_runs_own_test_auc_exactly(task: str, precision: str, data_root: Path, tmp_path: Path) -> None:
    # exact in either precision: the organizer evaluates in the precision the run trained in, not the machine's auto
    overrides = {"epochs": 1, "precision": precision}
    result, run_dir = run(RunSpec(task=task, method="ce", seed=0, overrides=overrides, data_root=str(data_root), runs_root=str(tmp_path / "runs"), device="cpu", verify_md5=False))
    out = tmp_path / "model.tar"
    assert main(["submit", str(run_dir), "-o", str(out)]) == 0
    loaded = sub.load_submission(out)
    assert loaded.manifest["config"]["seed"] == 0 and loaded.manifest["architecture"] == get_task(task).architecture
    evaluation = sub.evaluate(loaded, data_root=str(data_root), device="cpu", verify_md5=False)
    labels, logits = load_predictions(run_dir / "predictions_test.npz")
    assert np.array_equal(evaluation.logits, logits)
    assert evaluation.test["auc"] == result["test"]["auc"] and evaluation.test["acc"] == result["test"]["acc"]
    # the thresholded accuracy: threshold from the official validation split, as the run chose its own
    val_labels, val_logits = load_predictions(run_dir / "predictions_val.npz")
    assert np.array_equal(evaluation.val_logits, val_logits)
    assert evaluation.test["acc_at_val_threshold"] == pytest.approx(result["test"]["acc_at_val_threshold"])
    # and through the organiser's command, with the JSON and a leaderboard entry
    report = tmp_path / "eval.json"
    board = tmp_path / "lb"
    assert main(["evaluate", str(out), "--data-root", str(data_root), "--no-verify", "--device", "cpu", "--json", str(report), "--leaderboard", "--leaderboard-dir", str(board)]) == 0
    record = json.loads(report.read_text())
    assert record["test"]["auc"] == result["test"]["auc"] and record["fixed_architecture"] is True
    (entry,) = [e for e in lb.read_board(task, board)["entries"] if not e.get("reference")]
    assert entry["kind"] == "submission" and entry["id"] == record["leaderboard_entry"] == f"sub-{loaded.weights_sha256[:12]}"
    assert entry["runs"][0]["test"]["auc"] == result["test"]["auc"]
    assert entry["runs"][0]["val_threshold"] == pytest.approx(result["val_threshold"])


def test_packaging_is_deterministic_and_holds_what_the_manifest_says(archive: Path, tmp_path: Path) -> None:
    files = members(archive)
    assert sorted(files) == [sub.MANIFEST, sub.WEIGHTS]
    manifest = json.loads(files[sub.MANIFEST])
    assert manifest["task"] == "breastmnist" and manifest["architecture"] == "resnet18_28"
    assert manifest["in_channels"] == 1 and manifest["num_outputs"] == 1 and manifest["name"] == "team-a"
    assert manifest["preprocessing"] == {"normalize": sub.NORMALIZE, "as_rgb": False, "input_shape": [28, 28]}
    assert manifest["config"]["lr"] == 1e-3 and manifest["harness_version"]
    assert manifest["files"][sub.WEIGHTS]["sha256"] == hashlib.sha256(files[sub.WEIGHTS]).hexdigest()
    again = sub.package(archive.parent / "run", tmp_path / "again.tar", name="team-a")
    assert again.read_bytes() == archive.read_bytes()


def test_submit_refuses_a_tuning_trials_run_unless_told_to(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a trial's run as the tuner trains it: no test evaluation
    result, run_dir = run(RunSpec(task="breastmnist", method="ce", overrides={"epochs": 1}, data_root=str(data_root), out=str(tmp_path / "trial"), device="cpu", verify_md5=False, evaluate_test=False))
    assert result["test"] is None
    out = tmp_path / "trial.tar"
    assert main(["submit", str(run_dir), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a tuning trial's run" in err and "the test split, which is for final models" in err and "--allow-tuning-trial" in err
    assert not out.exists()
    assert main(["submit", str(run_dir), "-o", str(out), "--allow-tuning-trial"]) == 0
    assert sub.load_submission(out).manifest["config"]["epochs"] == 1


def test_submit_refuses_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", str(tmp_path), "-o", str(tmp_path / "x.tar")]) == 2
    assert "not a finished run directory" in capsys.readouterr().err
    assert not (tmp_path / "x.tar").exists()


def test_validation_never_unpickles(archive: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    evaluation = sub.evaluate(sub.load_submission(archive), data_root=str(data_root), device="cpu", verify_md5=False)
    assert 0.0 <= evaluation.test["auc"] <= 1.0


# --- rejections ----------------------------------------------------------------------------------


def _state(**changes) -> dict[str, torch.Tensor]:
    state = build_model("resnet18_28", 1, 1).state_dict()
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            state.pop(key)
        else:
            state[key] = value
    return state


def _weights(state: dict[str, torch.Tensor]) -> bytes:
    return save_safetensors({k: v.contiguous() for k, v in state.items()})


def _flip_last(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    return bytes(flipped)


def _link(kind: bytes, name: str, target: str) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        tar.addfile(info)

    return add


def _manifest(base: dict[str, bytes]) -> dict:
    return json.loads(base[sub.MANIFEST])


def _new_weights(base: dict[str, bytes], **changes) -> dict[str, bytes]:
    return with_manifest({**base, sub.WEIGHTS: _weights(_state(**changes))})


# name -> (build the archive's files from the valid one's, or raw file bytes; extra tar action; expected message)
CASES: dict[str, tuple[Callable[[dict[str, bytes]], dict[str, bytes] | bytes], Callable | None, str]] = {
    "random bytes": (lambda b: np.random.default_rng(0).bytes(5000), None, "not a valid submission archive"),
    "a json file": (lambda b: b[sub.MANIFEST], None, "not a valid submission archive"),
    "empty file": (lambda b: b"", None, "not a valid submission archive"),
    "parent path": (lambda b: {**b, "../evil.txt": b"x"}, None, "outside the archive's root"),
    "absolute path": (lambda b: {**b, "/tmp/evil.txt": b"x"}, None, "outside the archive's root"),
    "symlink": (lambda b: b, _link(tarfile.SYMTYPE, "extra.safetensors", "/etc/passwd"), "is a link"),
    "hard link": (lambda b: b, _link(tarfile.LNKTYPE, "extra.safetensors", sub.WEIGHTS), "is a link"),
    "special file": (lambda b: b, _link(tarfile.FIFOTYPE, "pipe", ""), "not a regular file"),
    "no manifest": (lambda b: {sub.WEIGHTS: b[sub.WEIGHTS]}, None, "has no manifest.json"),
    "manifest not json": (lambda b: {**b, sub.MANIFEST: b"{task: breastmnist"}, None, "not valid JSON"),
    "manifest missing key": (lambda b: with_manifest(b, architecture=None), None, "'architecture' is a required property"),
    "manifest extra key": (lambda b: with_manifest(b, script="import os"), None, "Additional properties"),
    "manifest wrong type": (lambda b: with_manifest(b, in_channels=2), None, "fails its schema at in_channels"),
    "manifest other preprocessing": (
        lambda b: with_manifest(b, preprocessing={**_manifest(b)["preprocessing"], "normalize": "x / 255"}),
        None,
        "preprocessing/normalize",
    ),
    "manifest inconsistent": (lambda b: with_manifest(b, num_outputs=2), None, "num_outputs 2"),
    "checksum mismatch": (lambda b: {**b, sub.WEIGHTS: _flip_last(b[sub.WEIGHTS])}, None, "checksum mismatch"),
    "unlisted file": (lambda b: {**b, "notes.txt": b"hello"}, None, "does not list: notes.txt"),
    "unknown task": (lambda b: with_manifest(b, task="mnist", config={**_manifest(b)["config"], "task": "mnist"}), None, "unknown task 'mnist'"),
    "unknown architecture": (lambda b: with_manifest(b, architecture="resnet50"), None, "unknown architecture 'resnet50'"),
    "not safetensors": (lambda b: with_manifest({**b, sub.WEIGHTS: b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header!!}"}), None, "not a valid safetensors"),
    "missing weight": (lambda b: _new_weights(b, fc__bias=None), None, "missing 1 (fc.bias)"),
    "unexpected weight": (lambda b: _new_weights(b, backdoor=torch.zeros(3)), None, "unexpected 1 (backdoor)"),
    "wrong shape": (lambda b: _new_weights(b, fc__weight=torch.zeros(2, 512)), None, "fc.weight: (2, 512)"),
    "wrong dtype": (lambda b: _new_weights(b, fc__weight=torch.zeros(1, 512, dtype=torch.float64)), None, "float64 (expected (1, 512) float32)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_bad_submission_is_rejected_with_a_clear_message_and_nothing_written(case: str, archive: Path, tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build, extra, message = CASES[case]
    files = build(members(archive))
    path = tmp_path / "bad.tar"
    if isinstance(files, bytes):
        path.write_bytes(files)
    else:
        make_tar(path, files, extra)
    with pytest.raises(BenchError, match=re.escape(message)):
        sub.load_submission(path)
    report, board = tmp_path / "out.json", tmp_path / "lb"
    code = main(["evaluate", str(path), "--json", str(report), "--leaderboard", "--leaderboard-dir", str(board), "--data-root", str(data_root), "--no-verify", "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: ") and "Traceback" not in err
    assert not report.exists() and not board.exists()


def test_size_limits_reject_big_archives_and_compressed_bombs(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="over the allowed 1 MB"):
        sub.load_submission(archive, max_mb=1)
    assert main(["evaluate", str(archive), "--max-size-mb", "1"]) == 2
    # 300 MB of zeros compresses to a few hundred kB: a compressed archive is refused before anything is decompressed
    bomb = tmp_path / "bomb.tar.gz"
    info = tarfile.TarInfo(sub.WEIGHTS)
    info.size = 300 * 2**20

    class Zeros(io.RawIOBase):
        left = info.size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            n = min(len(buffer), self.left)
            buffer[:n] = b"\0" * n
            self.left -= n
            return n

    with tarfile.open(bomb, "w:gz") as tar:
        tar.addfile(info, io.BufferedReader(Zeros()))
    assert bomb.stat().st_size < 2**20
    with pytest.raises(BenchError, match="is gzip-compressed; a submission must be a plain"):
        sub.load_submission(bomb)
    # a plain tar whose header declares 300 MB (the data is not even there): refused at the header
    declared = tmp_path / "declared.tar"
    declared.write_bytes(info.tobuf(format=tarfile.USTAR_FORMAT) + b"\0" * 1024)
    with pytest.raises(BenchError, match="unpacks to more than the allowed"):
        sub.load_submission(declared)


def test_a_malicious_pickle_is_never_unpickled(archive: Path, tmp_path: Path, data_root: Path) -> None:
    proof, target = tmp_path / "proof", tmp_path / "pwned"
    pickle.loads(pickle.dumps(Payload(proof)))  # the payload is live: unpickling creates a file
    assert proof.exists()
    payload = pickle.dumps(Payload(target))
    payload_v0 = pickle.dumps(Payload(target), protocol=0)
    buffer = io.BytesIO()
    torch.save({"fc.weight": Payload(target)}, buffer)
    base = members(archive)
    archives = {
        "pickle as the weights": with_manifest({**base, sub.WEIGHTS: payload}),
        "protocol-0 pickle as the weights": with_manifest({**base, sub.WEIGHTS: payload_v0}),
        "torch.save file as the weights": with_manifest({**base, sub.WEIGHTS: buffer.getvalue()}),
        "pickle beside the weights": {**base, "weights.pkl": payload},
        "pickle under an innocent name": {**base, "readme.txt": payload_v0},
        "pickle as the manifest": {**base, sub.MANIFEST: payload},
    }
    for name, files in archives.items():
        path = make_tar(tmp_path / f"{name}.tar", files)
        with pytest.raises(BenchError, match="contains a pickle"):
            sub.load_submission(path)
        assert main(["evaluate", str(path), "--data-root", str(data_root), "--no-verify", "--device", "cpu", "--leaderboard", "--leaderboard-dir", str(tmp_path / "lb")]) == 2
        assert not target.exists(), name
    assert not (tmp_path / "lb").exists()


def test_nan_outputs_are_rejected_after_loading_and_nothing_written(tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = build_model("resnet18_28", 1, 1).state_dict()
    state["fc.bias"] = torch.tensor([float("nan")])
    path = sub.package(_fake_run_dir(tmp_path, state=state), tmp_path / "nan.tar")
    report, board = tmp_path / "out.json", tmp_path / "lb"
    assert main(["evaluate", str(path), "--json", str(report), "--leaderboard", "--leaderboard-dir", str(board), "--data-root", str(data_root), "--no-verify", "--device", "cpu"]) == 2
    assert "NaN or infinite on 24 of 24 test cases" in capsys.readouterr().err
    assert not report.exists() and not board.exists()


def test_rgb_submissions_declare_three_channels_and_evaluate(tmp_path: Path, data_root: Path) -> None:
    state = build_model("resnet18_28", 3, 1).state_dict()
    path = sub.package(_fake_run_dir(tmp_path, state=state, as_rgb=True), tmp_path / "rgb.tar")
    loaded = sub.load_submission(path)
    assert loaded.manifest["in_channels"] == 3 and loaded.as_rgb
    evaluation = sub.evaluate(loaded, data_root=str(data_root), device="cpu", verify_md5=False)
    assert np.isfinite(evaluation.logits).all() and evaluation.logits.shape == (24, 1)


@pytest.mark.realdata
def test_evaluation_on_the_real_breastmnist_test_split(real_root: Path, archive: Path) -> None:
    evaluation = sub.evaluate(sub.load_submission(archive), data_root=str(real_root), device="cpu")
    assert evaluation.data_md5_verified and evaluation.data_md5 == get_task("breastmnist").md5
    assert evaluation.labels.shape == (156, 1) and np.isfinite(evaluation.logits).all()
    assert 0.0 <= evaluation.test["auc"] <= 1.0
