"""The report's robustness figure and table: AUC against severity per corruption family and method, clean vs corrupted.

Drawn from the robustness blocks (`bench robustness --leaderboard`) stored on the selected
leaderboard entries' seeds; the drawing itself is `benchmark/robustness_report.py`.
"""

from __future__ import annotations

from ..tasks import get_task
from .context import Loaded, Section


def section(d: Loaded) -> Section:
    """Return the robustness section: one figure per task with blocks, and the clean vs corrupted table (tables/robustness.md)."""
    from .. import robustness_report as rr

    sec = Section(
        "Robustness under corruption",
        "Test AUC on corrupted copies of the test split (MedMNIST-C's corruptions in 2D, MONAI's acquisition "
        "artifacts in 3D), mean over the seeds that carry a robustness block, against severity, per corruption family.",
    )
    by_task: dict[str, dict[str, list]] = {}
    for (task, method), entry in sorted(d.entries.items()):
        record = entry.board_entry or {}
        blocks = [run["robustness"] for run in record.get("runs", []) if run.get("robustness")]
        if blocks:
            by_task.setdefault(task, {})[method] = blocks
    if not by_task:
        sec.notes.append("no selected entry carries a robustness block (run `bench robustness --leaderboard`)")
        return sec
    for task, blocks in by_task.items():
        sec.files += d.save(f"robustness_{task}", rr.severity_figure(get_task(task).title, blocks))
    tables = d.folder.parent / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    (tables / "robustness.md").write_text(rr.markdown_table(rr.clean_vs_corrupted_rows(by_task)) + "\n")
    sec.notes.append("clean vs corrupted AUC per task and method: [tables/robustness.md](tables/robustness.md)")
    return sec
