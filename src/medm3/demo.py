"""The offline demo behind ``m3 demo``: one full expert-calling conversation, no network.

It builds (once, in a cache folder) a tiny random-weight VILA-M3 checkpoint and
a tiny random-weight VISTA3D bundle with :mod:`medm3.testing`, loads the
bundled sample CT (:mod:`medm3.sample_data`) and runs the real agent loop:

1. the real ``vila`` backend renders the prompt (model cards, the CT view)
   and generates; since random weights never write a trigger, its replies are
   forced (:func:`medm3.testing.force_replies`) to ``<VISTA3D(liver)>`` and then
   to a fixed closing sentence;
2. the agent parses the trigger and runs the real VISTA3D expert code
   (resampling, sliding window, label mapping, inversion) on the random weights;
3. the overlay, label map and result JSON are written, and the result goes
   back to the model, which answers.

Everything the models say is meaningless: the weights are random. The demo
shows the machinery, not medicine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEMO_ANSWER", "DEMO_QUESTION", "DEMO_TRIGGER", "DemoRun", "prepare_models", "run_demo"]

DEMO_QUESTION = "Segment the liver and tell me what you see."
DEMO_TRIGGER = "<VISTA3D(liver)>"
DEMO_ANSWER = (
    "[demo answer, forced: the models have random weights] VISTA3D ran on the full CT; "
    "its liver mask is in the overlay. With random weights it marks random voxels."
)
BANNER = "RANDOM WEIGHTS - MEANINGLESS ANSWERS (this demo shows the machinery, not medicine)"

#: Patch size of the demo VISTA3D bundle (one window over the sample CT at 3 mm).
DEMO_VISTA3D_ROI = (128, 112, 32)

#: Bump when the demo models' layout changes, so old caches are rebuilt.
_DEMO_MODELS_VERSION = "2"


@dataclass
class DemoRun:
    """What :func:`run_demo` did.

    Attributes:
        answer: The final answer.
        trace: The conversation's trace steps.
        files: Files written (overlay, label map, result JSON).
        overlays: The overlay PNGs among ``files``.
        output_dir: Where they are.
        models: ``{"vila": folder, "vista3d": folder}`` of the random-weight models.
    """

    answer: str
    trace: list[dict[str, Any]]
    files: list[str]
    overlays: list[str]
    output_dir: Path
    models: dict[str, Path] = field(default_factory=dict)


def default_cache() -> Path:
    """``<medm3 cache>/demo`` (``$MEDM3_CACHE`` or ``~/.cache/medm3``)."""
    from medm3.experts.catalogue import cache_root

    return cache_root() / "demo"


def _build_once(folder: Path, build: Callable[[Path], Any]) -> Path:
    """Build into a temporary sibling and move it into place (reused when complete)."""
    stamp = folder / ".medm3-demo.json"
    if stamp.is_file():
        with contextlib.suppress(ValueError, OSError):
            if json.loads(stamp.read_text()).get("version") == _DEMO_MODELS_VERSION:
                return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build(tmp)
        (tmp / ".medm3-demo.json").write_text(
            json.dumps({"version": _DEMO_MODELS_VERSION, "weights": "random"})
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def prepare_models(cache: Path) -> dict[str, Path]:
    """Build (or reuse) the tiny random-weight VILA-M3 and VISTA3D under ``cache``.

    Returns:
        ``{"vila": checkpoint folder, "vista3d": bundle folder}``.
    """
    from medm3.testing.experts import write_vista3d_bundle
    from medm3.testing.tiny_vila import build_tiny_vila

    def vista3d(folder: Path) -> Path:
        # 3 mm and one 128x112x32 window cover the sample CT in about a second on a
        # CPU; the released bundle resamples to 1.5 mm with 128^3 windows.
        return write_vista3d_bundle(folder, roi=DEMO_VISTA3D_ROI, spacing=(3.0, 3.0, 3.0))

    return {
        "vila": _build_once(cache / "vila-m3-tiny-random", build_tiny_vila),
        "vista3d": _build_once(cache / "vista3d-tiny-random", vista3d),
    }


def _quiet_libraries() -> None:
    """Hide third-party progress bars and deprecation chatter that would bury the trace."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\..*")
    with contextlib.suppress(Exception):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def run_demo(
    output_dir: Path,
    *,
    cache: Path | None = None,
    device: str = "cpu",
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> DemoRun:
    """Run the demo conversation on the bundled sample CT.

    Args:
        output_dir: Folder for the overlay, label map and result JSON (replaced).
        cache: Folder for the random-weight models (default :func:`default_cache`).
        device: Device for the VLM and the expert.
        on_event: Called with each trace step as it happens.

    Returns:
        What was done, with the trace.
    """
    from medm3.agent import AgentConfig, ChatSession
    from medm3.imaging.io import load_image
    from medm3.sample_data import sample_ct
    from medm3.testing.forced import force_replies
    from medm3.vlm.base import GenerationConfig
    from medm3.vlm.vila.backend import VilaBackend

    _quiet_libraries()
    models = prepare_models(cache or default_cache())
    image = load_image(sample_ct())
    vlm = VilaBackend(str(models["vila"]), device=device)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    config = AgentConfig(
        experts=("vista3d",),
        weights={"vista3d": models["vista3d"]},
        device=device,
        generation=GenerationConfig(max_new_tokens=256),
        output_dir=output_dir,
        use_cache=False,
    )
    session = ChatSession(vlm, image, config, on_event=on_event)
    with force_replies(vlm, [DEMO_TRIGGER, DEMO_ANSWER]):
        reply = session.ask(DEMO_QUESTION)
    overlays = [f for f in reply.files if f.endswith(".png")]
    return DemoRun(reply.text, reply.trace, reply.files, overlays, output_dir, models)
