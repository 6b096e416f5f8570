"""``GET /v1/experts`` and ``POST /v1/experts/{name}/run``: the experts, run on uploads."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.errors import MedM3Error
from medm3.serve.errors import bad_request, not_found
from medm3.serve.files import new_id
from medm3.serve.mask import MASK, session_mask
from medm3.serve.outputs import output_file, output_url
from medm3.serve.protocol import ExpertRunRequest, ExpertRunResponse

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.image import MedicalImage
    from medm3.serve.files import FileStore
    from medm3.serve.settings import ServeSettings


def list_experts() -> list[dict[str, Any]]:
    """``describe()`` of every registered expert (a broken plugin is left out)."""
    from medm3.experts.registry import expert_names, get_expert_class

    out = []
    for name in expert_names():
        try:
            out.append({"object": "expert", **get_expert_class(name).describe()})
        except MedM3Error:  # a broken plugin must not break the listing
            continue
    return out


def expert_run_job(
    files: FileStore, settings: ServeSettings, name: str, req: ExpertRunRequest
) -> Callable[[], ExpertRunResponse]:
    """Check an expert run request; return the job that runs it (in a worker).

    Raises:
        APIError: Unknown expert (404), missing/invalid inputs (400/404).
        WeightsNotFoundError: The expert's weights are not installed (503).
    """
    from medm3.errors import InputError
    from medm3.experts.registry import get_expert_class

    try:
        cls = get_expert_class(name)
    except InputError as exc:
        raise not_found(exc.message, code="expert_not_found") from None
    if req.inputs:
        inputs = {k.lower(): v for k, v in req.inputs.items()}
    elif req.file_id:
        inputs = {cls.inputs[0]: req.file_id}
    else:
        raise bad_request("give file_id (or inputs: {name: file_id})", param="file_id")
    for key, file_id in inputs.items():
        files.record(file_id, param=f"inputs.{key}")
    weights = settings.weights.get(cls.name)
    check_weights(cls, weights)
    named_mask = _named_mask(files, inputs, req.labels)

    def job() -> ExpertRunResponse:
        from medm3.experts.base import RunContext
        from medm3.experts.output import save_result
        from medm3.experts.registry import get_expert

        images = {k: files.image(v) for k, v in inputs.items()}
        if named_mask is not None:
            images[MASK] = named_mask
        expert = get_expert(cls.name, device=settings.expert_device, weights=weights)
        context = RunContext(
            plane=req.plane, slice_index=req.slice_index, options=dict(req.options)
        )
        result = expert.run(images, req.args, context=context)
        run_id = new_id("run")
        main = images.get(cls.inputs[0]) or next(iter(images.values()))
        written = save_result(result, files.output_dir(run_id), source_image=main)
        out = [output_file(output_url(files, p), expert=cls.name) for p in written.values()]
        return ExpertRunResponse(
            id=run_id,
            created=int(time.time()),
            expert=cls.name,
            result=json.loads(json.dumps(result.to_dict(), default=str)),
            overlays=[f for f in out if f.kind == "overlay"],
            files=out,
            archive_url=f"/v1/outputs/{run_id}/archive.zip",
        )

    return job


def _named_mask(
    files: FileStore, inputs: dict[str, str], labels: str | None
) -> MedicalImage | None:
    """``inputs.mask`` checked against the scan and named, as in chat (None without a mask).

    Raises:
        APIError: 400 for labels without a mask, a mask without a scan, or a mask
            that is not a label map on the scan's grid.
    """
    if MASK not in inputs:
        if labels is not None:
            raise bad_request("labels names the labels of inputs.mask; give it too", param="labels")
        return None
    scans = [k for k in inputs if k != MASK]
    if len(scans) != 1:
        raise bad_request(
            "inputs.mask goes with one image (the scan it labels)", param="inputs.mask"
        )
    mask, _ = session_mask(files, inputs[scans[0]], inputs[MASK], labels, param="inputs.mask")
    return mask


def check_weights(cls: Any, override: Path | None = None) -> None:
    """Refuse an expert run at once (HTTP 503) when the expert's weights are not in the
    configured folder or the caches, before anything heavy is imported or queued."""
    from medm3.experts.catalogue import WeightsNotFoundError, find_weights, missing_files

    name = getattr(cls, "weights_name", None)
    if not name:
        return
    missing = missing_files(name, override) if override is not None else find_weights(name) is None
    if missing:
        raise WeightsNotFoundError(f"weights for expert '{name}' are not installed")
