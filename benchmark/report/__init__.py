"""`bench report`: the technical report's figures and tables, from stored results only.

Reads the run store (result.json, metrics.jsonl, predictions_test.npz of every finished run),
the leaderboards, the Optuna storages and the task data files; never trains. Writes, into one
output folder (built in a staging folder and moved into place when complete):

  figures/<name>.png, figures/<name>.pdf   one pair per figure
  tables/<name>.md, tables/<name>.tex      the main results table and the hyperparameters table
  index.md                                 the study protocol, every figure with a caption, the tables, notes, sources

One module per part: `runs` (the run store), `selection` (what each cell shows), `tables`,
one module per figure family (`curves`, `bars`, `roc`, `data_figures`, `optuna_figures`,
`ablation`), `style` (their shared look), `index` (index.md) and `build` (the whole).
"""

from __future__ import annotations

from .build import FIGURES, build_report
from .context import Loaded, ReportOptions, Section
from .index import MARKER
from .optuna_figures import pruned_points
from .roc import fpr_at_tpr, roc_of
from .runs import Group, Run, group_runs, load_runs, select

__all__ = ["FIGURES", "MARKER", "Group", "Loaded", "ReportOptions", "Run", "Section", "build_report", "fpr_at_tpr", "group_runs", "load_runs", "pruned_points", "roc_of", "select"]
