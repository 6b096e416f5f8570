"""Supervised fine-tuning (``m3 train``) of VILA-M3 and transformers VLMs on LLaVA JSON.

Importing this package is cheap; torch, transformers, accelerate and peft are
imported when a run starts. Entry points:

- :func:`medm3.train.config.load_config`: YAML + ``--set`` overrides -> :class:`Config`.
- :func:`medm3.train.trainer.train`: run it (checkpoints, resume, export).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medm3.utils.lazy import lazy_getattr

__all__ = ["Config", "TrainResult", "load_config", "train"]

_HOMES = {
    "Config": "medm3.train.config",
    "load_config": "medm3.train.config",
    "train": "medm3.train.trainer",
    "TrainResult": "medm3.train.trainer",
}

if TYPE_CHECKING:  # pragma: no cover
    from medm3.train.config import Config, load_config
    from medm3.train.trainer import TrainResult, train

__getattr__ = lazy_getattr(__name__, _HOMES)
