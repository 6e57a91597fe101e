"""Deferred imports of the heavy libraries (torch, torchvision, MONAI, scikit-learn).

`torch = lazy_import("torch", globals())` binds a stand-in that imports the real module on
its first attribute access and then puts the real module in its place in the importing
module's namespace, so from then on that module's code uses torch itself, at no cost per
access. The modules that declare hyperparameters, presets and methods use torch only inside
their functions; with their imports deferred, the commands that print those tables
(`bench methods`, `bench augmentations`, `bench leaderboard`) never load it: importing torch,
MONAI and torchvision takes seconds, printing the tables milliseconds.

It is the pattern of optuna's `_LazyImport` and TensorFlow's `LazyLoader`. Unlike
`importlib.util.LazyLoader` (and the `lazy_loader` package built on it) the stand-in is not
put in `sys.modules`, so `"torch" in sys.modules` still tells whether torch was imported, and
a submodule (`torch.nn.functional`) can be deferred without importing its parent first. What
needs the real object when a module is defined (a base class, a decorator) cannot be
deferred this way; such code lives in modules imported where it is used
(`methods/losses.py`, `methods/optim.py`).
"""

from __future__ import annotations

import importlib
import types
from typing import Any, MutableMapping


class LazyModule(types.ModuleType):
    """A module stand-in: the named module is imported on first use, and every access goes to it."""

    def __init__(self, name: str, namespace: MutableMapping[str, Any]) -> None:
        super().__init__(name)
        object.__setattr__(self, "_lazy", [name, namespace, None])

    def _load(self) -> types.ModuleType:
        """Return the real module; the first call imports it and rebinds the importing module's names to it."""
        state = object.__getattribute__(self, "_lazy")
        if state[2] is None:
            module = importlib.import_module(state[0])
            for key, value in list(state[1].items()):
                if value is self:
                    state[1][key] = module
            state[2] = module
        return state[2]

    def __getattribute__(self, attr: str) -> Any:
        return getattr(object.__getattribute__(self, "_load")(), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        # written through, so a test's monkeypatch of `trainer.metrics.evaluate` patches the module itself, as before
        setattr(object.__getattribute__(self, "_load")(), attr, value)

    def __delattr__(self, attr: str) -> None:
        delattr(object.__getattribute__(self, "_load")(), attr)

    def __dir__(self) -> list[str]:
        return dir(object.__getattribute__(self, "_load")())

    def __repr__(self) -> str:
        return f"<lazy module {object.__getattribute__(self, '_lazy')[0]!r}>"


def lazy_import(name: str, namespace: MutableMapping[str, Any]) -> types.ModuleType:
    """Return a stand-in for module `name`, to be bound in `namespace` (the caller's `globals()`), that imports it on first use."""
    return LazyModule(name, namespace)
