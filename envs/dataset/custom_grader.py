"""A grader the user writes (`env.verifier: module:function` or `path/to/file.py:function`).

It is called as `function(completion, row) -> bool | float` in the trainer's verification
threads, on text the policy wrote: it must treat the completion as data (the project's own
verifiers never evaluate it; code is only run in the sandbox). An exception in it does not fail
the step: `envs.registry.verify_batch` scores that completion 0 and counts it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from envs.dataset.rows import DatasetError


def load_grader(spec: str) -> Callable:
    """The function `spec` names: `pkg.module:function` (imported from `sys.path` and the working
    directory) or `some/file.py:function`."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise DatasetError(f"env.verifier {spec!r}: expected module:function or file.py:function")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise DatasetError(f"env.verifier {spec!r}: no such file {path}")
        mod_spec = importlib.util.spec_from_file_location(f"swarmrl_grader_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise DatasetError(f"env.verifier {spec!r}: cannot import {target!r} ({e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise DatasetError(f"env.verifier {spec!r}: {target} has no function {attr!r}")
    return fn
