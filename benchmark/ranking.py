"""The ranking of a task's leaderboard: entries grouped by budget, each group ranked and compared with its own CE baseline.

One comparison, named once: each ranked entry's difference to the baseline is the AUC of its
seed-averaged logits minus the baseline's, on the same test cases, with DeLong's CI of that
difference and DeLong's two-sided p-value of it (binary tasks); the p-values of all comparisons
on a task are also given Holm-adjusted. The rank itself is by the mean of the seeds' test AUCs,
shown with its own analytic CI. Entries of different budgets (epochs, precision) are never
ranked together, and an entry marked `superseded` is listed apart, never ranked nor a baseline.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import metrics
from .budget import Budget, budget_of, protocol_budget
from .leaderboard import DEFAULT_DIR, locked, read_board, read_predictions
from .tasks import get_task

COMPARISON = "AUC of the seed-averaged logits, entry minus baseline, on the same test cases (paired DeLong)"
BASELINE_RULE = (
    "per budget: the `ce` run entry of that budget that is not superseded, preferring default hyperparameters, "
    "then more seeds, then the smallest id (no test number is looked at); at the protocol budget it is the task's baseline"
)


def entry_budget(entry: dict[str, Any]) -> Budget:
    """Return an entry's budget: the one it records, else the one its configuration and its seeds' devices give."""
    stored = entry.get("budget")
    if isinstance(stored, dict) and "precision" in stored:
        return Budget(stored.get("epochs"), str(stored["precision"]))
    return budget_of(entry.get("config") or {}, [r.get("device") for r in entry.get("runs", [])])


def hyperparameters(entry: dict[str, Any]) -> str:
    """Return "defaults", "tuned" or "unknown" as the entry records it (see budget.hyperparameters)."""
    return str((entry.get("budget") or {}).get("hyperparameters", "unknown"))


def is_superseded(entry: dict[str, Any]) -> bool:
    """Return whether the entry carries a `superseded` reason."""
    return bool(entry.get("superseded"))


def baseline_entry(entries: Sequence[dict[str, Any]], budget: Budget) -> dict[str, Any] | None:
    """Return the CE entry the entries of `budget` are compared with (BASELINE_RULE), or None when there is none."""
    ce = [
        e
        for e in entries
        if not e.get("reference") and e.get("kind") == "run" and e.get("method") == "ce" and not is_superseded(e) and entry_budget(e).key == budget.key
    ]
    return min(ce, key=lambda e: (hyperparameters(e) != "defaults", -e["n_seeds"], e["id"])) if ce else None


def _ensemble(entry: dict[str, Any], directory: Path) -> tuple[np.ndarray, np.ndarray]:
    labels, logits, _ = read_predictions(entry, directory)
    return labels, metrics.sigmoid(logits.mean(axis=0))


def _comparison(entry: dict[str, Any], baseline: dict[str, Any], directory: Path, multilabel: bool) -> dict[str, Any] | None:
    """Return the entry's comparison with the baseline (COMPARISON), or None when they were tested on different cases."""
    labels, scores = _ensemble(entry, directory)
    base_labels, base_scores = _ensemble(baseline, directory)
    if labels.shape != base_labels.shape or not np.array_equal(labels, base_labels):
        return None
    out: dict[str, Any] = {"baseline": baseline["id"], "quantity": COMPARISON, "ci95": None, "p_delong": None, "p_holm": None}
    if multilabel:  # DeLong is defined for one binary label; the difference of label-mean AUCs is given alone
        out["auc_entry"], out["auc_baseline"] = metrics.auc(labels, scores), metrics.auc(labels, base_scores)
        out["delta"] = out["auc_entry"] - out["auc_baseline"]
        return out
    result = metrics.delong_test(labels[:, 0], scores[:, 0], base_scores[:, 0])
    out.update(auc_entry=result.auc_a, auc_baseline=result.auc_b, delta=result.auc_a - result.auc_b, ci95=list(metrics.difference_ci(result)), p_delong=result.p_value)
    return out


def _mean(test: dict[str, Any], key: str) -> float | None:
    return (test.get(key) or {}).get("mean")


def _row(entry: dict[str, Any], ref_auc: float | None) -> dict[str, Any]:
    test = entry.get("test", {})
    auc = _mean(test, "auc")
    ci = (test.get("auc") or {}).get("ci95") or [None, None]
    reference = bool(entry.get("reference"))
    budget = entry_budget(entry) if not reference else None
    return {
        "id": entry["id"],
        "kind": entry["kind"],
        "name": entry.get("name") or entry.get("model"),
        "method": entry.get("method", "-"),
        "seeds": entry.get("n_seeds"),
        "budget": None if budget is None else {**budget.as_json(), "hyperparameters": hyperparameters(entry), "label": budget.label()},
        "auc": auc,
        "auc_sd": (test.get("auc") or {}).get("sd"),
        "ci_low": ci[0],
        "ci_high": ci[1],
        "delta_ref": None if auc is None or ref_auc is None or reference else auc - ref_auc,
        "comparison": None,
        "baseline": False,
        "acc": _mean(test, "acc"),
        "acc_at_val_threshold": _mean(test, "acc_at_val_threshold"),
        "balanced_acc_at_val_threshold": _mean(test, "balanced_acc_at_val_threshold"),
        "pauc": _mean(test, "pauc"),
        "fpr_at_95tpr": _mean(test, "fpr_at_95tpr"),
        "fixed_architecture": entry.get("fixed_architecture"),
        "data_md5_verified": entry.get("data_md5_verified", True),
        "superseded": entry.get("superseded") or None,
        **_robust_fields(entry),
    }


def _robust_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """Return robust_auc / robust_drop / robust_seeds: the mean corrupted AUC (`bench robustness`), its relative drop, the seeds with a block."""
    from .robustness_board import summary

    found = summary(entry) if not entry.get("reference") else None
    if found is None:
        return {"robust_auc": None, "robust_drop": None, "robust_seeds": None}
    return {"robust_auc": found["mean_corrupted_auc"]["mean"], "robust_drop": found["relative_drop"]["mean"], "robust_seeds": found["n_seeds"]}


def _sort_key(row: dict[str, Any], key: str = "auc") -> tuple[float, str]:
    auc = row[key]
    return (-(auc if auc is not None and math.isfinite(auc) else -math.inf), row["id"])


def ranking(task: str, directory: str | Path = DEFAULT_DIR, sort: str = "auc") -> dict[str, Any]:
    """Return the task's ranking: {'task', 'protocol_budget', 'comparison', 'baseline_rule', 'groups', 'superseded'}.

    Each group is one budget ({'budget', 'protocol', 'baseline', 'rows'}), the protocol budget first
    (with the MedMNIST reference row), then by epochs and precision; its rows are ranked by mean
    test AUC (best first) and carry their comparison with the group's baseline. Superseded
    entries are listed under 'superseded', unranked, with their reason. `sort="robust"` ranks
    each group by mean corrupted AUC instead (`bench robustness`), entries without a block last.
    """
    key_of = "robust_auc" if sort == "robust" else "auc"
    directory = Path(directory)
    task_obj = get_task(task)
    protocol = protocol_budget(task_obj)
    with locked(task, directory, shared=True):
        board = read_board(task, directory)
        entries = board["entries"]
        reference = next((e for e in entries if e.get("reference")), None)
        ref_auc = reference["test"]["auc"]["mean"] if reference else None
        live = [e for e in entries if not e.get("reference") and not is_superseded(e)]
        budgets = {entry_budget(e).key: entry_budget(e) for e in live}
        budgets.setdefault(protocol.key, protocol)
        groups = []
        for key in sorted(budgets, key=lambda k: (k != protocol.key, k)):
            budget = budgets[key]
            baseline = baseline_entry(live, budget)
            members = [e for e in live if entry_budget(e).key == key]
            rows = []
            for e in members:
                row = _row(e, ref_auc)
                row["baseline"] = e is baseline
                labels, scores = _ensemble(e, directory)  # reads (and checks) every entry's logits, compared or not
                row["auc_seed_ensemble"] = metrics.auc(labels, scores)
                if baseline is not None and e is not baseline:
                    row["comparison"] = _comparison(e, baseline, directory, task_obj.multilabel)
                rows.append(row)
            if key == protocol.key and reference is not None:
                rows.append(_row(reference, ref_auc))
            rows.sort(key=lambda r: _sort_key(r, key_of))
            for i, row in enumerate(rows, 1):
                row["rank"] = i
            groups.append({"budget": {**budget.as_json(), "label": budget.label()}, "protocol": key == protocol.key, "baseline": baseline["id"] if baseline else None, "rows": rows})
        superseded = sorted((_row(e, ref_auc) for e in entries if not e.get("reference") and is_superseded(e)), key=_sort_key)
    compared = [row["comparison"] for g in groups for row in g["rows"] if row["comparison"] and row["comparison"]["p_delong"] is not None]
    for comparison, adjusted in zip(compared, metrics.holm([c["p_delong"] for c in compared])):
        comparison["p_holm"] = adjusted
    return {
        "task": task,
        "protocol_budget": {**protocol.as_json(), "label": protocol.label()},
        "comparison": COMPARISON,
        "baseline_rule": BASELINE_RULE,
        "holm": "p_holm: Holm's step-down adjustment over every comparison with a DeLong p-value on this task",
        "groups": groups,
        "superseded": superseded,
    }


# --- text ---------------------------------------------------------------------------------


def _cell(value: Any, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return str(value)


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def budget_cell(row: dict[str, Any]) -> str:
    """Return a row's budget in a few words: epochs, precision, seeds, defaults or tuned."""
    b = row.get("budget")
    if b is None:
        return "published"
    seeds = row.get("seeds")
    return f"{b['label']}, {seeds} seed{'s' if seeds != 1 else ''}, {b['hyperparameters']}"


def _label(row: dict[str, Any]) -> str:
    label = row["id"] + (" (reference)" if row["kind"] == "reference" else "") + (" (CE baseline)" if row["baseline"] else "")
    if row["kind"] == "submission":
        label += f" [submission{': ' + row['name'] if row['name'] else ''}]"
    if row.get("data_md5_verified") is False:
        label += " [unofficial data]"
    return label


COLUMNS = ["#", "entry", "method", "budget", "test AUC", "95% CI", "vs ref", "ens. AUC vs CE", "95% CI of diff", "p DeLong", "p Holm", "ACC@0.5", "ACC@val", "bal. ACC@val", "pAUC", "FPR@95TPR", "fixed arch"]


def display_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Return (column titles, text cells) of one budget group's rows, for the table and markdown formats."""
    cells = []
    for r in rows:
        c = r["comparison"] or {}
        auc = _cell(r["auc"]) + (f" +/- {_cell(r['auc_sd'])}" if r["auc_sd"] is not None else "")
        ci = f"[{_cell(r['ci_low'])}, {_cell(r['ci_high'])}]" if r["ci_low"] is not None else "-"
        diff_ci = f"[{_cell(c['ci95'][0], signed=True)}, {_cell(c['ci95'][1], signed=True)}]" if c.get("ci95") else "-"
        cells.append(
            [str(r.get("rank", "-")), _label(r), str(r["method"]), budget_cell(r), auc, ci, _cell(r["delta_ref"], signed=True), _cell(c.get("delta"), signed=True), diff_ci,
             _p(c.get("p_delong")), _p(c.get("p_holm")), _cell(r["acc"]), _cell(r["acc_at_val_threshold"]), _cell(r["balanced_acc_at_val_threshold"]), _cell(r["pauc"]), _cell(r["fpr_at_95tpr"]), _cell(r["fixed_architecture"])]
        )
    columns = list(COLUMNS)
    if any(r.get("robust_auc") is not None for r in rows):
        # mean corrupted AUC (bench robustness), over the seeds that carry a block
        columns += ["corrupted AUC", "drop"]
        for r, row in zip(rows, cells):
            seeds = f" ({r['robust_seeds']}/{r['seeds']})" if r.get("robust_seeds") and r["robust_seeds"] != r["seeds"] else ""
            row += [_cell(r.get("robust_auc")) + seeds, "-" if r.get("robust_drop") is None else f"{100 * r['robust_drop']:.1f} %"]
    return columns, cells


def superseded_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Return (column titles, text cells) of the superseded entries: id, method, budget, test AUC and the reason."""
    cells = [[r["id"], str(r["method"]), budget_cell(r), _cell(r["auc"]) + (f" +/- {_cell(r['auc_sd'])}" if r["auc_sd"] is not None else ""), str(r["superseded"])] for r in rows]
    return ["entry", "method", "budget", "test AUC", "superseded because"], cells


def format_table(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """Return an aligned plain-text table."""
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def format_markdown(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """Return a GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in cells]
    return "\n".join(lines)


def group_title(task: str, group: dict[str, Any]) -> str:
    """Return the heading of a budget group: the task, the budget (protocol or not) and the baseline."""
    kind = " (the task's protocol budget)" if group["protocol"] else " (not the protocol budget: compared only within it)"
    base = f"baseline {group['baseline']}" if group["baseline"] else "no CE baseline at this budget"
    return f"{task}: {group['budget']['label']}{kind}; {base}"


FOOTNOTE = (
    "test AUC: mean +/- sd over seeds, the rank; 95% CI: DeLong's analytic interval of that mean over test cases; vs ref: minus the "
    "MedMNIST v2 number; ens. AUC vs CE: the AUC of the entry's seed-averaged logits minus the baseline's, with its DeLong CI and "
    "DeLong p-value (binary tasks only), p Holm: adjusted over the task's comparisons; ACC@0.5: MedMNIST's official accuracy; "
    "ACC@val / bal. ACC@val: accuracy and balanced accuracy at the threshold chosen on the validation split (Youden's J; '-' where "
    "the runs kept no validation predictions). Budgets are never ranked together; superseded entries are listed apart."
)


def render(tasks: Sequence[str], fmt: str = "table", directory: str | Path = DEFAULT_DIR, sort: str = "auc") -> str:
    """Return the rankings of `tasks` (by mean test AUC, or mean corrupted AUC with sort="robust") as aligned tables, markdown, or JSON."""
    rankings = {task: ranking(task, directory, sort) for task in tasks}
    if fmt == "json":
        return json.dumps(rankings, sort_keys=True, indent=2)
    blocks = []
    for task, result in rankings.items():
        parts = []
        for group in result["groups"]:
            columns, cells = display_rows(group["rows"])
            table = format_markdown(columns, cells) if fmt == "md" else format_table(columns, cells)
            parts.append((f"### {group_title(task, group)}\n\n" if fmt == "md" else f"{group_title(task, group)}\n") + table)
        if result["superseded"]:
            columns, cells = superseded_rows(result["superseded"])
            table = format_markdown(columns, cells) if fmt == "md" else format_table(columns, cells)
            parts.append((f"### {task}: superseded entries (not ranked)\n\n" if fmt == "md" else f"{task}: superseded entries (not ranked)\n") + table)
        blocks.append("\n\n".join(parts))
    return "\n\n".join(blocks) + "\n\n" + FOOTNOTE
