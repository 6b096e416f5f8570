"""Training-data builders: public datasets -> LLaVA-style JSON for VILA-M3 fine-tuning.

``m3 data build NAME --source PATH -o OUT`` runs one builder (see
:mod:`medm3.data.registry` for the list); ``m3 data mix CONFIG.yaml -o
OUT.json`` combines built datasets with repeat counts (:mod:`medm3.data.mix`).

* :mod:`medm3.data.base` -- the builder protocol.
* :mod:`medm3.data.engine` -- sharded, resumable, atomic builds; the manifest
  (the staging folder: :mod:`medm3.data.staging`).
* :mod:`medm3.data.records` -- layout messages and source-record fields for builders.
* :mod:`medm3.data.llava` -- the row format, reading and writing.
* :mod:`medm3.data.conversation` -- expert-call conversations, built from
  :mod:`medm3.prompts` and real expert results exactly as the agent builds them;
  :mod:`medm3.data.expert_builder` -- what the volume expert builders share.

Importing this package is light (no numpy, no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medm3.utils.lazy import lazy_getattr

if TYPE_CHECKING:  # pragma: no cover
    from medm3.data.engine import BuildSummary, build_dataset
    from medm3.data.llava import make_row, read_dataset, read_rows
    from medm3.data.registry import BUILDERS, builder_names, get_builder

__all__ = [
    "BUILDERS",
    "BuildSummary",
    "build_dataset",
    "builder_names",
    "get_builder",
    "make_row",
    "read_dataset",
    "read_rows",
]

_LOCATIONS = {
    "BuildSummary": "medm3.data.engine",
    "build_dataset": "medm3.data.engine",
    "make_row": "medm3.data.llava",
    "read_dataset": "medm3.data.llava",
    "read_rows": "medm3.data.llava",
    "BUILDERS": "medm3.data.registry",
    "builder_names": "medm3.data.registry",
    "get_builder": "medm3.data.registry",
}

__getattr__ = lazy_getattr(__name__, _LOCATIONS)
