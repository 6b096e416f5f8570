"""Evaluation: tasks, reference-exact scorers, a batched resumable runner, reports.

Medical-VQA numbers in the literature are scored in incompatible ways, so every
number medm3 prints names its protocol (``vila-m3`` or ``llava-med``, see
:data:`medm3.eval.tasks.PROTOCOLS`) and the scorers reproduce the reference
scripts, quirks included (documented in each scorer module).

Typical use::

    from medm3.eval import run_eval
    from medm3.vlm.registry import load_backend

    run = run_eval("vqa-rad", load_backend("vila", "MONAI/Llama3-VILA-M3-8B"),
                   "data/vqa_rad/test.json", "runs/vqarad-8b")
    print(run.metrics["accuracy"])

Modules: :mod:`.tasks` (task registry), :mod:`.datasets` (loaders and split
rules), :mod:`.scorers`, :mod:`.runner`, :mod:`.report` and :mod:`.published`.
Importing this package is light; torch and the scorers' dependencies load on use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medm3.utils.lazy import lazy_getattr

__all__ = ["PROTOCOLS", "TASKS", "EvalRun", "Task", "get_task", "run_eval"]

if TYPE_CHECKING:  # pragma: no cover
    from medm3.eval.runner import EvalRun, run_eval
    from medm3.eval.tasks import PROTOCOLS, TASKS, Task, get_task

_HOMES = {
    "EvalRun": "medm3.eval.runner",
    "run_eval": "medm3.eval.runner",
    "PROTOCOLS": "medm3.eval.tasks",
    "TASKS": "medm3.eval.tasks",
    "Task": "medm3.eval.tasks",
    "get_task": "medm3.eval.tasks",
}

__getattr__ = lazy_getattr(__name__, _HOMES)
