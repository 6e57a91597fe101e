"""Leaderboard statistics (pAUC, FPR at 95 % TPR, DeLong, its CIs, Holm, validation thresholds), leaderboard files, the ranking and verify.

Most tests build run directories in the run store's format directly (config, environment,
result, test predictions) with chosen logits, so the numbers can be checked against
independent computations without training; one test adds runs that `bench run` trained.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import shlex
import statistics
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from benchmark import leaderboard as lb
from benchmark import metrics, ranking
from benchmark.cli import main
from benchmark.errors import BenchError
from benchmark.runner import RunSpec, run
from benchmark.store import save_predictions, write_json
from benchmark.synthetic import write_synthetic
from benchmark.tasks import TASKS, get_task
from scipy.stats import norm

REPO = Path(__file__).resolve().parent.parent

# --- statistics -------------------------------------------------------------------------------


def _pairs_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC as the share of (positive, negative) pairs ranked right, ties 1/2: O(n^2), no library."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_pauc_matches_its_pairwise_definition() -> None:
    rng = np.random.default_rng(1)
    for trial in range(5):
        y = rng.integers(0, 2, size=80)
        s = np.round(rng.normal(size=80) + y, 1)  # rounded: ties happen
        pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
        hard_pos = pos[: max(1, round(len(pos) * 0.3))]  # lowest-scored 30 % of positives (TPR >= 0.7)
        hard_neg = neg[::-1][: max(1, round(len(neg) * 0.3))]  # highest-scored 30 % of negatives (FPR <= 0.3)
        assert metrics.pauc(y, s) == pytest.approx(_pairs_auc(hard_pos, hard_neg), abs=1e-12)
    y = np.array([0, 0, 0, 1, 1, 1])
    assert metrics.pauc(y, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])) == 1.0
    assert metrics.pauc(y, np.array([0.7, 0.8, 0.9, 0.1, 0.2, 0.3])) == 0.0
    ym = rng.integers(0, 2, size=(60, 3))
    sm = rng.normal(size=(60, 3)) + ym
    assert metrics.pauc(ym, sm) == pytest.approx(np.mean([metrics.pauc(ym[:, j], sm[:, j]) for j in range(3)]))


def test_fpr_at_95_tpr_matches_a_threshold_sweep() -> None:
    rng = np.random.default_rng(2)
    for trial in range(5):
        y = rng.integers(0, 2, size=120)
        s = np.round(rng.normal(size=120) + 1.5 * y, 1)
        best = 1.0
        for t in np.unique(s):  # predict positive when s >= t
            tpr, fpr = np.mean(s[y == 1] >= t), np.mean(s[y == 0] >= t)
            if tpr >= 0.95:
                best = min(best, fpr)
        assert metrics.fpr_at_tpr(y, s, 0.95) == pytest.approx(best, abs=1e-12)
    assert metrics.fpr_at_tpr(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0


def test_delong_on_a_hand_worked_example() -> None:
    """Three positives, two negatives, one tie; every number below derived by hand.

    Scorer A: positives 0.9, 0.6, 0.4; negatives 0.5, 0.1. Pairs won: 1,1 / 1,1 / 0,1, so
    AUC_A = 5/6, V10_A = (1, 1, 1/2) and V01_A = (2/3, 1).
    Scorer B: positives 0.7, 0.3, 0.8; negatives 0.3, 0.6. Pairs: 1,1 / 1/2,0 / 1,1, so
    AUC_B = 3/4, V10_B = (1, 1/4, 1) and V01_B = (5/6, 2/3).
    Sample (co)variances: S10 = [[1/12, -1/16], [-1/16, 3/16]], S01 = [[1/18, -1/36], [-1/36, 1/72]].
    Var(AUC_A - AUC_B) = (1/12 + 3/16 + 2/16) / 3 + (1/18 + 1/72 + 2/36) / 2 = 19/144 + 9/144 = 7/36.
    z = (1/12) / sqrt(7/36) = 1 / (2 sqrt 7); p = 2 (1 - Phi(z)) = erfc(z / sqrt 2).
    """
    y = np.array([1, 1, 1, 0, 0])
    a = np.array([0.9, 0.6, 0.4, 0.5, 0.1])
    b = np.array([0.7, 0.3, 0.8, 0.3, 0.6])
    result = metrics.delong_test(y, a, b)
    assert result.auc_a == pytest.approx(5 / 6) and result.auc_b == pytest.approx(3 / 4)
    assert result.se == pytest.approx(math.sqrt(7 / 36))
    assert result.z == pytest.approx(1 / (2 * math.sqrt(7)))
    assert result.p_value == pytest.approx(math.erfc(1 / (2 * math.sqrt(7)) / math.sqrt(2)))
    aucs, v10, v01 = metrics.delong_components(y, np.stack([a, b]))
    assert np.allclose(v10, [[1, 1, 0.5], [1, 0.25, 1]]) and np.allclose(v01, [[2 / 3, 1], [5 / 6, 2 / 3]])
    swapped = metrics.delong_test(y, b, a)
    assert swapped.z == pytest.approx(-result.z) and swapped.p_value == pytest.approx(result.p_value)


def test_fast_delong_matches_the_quadratic_definition() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=90)
    a = np.round(rng.normal(size=90) + y, 1)
    b = np.round(rng.normal(size=90) + 0.5 * y, 1)
    pos, neg = y == 1, y == 0
    m, n = pos.sum(), neg.sum()
    comps = []
    for s in (a, b):  # DeLong's structural components straight from the definition
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = comps
    var = (np.var(v10_a, ddof=1) + np.var(v10_b, ddof=1) - 2 * np.cov(v10_a, v10_b)[0, 1]) / m + (
        np.var(v01_a, ddof=1) + np.var(v01_b, ddof=1) - 2 * np.cov(v01_a, v01_b)[0, 1]
    ) / n
    result = metrics.delong_test(y, a, b)
    assert result.auc_a == pytest.approx(roc_auc_score(y, a)) == pytest.approx(auc_a)
    assert result.auc_b == pytest.approx(auc_b)
    assert result.se == pytest.approx(math.sqrt(var), rel=1e-10)
    z = (auc_a - auc_b) / math.sqrt(var)
    assert result.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-10)
    same = metrics.delong_test(y, a, 2 * a + 1)  # same ranking: no difference, no variance
    assert same.p_value == 1.0 and same.se == 0.0


def test_weighted_auc_equals_roc_auc_with_multiplicities() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=50)
    s = np.round(rng.normal(size=50) + y, 1)
    weights = rng.integers(0, 4, size=(6, 50)).astype(float)
    column = metrics._WeightedAUC(y == 1, s)
    expected = [roc_auc_score(y, s, sample_weight=w) for w in weights]
    assert np.allclose(column(weights), expected, atol=1e-12)


@pytest.mark.parametrize("n_labels", [1, 4])
def test_bootstrap_ci_contains_the_mean_and_is_seeded(n_labels: int) -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, size=(150, n_labels))
    logits = rng.normal(size=(3, 150, n_labels)) + y[None]
    mean = np.mean([metrics.auc(y, metrics.sigmoid(l)) for l in logits])
    low, high = metrics.bootstrap_auc_ci(y, logits, n_resamples=500, seed=0)
    assert low < mean < high and high - low < 0.3
    assert metrics.bootstrap_auc_ci(y, logits, n_resamples=500, seed=0) == (low, high)
    assert metrics.bootstrap_auc_ci(y, logits, n_resamples=500, seed=1) != (low, high)
    # a bigger test set gives a narrower interval
    y_big = rng.integers(0, 2, size=(1500, n_labels))
    big = rng.normal(size=(3, 1500, n_labels)) + y_big[None]
    low_big, high_big = metrics.bootstrap_auc_ci(y_big, big, n_resamples=500)
    assert high_big - low_big < (high - low) / 2


def _psi(y: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """DeLong's components by the definition: psi(x_i, y_j) = 1, 1/2 or 0 for each (positive, negative) pair."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


def test_auc_mean_ci_is_delongs_variance_of_the_seed_mean() -> None:
    rng = np.random.default_rng(11)
    y = (rng.random(140) < 0.6).astype(int)
    logits = np.round(rng.normal(size=(3, 140)) + 1.2 * y, 1)  # rounded: ties happen
    scores = 1 / (1 + np.exp(-logits))
    comps = [_psi(y, s) for s in scores]
    m, n = int(y.sum()), int((1 - y).sum())
    v10 = np.stack([c[1] for c in comps])
    v01 = np.stack([c[2] for c in comps])
    # the mean of three correlated AUCs: Var = (1/9) sum_ab (S10_ab / m + S01_ab / n), sample covariances by hand
    def cov(a, b):
        return np.sum((a - a.mean()) * (b - b.mean())) / (len(a) - 1)
    var = sum(cov(v10[a], v10[b]) / m + cov(v01[a], v01[b]) / n for a in range(3) for b in range(3)) / 9
    mean = np.mean([roc_auc_score(y, s) for s in scores])
    half = norm.ppf(0.975) * math.sqrt(var)
    low, high = metrics.auc_mean_ci(y[:, None], logits[:, :, None])
    assert low == pytest.approx(mean - half, abs=1e-12) and high == pytest.approx(mean + half, abs=1e-12)
    # one seed: DeLong's interval of that AUC
    one = metrics.auc_mean_ci(y[:, None], logits[:1, :, None])
    se = math.sqrt(np.var(v10[0], ddof=1) / m + np.var(v01[0], ddof=1) / n)
    assert one == pytest.approx((comps[0][0] - norm.ppf(0.975) * se, comps[0][0] + norm.ppf(0.975) * se), abs=1e-12)


def test_auc_mean_ci_is_stable_and_agrees_with_a_large_bootstrap() -> None:
    """The analytic interval has no resampling seed: recomputing, or reordering the test cases, gives the same bounds to the last bit;
    its half-width matches a 4,000-resample bootstrap's, whose own bounds move with its seed."""
    rng = np.random.default_rng(12)
    y = (rng.random((156, 1)) < 0.73).astype(int)
    logits = rng.normal(size=(2, 156, 1)) + 1.5 * y[None]
    ci = metrics.auc_mean_ci(y, logits)
    assert metrics.auc_mean_ci(y, logits) == ci
    order = rng.permutation(156)
    assert metrics.auc_mean_ci(y[order], logits[:, order]) == pytest.approx(ci, abs=1e-12)
    boot = [metrics.bootstrap_auc_ci(y, logits, n_resamples=4000, seed=s) for s in (0, 1)]
    assert boot[0] != boot[1]
    for low, high in boot:
        assert (high - low) == pytest.approx(ci[1] - ci[0], rel=0.15)
    # multi-label: the label-mean AUC's interval, with the labels' correlation counted, against a case bootstrap
    ym = (rng.random((600, 3)) < 0.3).astype(int)
    shared = rng.normal(size=(600, 1))
    zm = rng.normal(size=(2, 600, 3)) + ym[None] * np.array([0.5, 1.0, 2.0]) + shared[None]
    low, high = metrics.auc_mean_ci(ym, zm)
    mean = np.mean([metrics.auc(ym, metrics.sigmoid(z)) for z in zm])
    assert low < mean < high and (low + high) / 2 == pytest.approx(mean, abs=1e-12)
    b_low, b_high = metrics.bootstrap_auc_ci(ym, zm, n_resamples=3000, seed=0)
    assert (high - low) == pytest.approx(b_high - b_low, rel=0.15)


def test_holm_on_a_hand_worked_example() -> None:
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> raised to the running max 0.06
    assert metrics.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert metrics.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert metrics.holm([]) == [] and metrics.holm([0.2]) == pytest.approx([0.2])


def test_val_threshold_is_youdens_on_validation_and_the_test_split_never_moves_it() -> None:
    rng = np.random.default_rng(13)
    yv = (rng.random(80) < 0.7).astype(int)
    zv = np.round(rng.normal(size=80) + 1.3 * yv, 1)
    # brute force over every validation logit as a threshold ("positive" when logit >= t): max TPR - FPR, the highest t among equals
    best = max(np.unique(zv), key=lambda t: (np.mean(zv[yv == 1] >= t) - np.mean(zv[yv == 0] >= t), t))
    assert metrics.youden_thresholds(yv, zv)[0] == best
    yt = (rng.random(120) < 0.7).astype(int)
    zt = rng.normal(size=120) + yt
    out = metrics.val_threshold_metrics(yv, zv, yt, zt)
    predicted = zt >= best
    assert out["acc_at_val_threshold"] == pytest.approx(np.mean(predicted == (yt == 1)))
    tpr, tnr = np.mean(predicted[yt == 1]), np.mean(~predicted[yt == 0])
    assert out["balanced_acc_at_val_threshold"] == pytest.approx((tpr + tnr) / 2)
    # whatever the test split holds, the threshold is the validation one
    for y_other, z_other in ((1 - yt, zt), (yt, zt * 10 + 5), (np.ones(120, int), rng.normal(size=120))):
        again = metrics.val_threshold_metrics(yv, zv, y_other, z_other)
        assert again["acc_at_val_threshold"] == pytest.approx(np.mean((z_other >= best) == (y_other == 1)))
    assert metrics.thresholds_record(yv, zv) == [best]
    # saturating logits stay apart (a sigmoid threshold would tie them at 1.0)
    ys = np.array([0, 0, 1, 1])
    assert metrics.youden_thresholds(ys, np.array([40.0, 41.0, 42.0, 43.0]))[0] == 42.0
    assert metrics.thresholds_record(np.zeros(4, int), np.arange(4.0)) == [None]  # one class on validation: no threshold


# --- run directories in the run store's format ---------------------------------------------------


def fake_run(
    root: Path,
    task: str = "breastmnist",
    *,
    method: str = "ce",
    seed: int = 0,
    config: dict | None = None,
    labels: np.ndarray | None = None,
    logits: np.ndarray | None = None,
    md5: str = "0" * 32,
    evaluated: bool = True,
    architecture: str | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    device: str = "cpu",
) -> Path:
    """Write a finished run directory as runner.run does, with the given test (and validation) predictions."""
    t = get_task(task)
    config = dict(config or {"lr": 1e-3, "epochs": 100, "batch_size": 128, "as_rgb": False, "weight_decay": 0.0})
    rng = np.random.default_rng(seed)
    if labels is None:
        labels = np.zeros((40, t.n_labels), dtype=np.int64)
        labels[:28] = 1
    if logits is None:
        logits = (rng.normal(size=labels.shape) + labels).astype(np.float32)
    run_dir = root / task / method / f"{hashlib.sha256(json.dumps([seed, config, method]).encode()).hexdigest()[:12]}"
    run_dir.mkdir(parents=True)
    write_json(run_dir / "config.json", {"task": task, "method": method, "seed": seed, **config})
    write_json(run_dir / "environment.json", {"git_commit": "abc123", "packages": {"torch": "2.0", "numpy": "2.0"}})
    save_predictions(run_dir / "predictions_test.npz", labels, logits)
    if val is not None:
        save_predictions(run_dir / "predictions_val.npz", *val)
    test = metrics.evaluate(labels, logits) if evaluated else None
    write_json(
        run_dir / "result.json",
        {
            "task": task,
            "method": method,
            "seed": seed,
            "config": config,
            "config_hash": run_dir.name,
            "architecture": architecture or t.architecture,
            "best_epoch": 7,
            "epochs_run": 10,
            "val": {"auc": 0.9, "acc": 0.8},
            "test": test,
            "train_seconds": 10.0 + seed,
            "device": device,
            "data_md5": md5,
            "data_md5_verified": False,
        },
    )
    return run_dir


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def test_add_runs_groups_seeds_and_recomputes_every_number(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / "runs", seed=s) for s in (0, 1, 2)]
    other = fake_run(tmp_path / "runs", seed=0, config={"lr": 1e-2, "epochs": 100, "batch_size": 128, "as_rgb": False, "weight_decay": 0.0})
    added = lb.add_runs("breastmnist", runs + [other], tmp_path / "lb")
    assert len(added["breastmnist"]) == 2
    board = json.loads((tmp_path / "lb" / "breastmnist.json").read_text())
    assert board["schema_version"] == lb.SCHEMA_VERSION and board["task"] == "breastmnist"
    ref = board["entries"][0]
    assert ref["reference"] is True and ref["kind"] == "reference" and ref["test"]["auc"]["mean"] == get_task("breastmnist").reference["auc"]
    entries = {e["n_seeds"]: e for e in board["entries"][1:]}
    entry = entries[3]
    assert entry["seeds"] == [0, 1, 2] and entry["method"] == "ce" and entry["fixed_architecture"] is True
    per_seed = []
    for run_dir, record in zip(runs, entry["runs"]):
        with np.load(run_dir / "predictions_test.npz") as npz:
            y, z = npz["labels"], npz["logits"]
        p = 1 / (1 + np.exp(-z.astype(np.float64)))
        assert record["test"]["auc"] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
        assert record["test"]["acc"] == pytest.approx(np.mean((p[:, 0] > 0.5) == (y[:, 0] == 1)))
        assert record["test"]["pauc"] == pytest.approx(metrics.pauc(y, p))
        assert record["test"]["fpr_at_95tpr"] == pytest.approx(metrics.fpr_at_tpr(y, p))
        per_seed.append(record["test"]["auc"])
    assert entry["test"]["auc"]["mean"] == pytest.approx(statistics.mean(per_seed))
    assert entry["test"]["auc"]["sd"] == pytest.approx(statistics.stdev(per_seed))
    low, high = entry["test"]["auc"]["ci95"]
    assert low < entry["test"]["auc"]["mean"] < high
    assert entry["train_seconds"] == {"total": 33.0, "mean": 11.0}
    assert entry["git_commits"] == ["abc123"] and entry["packages"]["torch"] == ["2.0"]
    assert len(entry["dates"]) == 2 and entry["data_md5"] == "0" * 32
    assert entries[1]["test"]["auc"]["sd"] is None
    # the sidecar holds the per-seed logits the numbers came from, under its recorded SHA-256
    labels, logits, seeds = lb.read_predictions(entry, tmp_path / "lb")
    assert seeds == [0, 1, 2] and logits.shape == (3, 40, 1)
    assert hashlib.sha256((tmp_path / "lb" / entry["predictions"]["file"]).read_bytes()).hexdigest() == entry["predictions"]["sha256"]


def test_regenerating_from_the_same_runs_gives_byte_identical_files(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / "runs", seed=s) for s in (0, 1, 2)]
    runs.append(fake_run(tmp_path / "runs", method="other", seed=0))
    lb.add_runs(None, runs, tmp_path / "a")
    lb.add_runs(None, runs[::-1], tmp_path / "b")
    for r in runs:  # one at a time, as separate `bench leaderboard add` calls would
        lb.add_runs(None, [r], tmp_path / "c")
    first = _files(tmp_path / "a")
    assert first == _files(tmp_path / "b") == _files(tmp_path / "c")
    lb.add_runs(None, runs[:2], tmp_path / "a")  # re-adding changes nothing, and leaves no stale sidecar
    assert _files(tmp_path / "a") == first
    text = (tmp_path / "a" / "breastmnist.json").read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


def _add_many(directory: str, run_dirs: list[str], barrier) -> None:
    barrier.wait()  # start together, so the two writers' read-modify-write cycles overlap
    for run_dir in run_dirs:
        lb.add_runs("breastmnist", [run_dir], directory)


def test_two_processes_adding_at_once_lose_nothing(tmp_path: Path) -> None:
    runs = [str(fake_run(tmp_path / "runs", method=f"m{i}", seed=0)) for i in range(12)]
    directory = str(tmp_path / "lb")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    writers = [context.Process(target=_add_many, args=(directory, runs[k::2], barrier)) for k in (0, 1)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=300)
    assert [w.exitcode for w in writers] == [0, 0]
    board = lb.read_board("breastmnist", directory)
    methods = sorted(e["method"] for e in board["entries"] if not e.get("reference"))
    assert methods == sorted(f"m{i}" for i in range(12))
    sidecars = sorted(p.name for p in (tmp_path / "lb" / "breastmnist").iterdir())
    assert sidecars == sorted(Path(e["predictions"]["file"]).name for e in board["entries"] if not e.get("reference"))


def _rows(result: dict) -> list[dict]:
    return [row for group in result["groups"] for row in group["rows"]]


def test_ranking_compares_every_entry_with_the_ce_baseline_by_one_quantity(tmp_path: Path) -> None:
    """The difference shown and the DeLong test beside it are of the same quantity, the seed-ensemble AUC, computed here by hand."""
    rng = np.random.default_rng(7)
    labels = (rng.random((120, 1)) < 0.7).astype(np.int64)
    labels[:2] = [[1], [0]]
    ce_runs = [fake_run(tmp_path / "runs", seed=s, labels=labels, logits=(rng.normal(size=(120, 1)) + labels).astype(np.float32)) for s in (0, 1)]
    good = [fake_run(tmp_path / "runs", method="good", seed=s, labels=labels, logits=(rng.normal(size=(120, 1)) + 3 * labels).astype(np.float32)) for s in (0, 1)]
    # per seed better than CE on average, but its seed ensemble is worse: the quantity tested is the ensemble's
    odd_logits = [(rng.normal(size=(120, 1)) + 1.6 * labels).astype(np.float32) for _ in (0, 1)]
    odd = [fake_run(tmp_path / "runs", method="odd", seed=s, labels=labels, logits=odd_logits[s]) for s in (0, 1)]
    lb.add_runs("breastmnist", ce_runs + good + odd, tmp_path / "lb")
    result = ranking.ranking("breastmnist", tmp_path / "lb")
    assert len(result["groups"]) == 1 and result["groups"][0]["protocol"]
    rows = _rows(result)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert [r["auc"] for r in rows] == sorted((r["auc"] for r in rows), reverse=True)
    by_method = {r["method"]: r for r in rows}
    ce = by_method["ce"]
    assert ce["baseline"] and ce["comparison"] is None and result["groups"][0]["baseline"] == ce["id"]

    def ensemble(dirs):  # independent: seed-averaged logits straight from the run directories, scored by scikit-learn
        z = np.mean([np.load(d / "predictions_test.npz")["logits"] for d in dirs], axis=0)[:, 0].astype(np.float64)
        return 1 / (1 + np.exp(-z))

    p_values = {}
    for method, dirs in (("good", good), ("odd", odd)):
        c = by_method[method]["comparison"]
        a, b = ensemble(dirs), ensemble(ce_runs)
        delta = roc_auc_score(labels[:, 0], a) - roc_auc_score(labels[:, 0], b)
        (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = _psi(labels[:, 0], a), _psi(labels[:, 0], b)
        m, n = len(v10_a), len(v01_a)
        var = np.var(v10_a - v10_b, ddof=1) / m + np.var(v01_a - v01_b, ddof=1) / n
        p = math.erfc(abs(delta) / math.sqrt(var) / math.sqrt(2))
        assert c["baseline"] == ce["id"] and "seed-averaged" in c["quantity"]
        assert c["delta"] == pytest.approx(delta, abs=1e-12) and c["p_delong"] == pytest.approx(p, rel=1e-9)
        half = norm.ppf(0.975) * math.sqrt(var)
        assert c["ci95"] == pytest.approx([delta - half, delta + half], abs=1e-12)
        # the sign of the difference is the sign of what the test compares (the CI is around the same number)
        assert (c["ci95"][0] + c["ci95"][1]) / 2 == pytest.approx(c["delta"], abs=1e-12)
        p_values[method] = p
    assert by_method["good"]["comparison"]["p_delong"] < 0.05
    # Holm over the task's two comparisons, by hand
    low, high = sorted(p_values.values())
    holm = {k: (2 * low if v == low else max(2 * low, high)) for k, v in p_values.items()}
    for method in ("good", "odd"):
        assert by_method[method]["comparison"]["p_holm"] == pytest.approx(min(1.0, holm[method]), rel=1e-9)
    assert by_method["good"]["delta_ref"] == pytest.approx(by_method["good"]["auc"] - 0.901)
    columns, cells = ranking.display_rows(rows)
    assert "(CE baseline)" in " ".join(cells[[r["id"] for r in rows].index(ce["id"])])
    assert "ens. AUC vs CE" in columns and "p Holm" in columns and "100 epochs, fp32, 2 seeds, defaults" in [c[3] for c in cells]


def test_the_baseline_is_the_protocol_ce_and_budgets_are_never_ranked_together(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    protocol = {"lr": 1e-3, "epochs": 100, "batch_size": 128, "as_rgb": False, "weight_decay": 0.0}
    short_bf16 = {**protocol, "epochs": 12, "precision": "bf16", "lr": 1e-4}
    tuned = {**protocol, "lr": 3e-4}
    dirs = [fake_run(runs, seed=0, config=protocol)]  # the protocol CE: defaults, one seed
    dirs += [fake_run(runs, seed=s, config=short_bf16) for s in (1, 2, 3)]  # more seeds, but 12 epochs in bf16
    dirs += [fake_run(runs, seed=s, config=tuned) for s in (1, 2, 3)]  # protocol budget, tuned, more seeds
    dirs += [fake_run(runs, method="aucm", seed=s, config=short_bf16) for s in (1, 2, 3)]
    dirs += [fake_run(runs, method="aucm", seed=0, config=protocol)]
    dirs += [fake_run(runs, method="gpu", seed=0, config=protocol, device="cuda")]  # auto on CUDA is bf16: not the protocol budget
    lb.add_runs("breastmnist", dirs, tmp_path / "lb")
    result = ranking.ranking("breastmnist", tmp_path / "lb")
    groups = {(g["budget"]["epochs"], g["budget"]["precision"]): g for g in result["groups"]}
    assert list(groups) == [(100, "fp32"), (12, "bf16"), (100, "bf16")]  # the protocol budget first
    board = {e["id"]: e for e in lb.read_board("breastmnist", tmp_path / "lb")["entries"]}
    default_ce = next(i for i, e in board.items() if e.get("method") == "ce" and e["config"]["lr"] == 1e-3 and e["config"]["epochs"] == 100)
    assert groups[(100, "fp32")]["baseline"] == default_ce and board[default_ce]["budget"]["hyperparameters"] == "defaults"
    for key, group in groups.items():
        for row in group["rows"]:
            if row["kind"] != "reference":
                assert (row["budget"]["epochs"], row["budget"]["precision"]) == key  # no row of another budget in a group
            if row["comparison"]:
                assert board[row["comparison"]["baseline"]]["budget"]["epochs"] == key[0]
    short_ce = groups[(12, "bf16")]["baseline"]
    assert board[short_ce]["budget"] == {"epochs": 12, "precision": "bf16", "hyperparameters": "tuned"}
    assert groups[(100, "bf16")]["baseline"] is None and all(r["comparison"] is None for r in groups[(100, "bf16")]["rows"])
    assert any(r["kind"] == "reference" for r in groups[(100, "fp32")]["rows"])
    # a superseded entry is never ranked nor a baseline, and keeps its reason through a re-add
    path = tmp_path / "lb" / "breastmnist.json"
    data = json.loads(path.read_text())
    for e in data["entries"]:
        if e["id"] == default_ce:
            e["superseded"] = "before the fidelity fixes"
    write_json(path, data)
    lb.add_runs("breastmnist", [dirs[0]], tmp_path / "lb")
    assert lb.read_board("breastmnist", tmp_path / "lb")["entries"][[e["id"] for e in data["entries"]].index(default_ce)]["superseded"] == "before the fidelity fixes"
    result = ranking.ranking("breastmnist", tmp_path / "lb")
    assert default_ce not in [r["id"] for r in _rows(result)]
    assert [r["id"] for r in result["superseded"]] == [default_ce] and result["superseded"][0]["superseded"] == "before the fidelity fixes"
    tuned_ce = result["groups"][0]["baseline"]
    assert tuned_ce != default_ce and board[tuned_ce]["config"]["lr"] == 3e-4
    text = ranking.render(["breastmnist"], "table", tmp_path / "lb")
    assert "superseded entries (not ranked)" in text and "before the fidelity fixes" in text


def test_multilabel_entries_have_no_delong_p_value(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / "runs", "chestmnist", method=m, seed=0) for m in ("ce", "other")]
    lb.add_runs("chestmnist", runs, tmp_path / "lb")
    rows = [r for r in _rows(ranking.ranking("chestmnist", tmp_path / "lb")) if r["kind"] == "run"]
    assert len(rows) == 2 and all(r["comparison"] is None or r["comparison"]["p_delong"] is None for r in rows)
    other = next(r for r in rows if not r["baseline"])
    assert other["comparison"]["delta"] is not None and other["comparison"]["ci95"] is None


def test_val_threshold_metrics_enter_the_entry(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    vy = (rng.random((50, 1)) < 0.7).astype(np.int64)
    runs = [fake_run(tmp_path / "runs", seed=s, val=(vy, (rng.normal(size=(50, 1)) + vy).astype(np.float32))) for s in (0, 1)]
    no_val = fake_run(tmp_path / "runs", method="noval", seed=0)
    lb.add_runs("breastmnist", runs + [no_val], tmp_path / "lb")
    board = lb.read_board("breastmnist", tmp_path / "lb")
    entry = next(e for e in board["entries"] if e.get("method") == "ce")
    values = []
    for run_dir, record in zip(runs, entry["runs"]):
        with np.load(run_dir / "predictions_val.npz") as v, np.load(run_dir / "predictions_test.npz") as t:
            threshold = metrics.youden_thresholds(v["labels"], v["logits"])[0]
            predicted = t["logits"][:, 0] >= threshold
            y = t["labels"][:, 0] == 1
        assert record["val_threshold"] == [pytest.approx(threshold)]
        assert record["test"]["acc_at_val_threshold"] == pytest.approx(np.mean(predicted == y))
        assert record["test"]["balanced_acc_at_val_threshold"] == pytest.approx((np.mean(predicted[y]) + np.mean(~predicted[~y])) / 2)
        values.append(record["test"]["acc_at_val_threshold"])
    assert entry["test"]["acc_at_val_threshold"]["mean"] == pytest.approx(np.mean(values))
    assert lb.read_val_predictions(entry, tmp_path / "lb")[1].shape == (2, 50, 1)
    other = next(e for e in board["entries"] if e.get("method") == "noval")
    assert "acc_at_val_threshold" not in other["test"] and lb.read_val_predictions(other, tmp_path / "lb") is None
    row = next(r for r in _rows(ranking.ranking("breastmnist", tmp_path / "lb")) if r["method"] == "noval")
    assert row["acc_at_val_threshold"] is None and row["acc"] is not None


def test_verify_recomputes_from_the_data_file_and_fails_on_any_difference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_synthetic(get_task("breastmnist"), data)
    with np.load(data / "breastmnist.npz") as npz:
        test_labels, val_labels = npz["test_labels"].astype(np.int64), npz["val_labels"].astype(np.int64)
    import hashlib as _h

    md5 = _h.md5((data / "breastmnist.npz").read_bytes()).hexdigest()
    rng = np.random.default_rng(10)
    dirs = [fake_run(tmp_path / "runs", seed=s, labels=test_labels, md5=md5, val=(val_labels, rng.normal(size=val_labels.shape).astype(np.float32))) for s in (0, 1)]
    directory = tmp_path / "lb"
    lb.add_runs("breastmnist", dirs, directory)
    args = ["leaderboard", "verify", "--leaderboard-dir", str(directory), "--data-root", str(data), "--no-verify", "--task", "breastmnist"]
    assert main(args) == 0
    assert "breastmnist: 1 entries recomputed, 0 differences" in capsys.readouterr().out
    path = directory / "breastmnist.json"
    original = path.read_text()
    board = json.loads(original)
    board["entries"][1]["runs"][1]["test"]["auc"] += 0.001  # one number changed by hand
    board["entries"][1]["test"]["auc"]["ci95"][0] -= 0.01
    write_json(path, board)
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "runs[1].test.auc: stored" in captured.out and "test.auc.ci95[0]" in captured.out and "2 differences" in captured.err
    path.write_text(original)
    other = tmp_path / "other"
    other.mkdir()
    write_synthetic(get_task("breastmnist"), other, seed=1)  # another file: other labels, another MD5
    assert main(args[:5] + [str(other), "--no-verify"]) == 2
    out = capsys.readouterr().out
    assert "stored test labels are not the test labels" in out and "data file MD5" in out
    assert main(args[:5] + [str(tmp_path / "nowhere"), "--no-verify"]) == 2
    assert "cannot verify 1 entries without the data file" in capsys.readouterr().out


def test_fixed_architecture_rule(tmp_path: Path) -> None:
    config = {"lr": 1e-3, "epochs": 100, "batch_size": 128, "as_rgb": False, "weight_decay": 0.0}
    runs = [
        fake_run(tmp_path / "runs", method="scratch", config=config),
        fake_run(tmp_path / "runs", method="pre", config={**config, "pretrained": True}),
        fake_run(tmp_path / "runs", method="other", architecture="resnet18_3d"),
    ]
    lb.add_runs("breastmnist", runs, tmp_path / "lb")
    rule = {e["method"]: e["fixed_architecture"] for e in lb.read_board("breastmnist", tmp_path / "lb")["entries"] if not e.get("reference")}
    assert rule == {"scratch": True, "pre": False, "other": False}


def test_bad_runs_are_refused_and_nothing_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "lb"
    good = fake_run(tmp_path / "runs", seed=0)
    lb.add_runs("breastmnist", [good], directory)
    before = _files(directory)
    trial = fake_run(tmp_path / "runs", seed=1, evaluated=False)
    other_data = fake_run(tmp_path / "runs", seed=2, md5="f" * 32)
    unfinished = tmp_path / "runs" / "unfinished"
    unfinished.mkdir()
    cases = [
        ([trial], "no test evaluation"),
        ([unfinished], "not a finished run"),
        ([good, other_data], "data file MD5"),
        ([other_data], "data file MD5"),
        ([fake_run(tmp_path / "runs", "pneumoniamnist")], "pneumoniamnist"),
    ]
    for run_dirs, message in cases:
        with pytest.raises(BenchError, match=message):
            lb.add_runs("breastmnist", run_dirs, directory)
        assert main(["leaderboard", "add", "--task", "breastmnist", "--leaderboard-dir", str(directory), *map(str, run_dirs)]) == 2
        assert message.split()[0] in capsys.readouterr().err
        assert _files(directory) == before


def test_a_damaged_sidecar_is_detected(tmp_path: Path) -> None:
    lb.add_runs("breastmnist", [fake_run(tmp_path / "runs")], tmp_path / "lb")
    sidecar = next((tmp_path / "lb" / "breastmnist").iterdir())
    data = bytearray(sidecar.read_bytes())
    data[-1] ^= 0xFF
    sidecar.write_bytes(bytes(data))
    with pytest.raises(BenchError, match="SHA-256"):
        ranking.ranking("breastmnist", tmp_path / "lb")


def test_cli_prints_table_markdown_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [fake_run(tmp_path / "runs", seed=s) for s in (0, 1)]
    directory = str(tmp_path / "lb")
    assert main(["leaderboard", "add", *map(str, runs), "--leaderboard-dir", directory]) == 0
    assert "updated ce-" in capsys.readouterr().out
    assert main(["leaderboard", "--leaderboard-dir", directory, "--format", "json"]) == 0
    rankings = json.loads(capsys.readouterr().out)
    assert list(rankings) == ["breastmnist"] and "seed-averaged logits" in rankings["breastmnist"]["comparison"]
    assert "medmnist-v2" in [r["id"] for r in rankings["breastmnist"]["groups"][0]["rows"]]
    assert main(["leaderboard", "--leaderboard-dir", directory, "--format", "md", "--task", "breastmnist"]) == 0
    out = capsys.readouterr().out
    assert "| # | entry |" in out and "medmnist-v2 (reference)" in out
    assert main(["leaderboard", "--leaderboard-dir", directory]) == 0
    assert "(CE baseline)" in capsys.readouterr().out
    assert main(["leaderboard", "--task", "mnist", "--leaderboard-dir", directory]) == 2


def test_init_writes_every_task_with_its_reference_row_and_keeps_entries(tmp_path: Path) -> None:
    lb.add_runs("breastmnist", [fake_run(tmp_path / "runs")], tmp_path / "lb")
    assert main(["leaderboard", "init", "--leaderboard-dir", str(tmp_path / "lb")]) == 0
    for flag in TASKS:
        board = lb.read_board(flag, tmp_path / "lb")
        assert board["entries"][0]["test"]["auc"]["mean"] == get_task(flag).reference["auc"]
    assert len(lb.read_board("breastmnist", tmp_path / "lb")["entries"]) == 2


def test_runs_trained_by_bench_run_enter_the_leaderboard(synthetic_root: Path, tmp_path: Path) -> None:
    dirs = []
    for seed in (0, 1):
        result, run_dir = run(RunSpec(task="breastmnist", method="ce", seed=seed, overrides={"epochs": 1}, data_root=str(synthetic_root), runs_root=str(tmp_path / "runs"), device="cpu", verify_md5=False))
        dirs.append(run_dir)
    lb.add_runs("breastmnist", dirs, tmp_path / "lb", source="compare")
    (entry,) = [e for e in lb.read_board("breastmnist", tmp_path / "lb")["entries"] if not e.get("reference")]
    assert entry["seeds"] == [0, 1] and entry["sources"] == ["compare"]
    assert entry["config"]["epochs"] == 1 and "seed" not in entry["config"]
    for record, run_dir in zip(entry["runs"], dirs):
        result = json.loads((run_dir / "result.json").read_text())
        assert record["test"]["auc"] == result["test"]["auc"]
        assert record["run_id"] == run_dir.name
        # the run's own val-threshold metrics (runner) equal the leaderboard's (from the stored validation predictions)
        assert record["test"]["acc_at_val_threshold"] == pytest.approx(result["test"]["acc_at_val_threshold"])
        assert record["val_threshold"] == pytest.approx(result["val_threshold"])
        # the recorded command trains this configuration again: parsed as the CLI parses it, it resolves to the same config
        from benchmark.config import parse_assignments, resolve
        from benchmark.methods import METHODS

        words = shlex.split(record["command"])
        assert words[:8] == ["bench", "run", "--task", "breastmnist", "--method", "ce", "--seed", str(record["seed"])]
        sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
        overrides = {**parse_assignments(sets), "epochs": words[words.index("--epochs") + 1]}
        assert resolve(get_task("breastmnist"), METHODS.get("ce"), overrides) == entry["config"]
        # runs record the precision they resolved to, so the command names it and needs no device
        assert "precision=fp32" in sets and "--device" not in words and str(tmp_path) not in record["command"]
    assert entry["budget"] == {"epochs": 1, "precision": "fp32", "hyperparameters": "defaults"}


# --- the committed leaderboards ---------------------------------------------------------------


@pytest.mark.parametrize("flag", TASKS.names())
def test_committed_leaderboard_files_are_consistent(flag: str) -> None:
    path = REPO / "leaderboards" / f"{flag}.json"
    assert path.is_file(), f"leaderboards/{flag}.json is missing"
    text = path.read_text()
    board = json.loads(text)
    assert text == json.dumps(board, sort_keys=True, indent=2) + "\n"
    assert board["schema_version"] == lb.SCHEMA_VERSION and board["task"] == flag
    assert board["entries"][0] == lb.reference_rows(get_task(flag))[0]
    for entry in board["entries"][1:]:
        labels, logits, seeds = lb.read_predictions(entry, REPO / "leaderboards")
        assert seeds == entry["seeds"]
        for record, seed_logits in zip(entry["runs"], logits):
            assert record["test"]["auc"] == pytest.approx(metrics.auc(labels, metrics.sigmoid(seed_logits)), abs=1e-12)
        assert entry["test"]["auc"]["ci95"] == pytest.approx(list(metrics.auc_mean_ci(labels, logits)), abs=1e-12)
        assert "precision" in entry["budget"] and (not entry.get("superseded") or isinstance(entry["superseded"], str))


@pytest.mark.realdata
def test_committed_leaderboards_verify_against_the_real_files(real_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["leaderboard", "verify", "--leaderboard-dir", str(REPO / "leaderboards"), "--data-root", str(real_root)]) == 0, capsys.readouterr().out
