"""`bench robustness`: blocks of a kept model under corruption, MedMNIST-C's metric, prevalence shift, leaderboards, report."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from benchmark import leaderboard as lb
from benchmark.ranking import ranking
from benchmark import robustness as rb
from benchmark import robustness_board as board
from benchmark import robustness_report as report
from benchmark.cli import main
from benchmark.corruptions2d import ALEXNET_BASELINES, Corruption, corruptions_for
from benchmark.corruptions3d import corruptions as corruptions_3d
from benchmark.data import DeviceSplit
from benchmark.data.augment import PRESETS, RandomCorruption
from benchmark.models import build_model
from benchmark.runner import RunSpec, run
from benchmark.store import save_weights, write_json
from benchmark.synthetic import DEFAULT_SIZES
from benchmark.submission import package
from benchmark.tasks import get_task, load_arrays
from benchmark.trainer import predict, prepare_model

IDENTITY = {"identity": Corruption("identity", "none", lambda images, _p, _g: images.clone(), (0, 1, 2, 3, 4))}


@pytest.fixture(scope="module")
def runs(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three finished 1-epoch BreastMNIST runs: seeds 0 and 1 of one configuration, and another learning rate."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, seed, lr in (("a0", 0, "0.001"), ("a1", 1, "0.001"), ("b0", 0, "0.01")):
        _, run_dir = run(RunSpec(task="breastmnist", method="ce", seed=seed, overrides={"epochs": 1, "lr": lr, "track_train": "false"}, data_root=str(synthetic_root), runs_root=str(root), device="cpu", verify_md5=False))
        out[name] = run_dir
    out["root"] = root
    return out


def _short(corruptions: dict, names: tuple[str, ...], severities: int = 2) -> dict:
    """The named corruptions at their first severities only: a test scores a few corrupted copies, not 35."""
    return {n: Corruption(c.name, c.family, c.op, c.params[:severities]) for n, c in corruptions.items() if n in names}


def _few(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...] = ("pixelate", "speckle_noise")) -> None:
    """Shorten every task's list to two corruptions at two severities, for the CLI tests."""
    full = rb.corruption_list
    monkeypatch.setattr(rb, "corruption_list", lambda task: _short(full(task), names))


def _evaluate(source: Path, synthetic_root: Path, **kwargs) -> dict:
    return rb.evaluate(rb.load_model(source), data_root=str(synthetic_root), device="cpu", verify_md5=False, **kwargs)


def test_identity_corruption_gives_the_clean_auc_exactly(runs: dict[str, Path], synthetic_root: Path) -> None:
    block = _evaluate(runs["a0"], synthetic_root, corruptions=IDENTITY)
    cell = block["corruptions"]["identity"]
    assert cell["auc"] == [block["clean"]["auc"]] * 5 and cell["balanced_error"] == [block["clean"]["balanced_error"]] * 5
    assert block["mean_corrupted_auc"] == block["clean"]["auc"] and block["relative_drop"] == 0.0


def test_a_submission_gives_the_clean_auc_of_bench_evaluate(runs: dict[str, Path], synthetic_root: Path, tmp_path: Path) -> None:
    archive = package(runs["a0"], tmp_path / "team.tar")
    common = ["--data-root", str(synthetic_root), "--no-verify", "--device", "cpu"]
    assert main(["evaluate", str(archive), "--json", str(tmp_path / "e.json"), *common]) == 0
    assert main(["robustness", str(archive), "--corruptions", "jpeg_compression", "--json", str(tmp_path / "r.json"), *common]) == 0
    evaluated = json.loads((tmp_path / "e.json").read_text())
    (record,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert record["robustness"]["clean"]["auc"] == evaluated["test"]["auc"]
    assert record["weights_sha256"] == evaluated["weights_sha256"] and list(record["robustness"]["corruptions"]) == ["jpeg_compression"]
    # a cell, recomputed outside the module: the corrupted copy scored by the model, then scikit-learn's AUC
    data = load_arrays(get_task("breastmnist"), synthetic_root, verify_md5=False, splits=("test",))
    model = build_model("resnet18_28", 1, 1)
    from safetensors.torch import load_file

    model.load_state_dict(load_file(runs["a0"] / "model.safetensors"))
    model = prepare_model(model, torch.device("cpu"), 2)
    images = rb.corrupt(corruptions_for("breastmnist")["jpeg_compression"], torch.from_numpy(data.images("test")), 4, rb.SEED)
    logits = predict(model, DeviceSplit(images.numpy(), data.labels("test"), torch.device("cpu")))
    assert record["robustness"]["corruptions"]["jpeg_compression"]["auc"][3] == pytest.approx(roc_auc_score(data.labels("test")[:, 0], logits[:, 0]), abs=1e-12)


def test_blocks_are_deterministic_by_seed(runs: dict[str, Path], synthetic_root: Path) -> None:
    chosen = _short(corruptions_for("breastmnist"), ("pixelate", "speckle_noise"))
    first = _evaluate(runs["b0"], synthetic_root, corruptions=chosen)
    assert _evaluate(runs["b0"], synthetic_root, corruptions=chosen) == first
    other = _evaluate(runs["b0"], synthetic_root, corruptions=chosen, seed=1)
    assert other["corruptions"]["pixelate"] == first["corruptions"]["pixelate"], "a deterministic corruption does not depend on the seed"
    assert set(first) >= {"clean", "corruptions", "mean_corrupted_auc", "relative_drop", "medmnistc", "prevalence_shift", "threshold"}
    assert first["medmnistc"] is None, "MedMNIST-C's BE needs its whole list (its baseline averages it)"
    full = rb.medmnistc_metric(get_task("breastmnist"), 0.2, {n: [0.3] * 5 for n in corruptions_for("breastmnist")})
    assert full is not None and set(full["per_corruption"]) == set(ALEXNET_BASELINES["breastmnist"]["corrupted"])


def _hand_made_run(root: Path, task_flag: str, seed: int = 0) -> Path:
    """A run directory around freshly initialised weights (no training), as `bench run` lays it out."""
    task = get_task(task_flag)
    torch.manual_seed(seed)
    model = build_model(task.architecture, 1, task.n_labels)
    run_dir = root / f"{task_flag}-hand-{seed}"
    run_dir.mkdir(parents=True)
    save_weights(run_dir / "model.safetensors", model.state_dict())
    config = {"task": task_flag, "method": "ce", "seed": seed, "as_rgb": False}
    write_json(run_dir / "config.json", config)
    write_json(run_dir / "result.json", {"task": task_flag, "method": "ce", "seed": seed, "config": {"as_rgb": False}, "architecture": task.architecture})
    return run_dir


def test_a_3d_model_gets_monai_corruptions(synthetic_root: Path, tmp_path: Path) -> None:
    chosen = _short(corruptions_3d(), ("gibbs_ringing", "rician_noise"), severities=1)
    block = _evaluate(_hand_made_run(tmp_path, "adrenalmnist3d"), synthetic_root, corruptions=chosen)
    assert list(block["corruptions"]) == ["gibbs_ringing", "rician_noise"] and block["severities"] == 1
    assert all(len(c["auc"]) == 1 for c in block["corruptions"].values())
    assert block["corruptions"]["gibbs_ringing"]["family"] == "k-space" and block["medmnistc"] is None
    assert block["prevalence_shift"]["test"]["n"] == block["n_test"] == DEFAULT_SIZES[3]["test"] and "MONAI" in block["corruption_set"]


# --- thresholded metrics and prevalence shift ------------------------------------------------------


def test_youden_threshold_maximises_balanced_accuracy_on_its_cases() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random((90, 2)) < 0.3).astype(int)
    logits = rng.normal(size=(90, 2)) + labels
    thresholds = rb.youden_thresholds(labels, logits)
    for j in range(2):
        # brute force over every cut between consecutive scores, scored by scikit-learn
        cuts = np.unique(logits[:, j])
        candidates = np.r_[cuts[0] - 1, (cuts[1:] + cuts[:-1]) / 2, cuts[-1] + 1]
        best = max(balanced_accuracy_score(labels[:, j], logits[:, j] > t) for t in candidates)
        assert balanced_accuracy_score(labels[:, j], logits[:, j] > thresholds[j]) == pytest.approx(best)
    expected = 1 - np.mean([balanced_accuracy_score(labels[:, j], logits[:, j] > thresholds[j]) for j in range(2)])
    assert rb.balanced_error(labels, logits, thresholds) == pytest.approx(expected)


def test_medmnistc_metric_is_its_evaluators_formula() -> None:
    names = list(corruptions_for("pneumoniamnist"))
    errors = {n: [0.1 + 0.01 * i + 0.02 * s for s in range(5)] for i, n in enumerate(names)}
    got = rb.medmnistc_metric(get_task("pneumoniamnist"), 0.08, errors)
    base = ALEXNET_BASELINES["pneumoniamnist"]
    be = [np.mean(errors[n]) / base["corrupted"][n] for n in names]
    rbe = [(np.mean(errors[n]) - 0.08) / (base["corrupted"][n] - base["clean"]) for n in names]
    assert got["be"] == pytest.approx(np.mean(be)) and got["rbe"] == pytest.approx(np.mean(rbe)) and got["clean_error"] == 0.08
    assert rb.medmnistc_metric(get_task("adrenalmnist3d"), 0.1, {"gibbs_ringing": [0.2] * 5}) is None


def test_prevalence_shift_resamples_to_the_target_share() -> None:
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(390, int), np.zeros(234, int)]  # PneumoniaMNIST's test split: 0.625 positive
    logits = rng.normal(size=624) + 1.5 * (labels - 0.4)
    rows = rb.resample_rows(labels, 0.742, np.random.default_rng(0))
    assert np.sum(labels[rows] == 1) == 390 and abs(np.mean(labels[rows]) - 0.742) < 1 / len(rows)
    rows = rb.resample_rows(labels, 0.5, np.random.default_rng(0))
    assert np.sum(labels[rows] == 0) == 234 and np.sum(labels[rows] == 1) == 234
    out = rb.prevalence_shift(labels, logits, 0.742, resamples=200)
    predicted = logits > 0
    tpr, tnr = np.mean(predicted[labels == 1]), np.mean(~predicted[labels == 0])
    assert out["test"]["acc"] == pytest.approx(np.mean(predicted == (labels == 1)))
    for key, p in (("to_train", out["to_train"]["prevalence"]), ("to_0.5", 0.5)):
        # ACC is p TPR + (1 - p) TNR in expectation; balanced accuracy does not move with p
        assert out[key]["acc"]["mean"] == pytest.approx(p * tpr + (1 - p) * tnr, abs=3 * out[key]["acc"]["sd"] / np.sqrt(200) + 1e-3)
        assert out[key]["balanced_accuracy"]["mean"] == pytest.approx((tpr + tnr) / 2, abs=0.01)
    assert out == rb.prevalence_shift(labels, logits, 0.742, resamples=200), "seeded"


# --- leaderboards ------------------------------------------------------------------------------------


def test_blocks_on_the_leaderboard_and_the_robust_sort(runs: dict[str, Path], synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _few(monkeypatch)
    directory = tmp_path / "lb"
    common = ["--leaderboard-dir", str(directory), "--data-root", str(synthetic_root), "--no-verify", "--device", "cpu"]
    for name in ("a0", "b0"):
        assert main(["robustness", str(runs[name]), "--leaderboard", *common]) == 0
    assert "added entry" in capsys.readouterr().out
    entries = {e["id"]: e for e in lb.read_board("breastmnist", directory)["entries"] if not e.get("reference")}
    assert len(entries) == 2 and all("robustness" in e["runs"][0] for e in entries.values())
    assert all(e["runs"][0]["robustness_seconds"] > 0 for e in entries.values()), "the pass's time is kept, as a study keeps it"
    # the seed-1 run of the first configuration, added without a block (seed 0's stays), then found under --runs
    lb.add_runs("breastmnist", [runs["a1"]], directory)
    assert main(["robustness", "--leaderboard", "--runs", str(runs["root"]), *common]) == 0
    out = capsys.readouterr().out
    filled = next(r for e in lb.read_board("breastmnist", directory)["entries"] for r in e.get("runs", []) if r.get("run_id") and r["seed"] == 1)
    assert filled["robustness"] and filled["robustness_seconds"] > 0
    assert "added 1 robustness block(s)" in out and "every seed already has a robustness block" in out
    ranked_groups = ranking("breastmnist", directory, sort="robust")["groups"]
    rows = {r["id"]: r for g in ranked_groups for r in g["rows"] if r["kind"] == "run"}
    for entry in lb.read_board("breastmnist", directory)["entries"]:
        if not entry.get("reference"):
            expected = np.mean([run["robustness"]["mean_corrupted_auc"] for run in entry["runs"]])
            assert rows[entry["id"]]["robust_auc"] == pytest.approx(expected) and rows[entry["id"]]["robust_seeds"] == entry["n_seeds"]
    for group in ranked_groups:  # within a budget: by mean corrupted AUC, rows without a block last
        values = [r["robust_auc"] for r in group["rows"]]
        known = [v for v in values if v is not None]
        assert known == sorted(known, reverse=True) and values == known + [None] * (len(values) - len(known))
    assert any(r["kind"] == "reference" and r["robust_auc"] is None for g in ranked_groups for r in g["rows"])
    assert main(["leaderboard", "--leaderboard-dir", str(directory), "--sort", "robust"]) == 0
    assert "corrupted AUC" in capsys.readouterr().out
    # adding the same run again keeps its block; the file is unchanged
    before = lb.leaderboard_path("breastmnist", directory).read_bytes()
    lb.add_runs("breastmnist", [runs["a0"]], directory)
    assert lb.leaderboard_path("breastmnist", directory).read_bytes() == before


def test_entries_without_weights_are_skipped_with_a_note(runs: dict[str, Path], synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _few(monkeypatch)
    directory = tmp_path / "lb"
    lb.add_runs("breastmnist", [runs["a0"]], directory)
    copy = tmp_path / "store" / "other"
    shutil.copytree(runs["b0"], copy)
    result = json.loads((copy / "result.json").read_text())
    result["config"]["weight_decay"], result["config_hash"] = 0.5, "0123456789ab"  # an entry of its own
    write_json(copy / "result.json", result)
    lb.add_runs("breastmnist", [copy], directory)
    (copy / "model.safetensors").unlink()  # as a committed entry: logits, no weights
    said: list[str] = []
    compute = lambda source: rb.evaluate(rb.load_model(source), data_root=str(synthetic_root), device="cpu", verify_md5=False)  # noqa: E731
    assert board.fill(["breastmnist"], [runs["root"], tmp_path / "store"], directory, compute, say=said.append) == 1
    assert any("skipped" in line and "not under" in line for line in said)
    assert board.summary(next(e for e in lb.read_board("breastmnist", directory)["entries"] if e.get("id") == lb.read_run(copy).entry_id)) is None


def test_bad_requests_are_one_line_errors_and_write_nothing(runs: dict[str, Path], synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kfold = tmp_path / "kfold"
    shutil.copytree(runs["a0"], kfold)
    (kfold / "model.safetensors").rename(kfold / "model_fold1.safetensors")
    common = ["--data-root", str(synthetic_root), "--no-verify", "--device", "cpu", "--leaderboard-dir", str(tmp_path / "lb")]
    cases = [
        ([], "give run directories"),
        ([str(runs["a0"]), "--corruptions", "fog"], "no corruption fog"),
        ([str(runs["a0"]), "--leaderboard", "--seed", "3"], "seed 0"),
        ([str(kfold)], "k-fold"),
        (["--leaderboard", "--runs", str(tmp_path / "absent")], "is not a folder"),
        ([str(tmp_path / "missing.tar")], "does not exist"),
    ]
    for argv, message in cases:
        assert main(["robustness", *argv, *common]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "lb").exists() or not any((tmp_path / "lb").glob("*.json"))


# --- training with the corruptions ---------------------------------------------------------------------


def test_corrupt_preset_draws_from_the_tasks_list(synthetic_root: Path, tmp_path: Path) -> None:
    assert [c.name for c in RandomCorruption(2, "breastmnist").corruptions] == list(corruptions_for("breastmnist"))
    assert [c.name for c in RandomCorruption(3, "adrenalmnist3d").corruptions] == list(corruptions_3d())
    assert PRESETS.get("corrupt").per_task
    result, _ = run(RunSpec(task="breastmnist", method="ce", overrides={"epochs": 1, "augment": "corrupt"}, data_root=str(synthetic_root), out=str(tmp_path / "r"), device="cpu", verify_md5=False))
    assert result["config"]["augment"] == "corrupt" and np.isfinite(result["test"]["auc"])


# --- the report's figure and table -----------------------------------------------------------------------


def _block(clean: float, by_family: dict[str, list[list[float]]], be: float | None = None) -> dict:
    corruptions = {f"{family}{i}": {"family": family, "auc": aucs} for family, rows in by_family.items() for i, aucs in enumerate(rows)}
    mean = float(np.mean([a for c in corruptions.values() for a in c["auc"]]))
    return {"clean": {"auc": clean}, "corruptions": corruptions, "mean_corrupted_auc": mean, "relative_drop": (clean - mean) / clean, "medmnistc": {"be": be, "rbe": 0.5} if be else None}


def test_report_figure_and_table_from_plain_blocks() -> None:
    blocks = {
        "ce": [_block(0.9, {"blur": [[0.85] * 5, [0.75] * 5], "noise": [[0.8, 0.7, 0.6, 0.5, 0.4]]}, be=1.1), _block(0.8, {"blur": [[0.7] * 5, [0.7] * 5], "noise": [[0.6] * 5]}, be=0.9)],
        "aucm": [_block(0.85, {"noise": [[0.84] * 5], "blur": [[0.8] * 5, [0.8] * 5]})],
    }
    curves = report.family_curves(blocks["ce"])
    assert np.allclose(curves["blur"][0], [0.9, 0.8, 0.8, 0.8, 0.8, 0.8]) and curves["noise"].shape == (2, 6)
    fig = report.severity_figure("BreastMNIST", blocks)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["noise", "blur"] and all(len(ax.lines) == 2 for ax in visible)  # MedMNIST-C's family order
    rows = {r["method"]: r for r in report.clean_vs_corrupted_rows({"breastmnist": blocks})}
    ce_means = [np.mean([0.8, 0.7, 0.6, 0.5, 0.4] + [0.85] * 5 + [0.75] * 5), np.mean([0.6] * 5 + [0.7] * 10)]
    assert rows["ce"]["corrupted_auc"] == pytest.approx(np.mean(ce_means)) and rows["ce"]["clean_auc"] == pytest.approx(0.85)
    assert rows["ce"]["worst"] == "noise0" and rows["ce"]["be"] == pytest.approx(1.0) and rows["aucm"]["be"] is None
    table = report.markdown_table(list(rows.values()))
    assert table.count("\n") == 4 and "| breastmnist | ce | 2 | 0.850 ± 0.071 |" in table
    assert "\\toprule" in report.latex_table(list(rows.values()))


def test_the_report_draws_the_committed_robustness_blocks(tmp_path: Path) -> None:
    from benchmark.report import ReportOptions, build_report

    repo = Path(__file__).resolve().parents[1]
    out, _ = build_report(ReportOptions(runs=[], out=tmp_path / "rep", tasks=["breastmnist"], leaderboards=repo / "leaderboards"))
    index = (out / "index.md").read_text()
    assert "Robustness under corruption" in index and (out / "figures" / "robustness_breastmnist.png").is_file()
    table = (out / "tables" / "robustness.md").read_text()
    entries = [e for e in lb.read_board("breastmnist", repo / "leaderboards")["entries"] if any(r.get("robustness") for r in e.get("runs", []))]
    assert entries
    cleans: dict[str, set[str]] = {}
    for e in entries:  # a block's clean AUC is its seed's test AUC
        values = []
        for run in e["runs"]:
            if run.get("robustness"):
                # exact for fp32 runs; a bf16 run's weights scored again move the AUC in the fourth decimal
                tolerance = 1e-12 if e["config"]["precision"] in ("fp32", "auto") else 1e-3
                assert run["robustness"]["clean"]["auc"] == pytest.approx(run["test"]["auc"], abs=tolerance)
                values.append(run["robustness"]["clean"]["auc"])
        # the table's cell for an entry: its seeds' mean clean AUC, with the sample sd when it has several seeds
        cell = f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")
        cleans.setdefault(e["method"], set()).add(cell)
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:] if line.strip()]
    assert rows and all(cells[0].strip() == "breastmnist" and cells[3].strip() in cleans[cells[1].strip()] for cells in rows)
