"""`bench report`: every figure and table from a run store or the leaderboards, numbers equal to the leaderboard's, budgets never mixed, clean errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from benchmark import metrics
from benchmark.report import build as build_module
from benchmark.cli import main
from benchmark.config import config_hash, resolve
from benchmark.errors import BenchError
from benchmark.leaderboard import add_runs, read_board
from benchmark.methods import METHODS
from benchmark.report import (
    MARKER,
    ReportOptions,
    Run,
    build_report,
    fpr_at_tpr,
    group_runs,
    load_runs,
    roc_of,
    select,
)
from benchmark.report import bars, optuna_figures
from benchmark.report.style import method_colors
from benchmark.runner import RunSpec, run
from benchmark.store import save_predictions, write_json
from benchmark.tasks import get_task

GOLDEN = Path(__file__).parent / "golden"


# --- a run store in the real format, written by hand with known numbers ----------------------


def fake_run(root: Path, task: str, method: str, seed: int, *, val_auc: float, signal: float, overrides: dict | None = None, epochs: int = 4, train_auc: bool = True, val_signal: float | None = None) -> Path:
    """Write a finished run directory like runner.run does; its test AUC comes from its own predictions."""
    t = get_task(task)
    cls = METHODS.get(method) if method in METHODS else METHODS.get("ce")
    config = resolve(t, cls, {"epochs": epochs, **(overrides or {})})
    # one test split per task (as in reality), the scores' noise per method, seed and signal
    n = 60
    labels = (np.random.default_rng(len(task)).random((n, t.n_labels)) < 0.4).astype(np.int64)
    labels[0], labels[1] = 1, 0
    rng = np.random.default_rng(1000 * seed + len(method) + 7 * len(task) + int(signal * 100))
    logits = (signal * (2 * labels - 1) + rng.normal(size=labels.shape)).astype(np.float32)
    test = metrics.evaluate(labels, logits)
    h = config_hash(task, method, seed, config)
    out = root / task / method / h
    out.mkdir(parents=True)
    write_json(out / "config.json", {"task": task, "method": method, "seed": seed, **config})
    best = epochs - 1
    with (out / "metrics.jsonl").open("w") as f:
        for e in range(1, epochs + 1):
            v = val_auc - 0.02 * abs(e - best)
            rec = {"epoch": e, "train_loss": 1.0 / e, "lr": 1e-3, "val/auc": v, "val/acc": 0.7, "best_epoch": min(e, best), "seconds": 1.0}
            if train_auc:
                rec["train/auc"] = min(1.0, 0.7 + 0.1 * e)
            f.write(json.dumps(rec) + "\n")
    save_predictions(out / "predictions_test.npz", labels, logits)
    if val_signal is not None:  # validation predictions of the same model, and the test accuracies at their threshold (as runner.run)
        val_labels = (np.random.default_rng(len(task) + 1).random((40, t.n_labels)) < 0.4).astype(np.int64)
        val_labels[0], val_labels[1] = 1, 0
        val_logits = (val_signal * (2 * val_labels - 1) + rng.normal(size=val_labels.shape)).astype(np.float32)
        save_predictions(out / "predictions_val.npz", val_labels, val_logits)
        test.update(metrics.val_threshold_metrics(val_labels, val_logits, labels, logits))
    write_json(
        out / "result.json",
        {"task": task, "method": method, "seed": seed, "config": config, "config_hash": h, "best_epoch": best, "epochs_run": epochs,
         "val": {"auc": val_auc, "acc": 0.7}, "test": test, "reference": t.reference, "train_seconds": 1.0, "device": "cpu"},
    )
    return out


PROTOCOL = {"epochs": 100}  # the task cards' budget (the logs of these hand-written runs hold 4 epochs)


@pytest.fixture(scope="module")
def handmade(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A hand-written store: BreastMNIST (ce, aucm; with a leaderboard) and PneumoniaMNIST (ce, aucm; runs only)."""
    base = tmp_path_factory.mktemp("handmade")
    runs, boards = base / "runs", base / "leaderboards"
    dirs: dict[tuple[str, str], list[Path]] = {}
    for task in ("breastmnist", "pneumoniamnist"):
        for method, signal, val in (("ce", 0.9, 0.90), ("aucm", 1.1, 0.92)):
            dirs[(task, method)] = [fake_run(runs, task, method, s, val_auc=val + 0.01 * s, signal=signal, overrides=PROTOCOL) for s in (0, 1, 2)]
        # a second ce configuration, better on test but worse on validation: never selected
        dirs[(task, "ce-worse-val")] = [fake_run(runs, task, "ce", s, val_auc=0.80, signal=2.0, overrides={**PROTOCOL, "batch_size": 32}) for s in (0, 1)]
    # the leaderboard is written by the leaderboard module itself, from the same run directories
    for method in ("ce", "aucm"):
        add_runs("breastmnist", dirs[("breastmnist", method)], boards)
    board = read_board("breastmnist", boards)
    return {"runs": runs, "boards": boards, "dirs": dirs, "board": board, "base": base}


def _table_cells(markdown: str) -> dict[str, list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    return {r.split("|")[1].strip(): [c.strip().strip("*") for c in r.split("|")[2:-1]] for r in rows}


def test_main_table_equals_the_leaderboard_and_the_golden_file(handmade: dict, tmp_path: Path) -> None:
    opts = ReportOptions(runs=handmade["runs"], out=tmp_path / "rep", leaderboards=handmade["boards"], data_root=str(tmp_path / "no-data"), runs_first=False)
    out, written = build_report(opts)
    table = (out / "tables" / "main_results.md").read_text()
    golden = GOLDEN / "main_results.md"
    assert table == golden.read_text(), f"main table differs from {golden}:\n{table}"
    cells = _table_cells(table)
    # BreastMNIST (first column) comes from the leaderboard: mean and sd exactly as it stores them, to 3 decimals
    board_entries = [e for e in handmade["board"]["entries"] if not e.get("reference")]
    assert sorted(e["method"] for e in board_entries) == ["aucm", "ce"]
    for entry in board_entries:
        auc = entry["test"]["auc"]
        assert cells[entry["method"]][0] == f"{auc['mean']:.3f} ± {auc['sd']:.3f} ({len(entry['runs'])})"
    # PneumoniaMNIST comes from the runs: recompute from the predictions of the best-validation configuration
    from benchmark.store import load_predictions

    for method in ("ce", "aucm"):
        aucs = []
        for d in handmade["dirs"][("pneumoniamnist", method)]:
            labels, logits = load_predictions(d / "predictions_test.npz")
            aucs.append(roc_auc_score(labels[:, 0], logits[:, 0]))
        assert cells[method][1] == f"{np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f} (3)"
    # reference row and the bold best per task
    assert cells["MedMNIST v2 ResNet-18 (reference)"][:2] == ["0.901", "0.944"]
    assert "**" in table.split("| aucm |")[1].splitlines()[0]
    tex = (out / "tables" / "main_results.tex").read_text()
    assert r"\textbf{" in tex and r"$\pm$" in tex and r"\begin{tabular}{lrrr}" in tex


def test_a_task_known_only_from_its_leaderboard(handmade: dict, tmp_path: Path) -> None:
    """BreastMNIST's runs are not in this store: the table, bars and ROC come from the leaderboard and its predictions file."""
    runs = tmp_path / "runs"
    shutil.copytree(handmade["runs"] / "pneumoniamnist", runs / "pneumoniamnist")
    out, written = build_report(ReportOptions(runs=runs, out=tmp_path / "rep", leaderboards=handmade["boards"], data_root=str(tmp_path / "no-data")))
    table = (out / "tables" / "main_results.md").read_text()
    assert table == (GOLDEN / "main_results.md").read_text()
    index = (out / "index.md").read_text()
    assert "the leaderboard's stored predictions for BreastMNIST / ce, BreastMNIST / aucm" in index
    assert "- BreastMNIST / ce (leaderboard entry `ce-" in index and "100 epochs, fp32): run directories not in the run store read" in index
    assert "figures/roc_curves.png" in written and "figures/learning_curves_breastmnist.png" not in written


def test_selection_uses_validation_never_test(handmade: dict) -> None:
    runs, _ = load_runs(handmade["runs"])
    chosen = select(group_runs(runs))[("pneumoniamnist", "ce")]
    assert chosen.config["batch_size"] == 128  # the batch-32 config has the better test AUC but the worse val AUC
    assert sorted(r.path for r in chosen.runs) == sorted(handmade["dirs"][("pneumoniamnist", "ce")])


def test_hyperparameter_table_and_ablation(handmade: dict, tmp_path: Path) -> None:
    out, written = build_report(ReportOptions(runs=handmade["runs"], out=tmp_path / "rep", leaderboards=None, data_root=str(tmp_path / "no-data")))
    hp = (out / "tables" / "hyperparameters.md").read_text()
    assert "| BreastMNIST | ce | 0, 1, 2 | 100 epochs, fp32 | run store, best mean val AUC | lr=0.001; weight_decay=0 |" in hp
    assert "figures/controls_ablation.png" in written
    index = (out / "index.md").read_text()
    assert "Figure 6. Controls ablation" in index and "figures/controls_ablation.png" in index


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict:
    """A run store mixing runner.run runs on synthetic BreastMNIST (the real format) with hand-written
    multi-label (ChestMNIST) and 3D (AdrenalMNIST3D) runs, a controls variant, and an Optuna study."""
    runs = tmp_path_factory.mktemp("trained") / "runs"
    common = dict(data_root=str(synthetic_root), runs_root=str(runs), device="cpu", verify_md5=False)
    for seed in (0, 1):
        run(RunSpec(task="breastmnist", method="ce", seed=seed, overrides={"epochs": 1}, **common))
    fake_run(runs, "breastmnist", "ce", 0, val_auc=0.0, signal=0.5, epochs=1, overrides={"batch_size": 32})  # val AUC 0: never selected
    fake_run(runs, "chestmnist", "ce", 0, val_auc=0.7, signal=0.5, epochs=2)
    fake_run(runs, "adrenalmnist3d", "ce", 0, val_auc=0.8, signal=0.8, epochs=2)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{runs / 'optuna.db'}", study_name="breastmnist.ce.6trials.2epochs.0000", direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.set_user_attr("definition", {"task": "breastmnist", "method": "ce"})
    study.optimize(lambda t: 0.9 - (math.log10(t.suggest_float("lr", 1e-4, 1e-2, log=True)) + 3) ** 2 / 20 - t.suggest_float("weight_decay", 0, 1e-3) * 10, n_trials=6)
    pruned = study.ask()
    pruned.suggest_float("lr", 1e-4, 1e-2, log=True), pruned.suggest_float("weight_decay", 0, 1e-3)
    pruned.report(0.61, step=1)
    pruned.report(0.55, step=2)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    return {"runs": runs, "data": synthetic_root}


EXPECTED_FIGURES = ["learning_curves_breastmnist", "learning_curves_chestmnist", "learning_curves_adrenalmnist3d", "test_auc", "roc_curves", "fpr_at_95tpr", "split_prevalence", "controls_ablation",
                    "optuna_breastmnist_ce_6trials_2epochs_0000_history", "optuna_breastmnist_ce_6trials_2epochs_0000_importance"]


def test_report_writes_every_figure_and_table(trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.image

    monkeypatch.chdir(tmp_path)  # away from the repository's committed studies/*.journal, which a report reads by default
    out = tmp_path / "reports"
    code = main(["report", "--runs", str(trained["runs"]), "-o", str(out), "--data-root", str(trained["data"]), "--no-verify", "--leaderboards", str(tmp_path / "none")])
    assert code == 0, capsys.readouterr().err
    figures_written = sorted(p.name for p in (out / "figures").iterdir())
    try:
        from benchmark.data.augment import PRESETS  # noqa: F401

        expected = EXPECTED_FIGURES + ["augmentation_2d_breastmnist", "augmentation_3d_adrenalmnist3d"]
    except ImportError:
        expected = EXPECTED_FIGURES
    for name in expected:
        assert f"{name}.png" in figures_written and f"{name}.pdf" in figures_written, name
        image = matplotlib.image.imread(out / "figures" / f"{name}.png")
        assert image.shape[0] > 300 and image.shape[1] > 500 and image.std() > 0.01  # drawn, not blank
        assert (out / "figures" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    for table in ("main_results", "accuracy", "hyperparameters"):
        assert (out / "tables" / f"{table}.md").read_text().startswith("| ")
        assert r"\begin{table}" in (out / "tables" / f"{table}.tex").read_text()
    index = (out / "index.md").read_text()
    assert index.startswith(MARKER)
    for png in (out / "figures").glob("*.png"):
        assert f"(figures/{png.name})" in index
    # every figure has a caption; the tasks without runs are named as left out
    assert "Left out of every result figure and table (no finished runs, no leaderboard entry): PneumoniaMNIST, NoduleMNIST3D, VesselMNIST3D, SynapseMNIST3D." in index
    # the data figures show the tasks with results only (NoduleMNIST3D has a data file here, but no runs)
    assert "splits of BreastMNIST, ChestMNIST, AdrenalMNIST3D, the tasks with results" in index and "augmentation_3d_nodulemnist3d" not in index
    assert index.count("\n*") >= 6
    assert "From 1 study in" in index
    # the main table's BreastMNIST cell is the selected runs' test AUC
    runs, _ = load_runs(trained["runs"], ["breastmnist"])
    chosen = select(group_runs(runs))[("breastmnist", "ce")]
    aucs = [r.test["auc"] for r in chosen.runs]
    cell = _table_cells((out / "tables" / "main_results.md").read_text())["ce"][0]
    # one epoch is not the protocol budget: the cell says so
    assert len(aucs) == 2 and cell == f"{np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f} (2; 1 epoch, fp32)"


def test_report_is_reproducible_and_replaces_only_a_previous_report(trained: dict, tmp_path: Path) -> None:
    opts = ReportOptions(runs=trained["runs"], out=tmp_path / "a", tasks=["breastmnist"], data_root=str(trained["data"]), verify_md5=False, leaderboards=None)
    build_report(opts)
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    build_report(opts)  # over its own previous report: allowed, replaced
    second = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first), [str(k) for k in first if first[k] != second[k]]
    assert "ChestMNIST" not in (tmp_path / "a" / "tables" / "main_results.md").read_text()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(BenchError, match="does not hold a previous `bench report`"):
        build_report(ReportOptions(runs=trained["runs"], out=mine, leaderboards=None))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    (mine / "notes.txt").rename(mine / ".gitkeep")  # hidden files are someone's too
    with pytest.raises(BenchError, match="does not hold a previous `bench report`"):
        build_report(ReportOptions(runs=trained["runs"], out=mine, leaderboards=None))
    assert [p.name for p in mine.iterdir()] == [".gitkeep"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_empty_or_missing_store_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for store in (tmp_path / "nowhere", tmp_path / "empty"):
        if store.name == "empty":
            store.mkdir()
        code = main(["report", "--runs", str(store), "-o", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and "bench: error:" in err and "Traceback" not in err and str(store) in err
        assert not (tmp_path / "out").exists()
    code = main(["report", "--runs", str(tmp_path / "empty"), "--tasks", "mnist", "-o", str(tmp_path / "out")])
    assert code == 2 and "breastmnist" in capsys.readouterr().err


def test_tuning_trials_alone_are_not_a_report(tmp_path: Path) -> None:
    d = fake_run(tmp_path / "runs", "breastmnist", "ce", 0, val_auc=0.9, signal=1.0)
    result = json.loads((d / "result.json").read_text())
    result["test"] = None
    write_json(d / "result.json", result)
    with pytest.raises(BenchError, match="1 tuning runs without a test evaluation"):
        load_runs(tmp_path / "runs")


def test_roc_and_fpr_match_independent_computations() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(300, 1))
    s = rng.random((300, 1)) + 0.3 * y
    roc = roc_of(y, s)
    assert roc.auc == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    # FPR at 95 % TPR by brute force over thresholds: the smallest FPR whose TPR reaches 0.95
    pos, neg = s[y[:, 0] == 1, 0], s[y[:, 0] == 0, 0]
    brute = min(np.mean(neg >= t) for t in np.unique(s) if np.mean(pos >= t) >= 0.95)
    assert fpr_at_tpr(y, s) == pytest.approx(brute)
    # multi-label: the macro-average curve's area is close to the mean per-label AUC
    ym = rng.integers(0, 2, size=(400, 3))
    sm = rng.random((400, 3)) + 0.5 * ym
    macro = roc_of(ym, sm)
    assert macro.auc == pytest.approx(np.mean([roc_auc_score(ym[:, j], sm[:, j]) for j in range(3)]), abs=0.01)
    fpr, tpr, _ = roc_curve(ym[:, 0], sm[:, 0])
    assert np.all(np.diff(macro.fpr) >= 0) and macro.tpr[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("method", METHODS.names())
def test_each_method_has_one_fixed_colour(method: str) -> None:
    colors = method_colors()
    assert method_colors(["zz-submission", "aa-other"])[method] == colors[method]
    assert len(set(colors.values())) == len(colors)


def test_train_val_gap_read_from_the_selected_epoch(tmp_path: Path) -> None:
    d = fake_run(tmp_path / "runs", "breastmnist", "ce", 0, val_auc=0.9, signal=1.0, epochs=4)
    run_ = Run(d, json.loads((d / "result.json").read_text()))
    # best epoch 3: train AUC 0.7 + 0.3 = 1.0, val AUC 0.9 - 0 = 0.9
    assert run_.train_val_gap() == pytest.approx(0.1)
    d2 = fake_run(tmp_path / "runs2", "breastmnist", "ce", 0, val_auc=0.9, signal=1.0, train_auc=False)
    assert Run(d2, json.loads((d2 / "result.json").read_text())).train_val_gap() is None


@pytest.mark.realdata
def test_report_on_real_prevalence(real_root: Path, handmade: dict, tmp_path: Path) -> None:
    out, _ = build_report(ReportOptions(runs=handmade["runs"], out=tmp_path / "rep", leaderboards=None, data_root=str(real_root)))
    index = (out / "index.md").read_text()
    assert "figures/split_prevalence.png" in index and "BreastMNIST, PneumoniaMNIST" in index


def test_pruned_trials_are_drawn_at_their_last_reported_value(trained: dict) -> None:
    import optuna

    from benchmark.report import pruned_points

    study = optuna.load_study(study_name="breastmnist.ce.6trials.2epochs.0000", storage=f"sqlite:///{trained['runs'] / 'optuna.db'}")
    assert pruned_points(study) == [(6, 0.55)]


# --- what each cell shows: the runs given, budgets, no machine paths ---------------------------


def test_an_explicit_run_store_shows_its_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 19, item 1: after a user's first run, `bench report --runs runs` shows that run, its learning curve, and counts it."""
    monkeypatch.chdir(tmp_path)
    committed = [fake_run(tmp_path / "other", "breastmnist", m, 0, val_auc=0.95, signal=s, overrides={**PROTOCOL, "lr": 1e-4} if m == "ce" else PROTOCOL) for m, s in (("ce", 2.0), ("aucm", 1.0))]
    for d in committed:
        add_runs("breastmnist", [d], tmp_path / "leaderboards")  # ./leaderboards, as in a clone of the repository
    mine = fake_run(tmp_path / "runs", "breastmnist", "ce", 0, val_auc=0.90, signal=0.7, overrides=PROTOCOL, epochs=12)
    my_auc = json.loads((mine / "result.json").read_text())["test"]["auc"]
    board_auc = next(e for e in read_board("breastmnist", tmp_path / "leaderboards")["entries"] if e.get("method") == "ce")["test"]["auc"]["mean"]
    assert round(my_auc, 3) != round(board_auc, 3)

    assert main(["report", "--runs", "runs", "-o", "rep", "--data-root", str(tmp_path / "no-data")]) == 0, capsys.readouterr().err
    cells = _table_cells((tmp_path / "rep" / "tables" / "main_results.md").read_text())
    assert cells["ce"][0] == f"{my_auc:.3f} (1)" and "aucm" not in cells  # the runs alone
    index = (tmp_path / "rep" / "index.md").read_text()
    assert (tmp_path / "rep" / "figures" / "learning_curves_breastmnist.png").is_file()
    assert "From 1 run in 1 selected configuration (listed under Sources)" in index and "no per-epoch log" not in index
    assert f"- BreastMNIST / ce (run store; 100 epochs, fp32): `breastmnist/ce/{mine.name}`" in index

    # runs given together with leaderboards: the run still shows, the leaderboard fills what the runs lack
    assert main(["report", "--runs", "runs", "--leaderboards", "leaderboards", "-o", "rep", "--data-root", str(tmp_path / "no-data")]) == 0
    cells = _table_cells((tmp_path / "rep" / "tables" / "main_results.md").read_text())
    assert cells["ce"][0] == f"{my_auc:.3f} (1)" and cells["aucm"][0] != "-"
    # no --runs: the leaderboards, ./runs filling only methods without an entry
    assert main(["report", "-o", "rep", "--data-root", str(tmp_path / "no-data")]) == 0
    cells = _table_cells((tmp_path / "rep" / "tables" / "main_results.md").read_text())
    assert cells["ce"][0] == f"{board_auc:.3f} (1)"


def test_the_main_table_never_mixes_budgets(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for task in ("breastmnist", "pneumoniamnist"):
        fake_run(runs, task, "ce", 0, val_auc=0.90, signal=1.0, overrides=PROTOCOL)
    # AUC-M at the protocol budget, and a 2-epoch bf16 variant with a better validation AUC: the protocol one is shown
    protocol_aucm = fake_run(runs, "breastmnist", "aucm", 0, val_auc=0.80, signal=1.2, overrides=PROTOCOL)
    fake_run(runs, "breastmnist", "aucm", 0, val_auc=0.99, signal=3.0, overrides={"epochs": 2, "precision": "bf16"})
    # on PneumoniaMNIST AUC-M has only a short run: shown with its budget, outside the bold contest and the mean
    fake_run(runs, "pneumoniamnist", "aucm", 0, val_auc=0.99, signal=3.0, overrides={"epochs": 2, "precision": "bf16"})
    out, _ = build_report(ReportOptions(runs=runs, out=tmp_path / "rep", data_root=str(tmp_path / "no-data")))
    table = (out / "tables" / "main_results.md").read_text()
    cells = _table_cells(table)
    aucm_auc = json.loads((protocol_aucm / "result.json").read_text())["test"]["auc"]
    assert cells["aucm"][0] == f"{aucm_auc:.3f} (1)"
    assert cells["aucm"][1].endswith("(1; 2 epochs, bf16)") and cells["aucm"][2] == "-"
    aucm_row = next(line for line in table.splitlines() if line.startswith("| aucm |"))
    assert "**" not in aucm_row.split("|")[3]  # the short run's higher AUC is not set in bold
    assert cells["ce"][2] != "-"  # ce is at the protocol budget on both tasks: it has a mean
    index = (out / "index.md").read_text()
    assert "## Study protocol" in index.split("## Tables")[0] and "100 epochs, fp32 (BreastMNIST, PneumoniaMNIST)" in index
    assert "Selection rule:" in index and "Seeds:" in index


def test_controls_are_compared_within_one_budget(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fake_run(runs, "breastmnist", "ce", 0, val_auc=0.9, signal=1.0, overrides=PROTOCOL)  # 100-epoch defaults
    for aug in ("flip", "crop"):  # 12-epoch controls: no 12-epoch defaults yet, so nothing to compare them with
        fake_run(runs, "breastmnist", "ce", 0, val_auc=0.9, signal=1.0, overrides={"epochs": 12, "augment": aug})
    out, written = build_report(ReportOptions(runs=runs, out=tmp_path / "rep", data_root=str(tmp_path / "no-data")))
    assert "figures/controls_ablation.png" not in written
    fake_run(runs, "breastmnist", "ce", 0, val_auc=0.9, signal=1.1, overrides={"epochs": 12})  # the 12-epoch defaults
    from benchmark.report.ablation import ablations

    groups = group_runs(load_runs(runs)[0])
    (ablation,) = ablations(groups, ["breastmnist"], ["ce"])
    assert ablation.budget == "12 epochs, fp32" and sorted(v.label for v in ablation.variants) == ["augment=crop", "augment=flip", "defaults"]
    assert [v.baseline for v in ablation.variants].count(True) == 1


def test_no_generated_file_names_a_path_of_this_machine(trained: dict, handmade: dict, tmp_path: Path) -> None:
    runs = tmp_path / "stores"
    shutil.copytree(trained["runs"], runs / "a")
    shutil.copytree(handmade["runs"], runs / "b")
    (runs / "a" / "breastmnist" / "ce" / "broken").mkdir(parents=True)
    (runs / "a" / "breastmnist" / "ce" / "broken" / "result.json").write_text("{not json")
    opts = ReportOptions(runs=[runs / "a", runs / "b"], out=tmp_path / "rep", leaderboards=handmade["boards"], data_root=str(trained["data"]), verify_md5=False,
                         storages=[f"sqlite:///{runs / 'a' / 'optuna.db'}"])
    out, written = build_report(opts)
    assert any(name.startswith("figures/optuna_") for name in written)
    for forbidden in (str(tmp_path), str(trained["runs"].parent), str(trained["data"]), str(handmade["base"])):
        for path in out.rglob("*"):
            if path.is_file():
                assert forbidden.encode() not in path.read_bytes(), f"{path.name} names {forbidden}"
    index = (out / "index.md").read_text()
    assert "`a`, `b`" in index and "skipped unreadable a/breastmnist/ce/broken/result.json" in index


def test_figures_keep_their_legend_inside_and_name_every_bar() -> None:
    colors = method_colors()
    scores = {"BreastMNIST": {m: figures_scores(0.85 + 0.01 * i) for i, m in enumerate(colors)}}
    fig = bars.auc_bars(scores, {"BreastMNIST": 0.901}, colors)
    fig.canvas.draw()
    (legend,) = fig.legends
    box, frame = legend.get_window_extent(), fig.bbox
    assert box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1
    assert sorted(t.get_text() for t in legend.get_texts() if t.get_text().strip()) == sorted([*colors, "MedMNIST v2 ResNet-18", "one seed"])
    ax = fig.axes[0]
    assert sorted(t.get_text().strip() for t in ax.texts) == sorted(colors)  # every bar carries its method's name
    assert ax.get_ylim()[0] == pytest.approx(0.5)  # bars from chance, not from an arbitrary 0.8


def figures_scores(mean: float):
    from benchmark.report.style import Scores

    return Scores.of([mean, mean + 0.01])


def test_optuna_history_has_whole_trial_numbers_and_a_step_line(trained: dict) -> None:
    import optuna

    storage = f"sqlite:///{trained['runs'] / 'optuna.db'}"
    (info,), _ = optuna_figures.load_studies([(storage, "optuna.db")], ["breastmnist"])
    fig = optuna_figures.history_figure(info, "#0072B2", "BreastMNIST / ce")
    ax = fig.axes[0]
    ax.set_xlim(-0.3, 6.3)  # a range where a float locator would put ticks at 0.5, 1.5, ...
    fig.canvas.draw()
    ticks = ax.get_xticks()
    assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks)
    best = [line for line in ax.get_lines() if line.get_drawstyle() == "steps-post"]
    assert len(best) == 1
    expected, so_far = [], -math.inf  # the best completed value up to each trial number, pruned trials carrying it on
    for t in sorted(info.study.trials, key=lambda t: t.number):
        so_far = max(so_far, t.value) if t.state == optuna.trial.TrialState.COMPLETE else so_far
        expected.append(so_far)
    assert list(best[0].get_xdata()) == [t.number for t in info.study.trials]
    assert list(best[0].get_ydata()) == pytest.approx(expected)
    (dots,) = [c for c in ax.collections if c.get_label() == "pruned trial (last reported)"]
    assert dots.get_offsets().tolist() == [[6.0, 0.55]]


def test_the_accuracy_table_thresholds_on_validation(tmp_path: Path) -> None:
    """ACC at 0.5 beside ACC and balanced ACC at the validation-chosen threshold, from runs and from a leaderboard alike."""
    dirs = [fake_run(tmp_path / "runs", "breastmnist", "aucm", s, val_auc=0.9, signal=1.0, overrides=PROTOCOL, val_signal=1.0) for s in (0, 1)]
    expected = {"acc": [], "acc_at_val_threshold": [], "balanced_acc_at_val_threshold": []}
    for d in dirs:
        with np.load(d / "predictions_val.npz") as v, np.load(d / "predictions_test.npz") as t:
            yv, zv, yt, zt = v["labels"][:, 0], v["logits"][:, 0], t["labels"][:, 0] == 1, t["logits"][:, 0]
        # Youden's threshold by brute force over the validation logits (highest among equals), never looking at the test split
        best = max(np.unique(zv), key=lambda c: (np.mean(zv[yv == 1] >= c) - np.mean(zv[yv == 0] >= c), c))
        expected["acc"].append(np.mean((1 / (1 + np.exp(-zt)) > 0.5) == yt))
        expected["acc_at_val_threshold"].append(np.mean((zt >= best) == yt))
        expected["balanced_acc_at_val_threshold"].append((np.mean(zt[yt] >= best) + np.mean(zt[~yt] < best)) / 2)
    cells = [f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f} (2)" for v in expected.values()]
    add_runs("breastmnist", dirs, tmp_path / "lb")
    for opts in (ReportOptions(runs=tmp_path / "runs", out=tmp_path / "a", data_root=str(tmp_path / "no-data")),
                 ReportOptions(runs=[], out=tmp_path / "b", leaderboards=tmp_path / "lb", data_root=str(tmp_path / "no-data"), runs_first=False)):
        out, _ = build_report(opts)
        table = (out / "tables" / "accuracy.md").read_text()
        assert f"| BreastMNIST | aucm | 100 epochs, fp32 | {' | '.join(cells)} |" in table, table
        assert "### Accuracy at MedMNIST's threshold" in (out / "index.md").read_text()


STUDY_TEXT = """
description = "a hand-made study"
tasks = ["breastmnist"]
[tune]
trials = 2
epochs = 100
[fixed]
precision = "bf16"
[[arm]]
method = "ce"
[[arm]]
method = "aucm"
[[arm]]
name = "ce+ema"
method = "ce"
base = "ce"
fixed = { ema = true }
"""


def test_a_study_report_shows_the_study_finals_alone_and_its_levers_beside_their_base(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.leaderboard import add_results, read_run

    runs, boards = tmp_path / "runs", tmp_path / "leaderboards"
    studies = tmp_path / "studies"
    studies.mkdir()
    path = studies / "hand.toml"
    path.write_text(STUDY_TEXT)
    study_budget = {"epochs": 100, "precision": "bf16"}
    aucs: dict[str, list[float]] = {}
    for arm, overrides, signal in (("ce", study_budget, 0.8), ("ce+ema", {**study_budget, "ema": True}, 1.0)):
        results = []
        for seed in (0, 1, 2):
            d = fake_run(runs, "breastmnist", "ce", seed, val_auc=0.85, signal=signal + 0.1 * seed, overrides=overrides)
            labels, logits = np.load(d / "predictions_test.npz")["labels"], np.load(d / "predictions_test.npz")["logits"]
            aucs.setdefault(arm, []).append(roc_auc_score(labels.ravel(), logits.ravel()))
            r = read_run(d)
            r.record.update({"study": "hand", "arm": arm, "command": f"bench study run {path}"})
            if arm == "ce+ema":
                r.record["robustness"] = {"mean_corrupted_auc": 0.70 + 0.02 * seed}
            results.append(r)
        add_results("breastmnist", results, boards)
    # entries outside the study, with a better validation AUC: a plain report may pick them, a study report never
    add_runs("breastmnist", [fake_run(runs, "breastmnist", "ce", 0, val_auc=0.99, signal=3.0, overrides=PROTOCOL)], boards)
    add_runs("breastmnist", [fake_run(runs, "breastmnist", "aucm", 0, val_auc=0.99, signal=3.0, overrides=PROTOCOL)], boards)

    code = main(["report", "--study", str(path), "--leaderboards", str(boards), "-o", str(tmp_path / "rep"), "--data-root", str(tmp_path / "no-data")])
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "rep"
    cells = _table_cells((out / "tables" / "main_results.md").read_text())
    ce = np.asarray(aucs["ce"])
    assert cells["ce"][0] == f"{ce.mean():.3f} ± {ce.std(ddof=1):.3f} (3)"  # bold: the only method at the study's budget
    assert "aucm" not in cells  # no final run of the aucm arm: the fp32 aucm entry is not the study's
    levers = (out / "tables" / "levers.md").read_text()
    row = next(line for line in levers.splitlines() if line.startswith("| BreastMNIST | ce+ema |"))
    c = [x.strip() for x in row.split("|")[1:-1]]
    ema = np.asarray(aucs["ce+ema"])
    assert c[2:4] == ["ce", "ema=true"]
    assert c[4] == f"{ema.mean():.3f} ± {ema.std(ddof=1):.3f} (3)" and c[5] == cells["ce"][0]
    assert c[6] == f"{ema.mean() - ce.mean():+.3f} ({np.std(ema - ce, ddof=1):.3f})"
    assert c[8] == "0.720 ± 0.020 (3)" and c[9] == "-"
    index = (out / "index.md").read_text()
    assert "### Levers" in index and "100 epochs, bf16 with seeds 0, 1, 2" in index and "`bench study run hand.toml`" in index
    # a plain report of the same boards prefers the protocol budget: the study is not what it shows
    assert main(["report", "--leaderboards", str(boards), "-o", str(tmp_path / "plain"), "--data-root", str(tmp_path / "no-data")]) == 0
    assert _table_cells((tmp_path / "plain" / "tables" / "main_results.md").read_text())["ce"][0].endswith("(1)")
    # a study with no final run on the boards: one line, no report written
    empty = studies / "empty.toml"
    empty.write_text(STUDY_TEXT)
    capsys.readouterr()
    assert main(["report", "--study", str(empty), "--leaderboards", str(boards), "-o", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no final run of" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "none").exists()
    # the same finals under a study that tunes nothing (the same file, so the entries stay this study's):
    # the protocol says so, and names no tuning it did not do
    tuned_protocol = index.split("## Tables")[0]
    assert "finished trials of 100 epochs" in tuned_protocol and "selected on validation" in tuned_protocol
    path.write_text(STUDY_TEXT.replace("trials = 2", "trials = 0"))
    assert main(["report", "--study", str(path), "--leaderboards", str(boards), "-o", str(tmp_path / "rep0"), "--data-root", str(tmp_path / "no-data")]) == 0
    protocol = (tmp_path / "rep0" / "index.md").read_text().split("## Tables")[0]
    assert "no tuning (`[tune] trials = 0`)" in protocol and "at its paper defaults" in protocol
    assert "finished trials" not in protocol and "Optuna record is" not in protocol and "selected on validation" not in protocol
    assert "configuration (selected on validation)" in levers
    levers0 = (tmp_path / "rep0" / "tables" / "levers.md").read_text()
    assert "configuration (its paper defaults, untuned)" in levers0 and "selected on validation" not in levers0
    # the default folders, as reports/ is committed: a study's report in reports/<stem>, kept inside the overview
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--study", "studies/hand.toml", "--data-root", "no-data"]) == 0
    study_index = (tmp_path / "reports" / "hand" / "index.md").read_bytes()
    for _ in range(2):  # built over a folder holding only the study report, then over itself
        assert main(["report", "--data-root", "no-data"]) == 0, capsys.readouterr().err
        overview = (tmp_path / "reports" / "index.md").read_text()
        assert overview.count("[hand](hand/index.md)") == 1 and (tmp_path / "reports" / "hand" / "index.md").read_bytes() == study_index
    assert main(["report", "--study", "studies/hand.toml", "--data-root", "no-data"]) == 0
    assert (tmp_path / "reports" / "index.md").read_text() == overview and not [p for p in (tmp_path / "reports").iterdir() if p.name.startswith(".")]
    # a rebuild that fails at its last step puts the previous report back whole, the study report inside it
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "reports").rglob("*") if p.is_file()}
    real_replace = build_module.os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        if Path(src).name.startswith(".staging-reports-"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(build_module.os, "replace", failing_replace)
    assert main(["report", "--data-root", "no-data"]) == 2
    monkeypatch.undo()
    assert {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "reports").rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.rglob(".*") if p.name.startswith((".staging-", ".old-"))]
    # a study whose report would land in the report's own tables/ folder is refused in one line
    (studies / "tables.toml").write_text(STUDY_TEXT)
    capsys.readouterr()
    assert main(["report", "--study", "studies/tables.toml", "--data-root", "no-data"]) == 2
    err = capsys.readouterr().err
    assert "tables" in err and len(err.strip().splitlines()) == 1


def test_a_lever_on_a_lever_counts_as_tuned_when_an_arm_up_its_chain_was_tuned(tmp_path: Path) -> None:
    from benchmark.report.levers import _selected_on_validation
    from benchmark.studyfile import load

    path = tmp_path / "chain.toml"
    path.write_text("""
tasks = ["breastmnist"]
[tune]
trials = 0
[[arm]]
method = "ce"
trials = 2
[[arm]]
name = "ce+ema"
method = "ce"
base = "ce"
fixed = { ema = true }
[[arm]]
name = "ce+ema+swa"
method = "ce"
base = "ce+ema"
fixed = { swa = true }
[[arm]]
method = "aucm"
[[arm]]
name = "aucm+ema"
method = "aucm"
base = "aucm"
fixed = { ema = true }
""")
    study = load(path)
    arms = {arm.name: arm for arm in study.arms}
    assert _selected_on_validation(study, arms["ce+ema"]) and _selected_on_validation(study, arms["ce+ema+swa"])
    assert not _selected_on_validation(study, arms["aucm+ema"])  # aucm takes the study's trials = 0
