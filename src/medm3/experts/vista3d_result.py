"""The VISTA3D result: label map, colour text and the overlay of one slice.

:func:`segmentation_result` turns a label array on the input grid (from the
network, or cut from a cached ``everything`` result) into the
:class:`~medm3.experts.base.ExpertResult` the VLM and the user see: the
trained ``The results are <segmentation>...`` text naming the colour of every
structure found, and one overlay slice (the requested one, else
:func:`medm3.experts.views.overlay_slice`: the largest cross-section of the
tumours found, else of every structure found).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from medm3 import prompts
from medm3.errors import InputError
from medm3.experts import vista3d_labels as labels
from medm3.experts.base import ExpertError, ExpertResult, Overlay, RunContext, label_map_metadata

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.image import MedicalImage


def segmentation_result(
    image: MedicalImage, label_map: np.ndarray, args: str, context: RunContext
) -> ExpertResult:
    """Label map, text, overlay and info from a VISTA3D label array on the input grid.

    Args:
        image: The CT the labels lie on.
        label_map: ``uint8`` VISTA3D label ids on ``image``'s grid.
        args: The normalised argument (shown in the caption).
        context: Plane and slice of the overlay; ``options["legend"]`` draws
            an ``id: name`` legend beside it (default: none, as the VLM sees it).

    Raises:
        ExpertError: A bad plane or slice.
    """
    from medm3.imaging.overlay import label_color_name

    t0 = time.perf_counter()
    found = [int(i) for i in np.unique(label_map) if i > 0]
    names = {i: labels.VISTA3D_LABELS.get(i, f"label {i}") for i in found}
    colours = {i: label_color_name(i) for i in found}
    text = prompts.segmentation_text([(colours[i], names[i]) for i in found])
    mask = image.with_array(label_map, metadata=label_map_metadata("vista3d", image))
    overlay = _overlay(image, mask, found, names, args, context)
    choice = "requested" if context.slice_index is not None else "largest"
    return ExpertResult(
        expert="vista3d",
        args=args,
        text=text,
        overlays=[overlay],
        label_map=mask,
        label_names=names,
        timings={"render": time.perf_counter() - t0},
        info={"colors": {str(i): colours[i] for i in found}, "slice_choice": choice},
    )


def _overlay(
    image: MedicalImage,
    mask: MedicalImage,
    found: list[int],
    names: dict[int, str],
    args: str,
    context: RunContext,
) -> Overlay:
    from medm3.experts.views import overlay_slice
    from medm3.imaging.render import render_slice
    from medm3.imaging.slicing import check_slice, normalize_plane

    try:
        plane = normalize_plane(context.plane or "axial")
        if context.slice_index is not None:
            index = check_slice(context.slice_index, image.spatial_shape, plane)
        else:
            tumours = [i for i in found if i in labels.TUMOR_IDS]
            index = overlay_slice(np.asarray(mask.array), plane, ids=tumours or None)
        picture = render_slice(
            image,
            plane=plane,
            index=index,
            mask=mask,
            label_names={i: f"{i}: {n}" for i, n in names.items()},
            legend=bool((context.options or {}).get("legend", False)),
        )
    except InputError as exc:
        raise ExpertError(exc.message) from None
    return Overlay(
        name=f"overlay_{plane}_{index}",
        image=picture,
        plane=plane,
        slice_index=index,
        caption=f"VISTA3D ({args}): {plane} slice {index}, {len(found)} structures found",
    )
