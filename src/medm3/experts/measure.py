"""The ``measure`` expert: volumes, sizes, intensities and lesion counts of segmented structures.

It needs no weights. The label map comes from the ``mask`` input or, when no
mask is given, from the latest earlier result with a label map in
``RunContext.previous`` (segment, then measure). Label names come from that
result, else from ``RunContext.options["label_names"]`` (``{id: name}``), else
from ``mask.metadata["label_names"]``, else ``"label N"``.

Per structure (one dict in ``ExpertResult.measurements``, keys below):

* ``label``, ``name``, ``color`` (colour name in the overlay);
* ``voxels`` and ``volume_ml`` (voxel count x voxel volume, spacing product);
* ``extent_rl_mm``, ``extent_ap_mm``, ``extent_si_mm``: size of the voxel
  bounding box along the array axes, which are R-L, A-P and S-I for RAS+
  volumes (voxel edges included: a single voxel is one spacing long);
* ``max_axial_diameter_mm`` and ``max_axial_diameter_slice``: the largest
  in-plane (Feret) diameter over the axial slices, measured on the region's
  outline (midpoints of the edges between structure and background pixels,
  so one pixel measures one pixel), using the pixel spacing;
* ``mean_intensity``, ``std_intensity`` and ``intensity_unit`` (``"HU"`` for
  CT, ``""`` otherwise);
* ``components`` and ``largest_component_ml``: connected components with
  26-connectivity (voxels touching by a face, an edge or a corner belong to
  the same component; :data:`CONNECTIVITY`);
* ``component_list``: the largest components (at most
  :data:`MAX_COMPONENTS_LISTED`), each with ``voxels``, ``volume_ml``,
  ``max_axial_diameter_mm`` and ``max_axial_diameter_slice``; the structure's
  ``max_axial_diameter_mm`` is the largest of these, so a diameter never spans
  two separate pieces;
* ``touches_boundary``: the volume faces the structure touches (``R``, ``L``,
  ``A``, ``P``, ``S``, ``I`` for RAS+ volumes); when not empty the structure
  may continue outside the scan and its volume and extents are lower bounds
  (the result text says so).

Structure names match ignoring case, ``_``, spacing and word order
("right kidney" finds ``kidney_right``). The overlays show each requested
structure (up to :data:`MAX_OVERLAYS`) on its own slice of largest diameter,
with a legend.

A requested structure that is known but has no voxels gets ``voxels = 0``
(text: "not present") and ``None`` for the size fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medm3 import prompts
from medm3.errors import InputError
from medm3.experts.base import Expert, ExpertError, ExpertResult, Overlay, RunContext
from medm3.experts.measure_geometry import component_sizes, require_scipy, touched_faces
from medm3.utils.names import name_key, normalize_name, strip_arg
from medm3.utils.suggest import did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.image import MedicalImage

#: Neighbourhood used to count connected components (3D: faces, edges and corners).
CONNECTIVITY = 26
#: Components listed per structure (largest first).
MAX_COMPONENTS_LISTED = 10
#: Overlays written per call (one per requested structure).
MAX_OVERLAYS = 8
#: Argument meaning "every labelled structure".
ALL = "all"
_ALL_ALIASES = ("", "none", "args", "all", "everything")


class MeasureExpert(Expert):
    """Measure the structures of a label map on its image (no network, no weights)."""

    name = "measure"
    trigger = "MEASURE"
    card_modality = "CT or MRI"
    modalities = ("CT", "MR")
    task = "measurement"
    overview = (
        "measures volume (mL), maximum axial diameter (mm), extent, mean intensity and "
        "number of connected components of the structures segmented by an earlier expert "
        "call; args: 'all' or comma-separated structure names"
    )
    accuracy = "exact computation on the segmentation voxels (as accurate as the segmentation)"
    valid_args = (ALL,)
    open_args = True
    inputs = ("image", "mask")
    weights_name = None
    #: Cheap to compute and depends on earlier results: never cached.
    cache_results = False

    def _setup(self) -> None:
        """Nothing to load."""

    def required_inputs(self) -> tuple[str, ...]:
        """Only the image; the mask may come from an earlier result."""
        return ("image",)

    def parse_args(self, args: str | None) -> str:
        """Normalise ``all`` or a comma-separated list of structure names.

        Names are normalised (:func:`medm3.utils.names.normalize_name`: lower
        case, ``_``/``-`` as spaces, white space collapsed) and duplicates dropped;
        whether they exist is checked against the label map at run time.
        """
        text = strip_arg(args)
        if normalize_name(text) in _ALL_ALIASES:
            return ALL
        names: list[str] = []
        for part in re.split(r"[,;]", text):
            name = normalize_name(part)
            if name and name not in names:
                names.append(name)
        return ", ".join(names) if names else ALL

    def check_inputs(
        self, images: MedicalImage | Sequence[MedicalImage] | Mapping[str, MedicalImage]
    ) -> dict[str, MedicalImage]:
        """Check the image like every expert; the mask is exempt from the modality check.

        Raises:
            ExpertError: Missing/unknown inputs, wrong modality, or a 2D image.
        """
        mask = None
        if isinstance(images, Mapping):
            rest = {}
            for key, value in images.items():
                if str(key).lower() == "mask":
                    mask = value
                else:
                    rest[key] = value
            named = super().check_inputs(rest)
        else:
            named = super().check_inputs(images)
        image = named["image"]
        if not image.is_volume:
            raise ExpertError(f"{self.trigger} needs a 3D volume, but {image.source} is 2D")
        if mask is not None:
            named["mask"] = mask
        return named

    def _run(self, inputs: dict[str, MedicalImage], args: str, context: RunContext) -> ExpertResult:
        image = inputs["image"]
        labels, names, source = self._label_map(image, inputs.get("mask"), context)
        structures = select_structures(args, labels, names)
        rows = measure_structures(image, labels, structures)
        overlays = self._overlays(image, labels, rows, names, context)
        return ExpertResult(
            expert=self.name,
            args=args,
            text=prompts.measurement_text(rows) + boundary_note(rows),
            overlays=overlays,
            label_names={r["label"]: r["name"] for r in rows},
            measurements=rows,
            info={
                "label_source": source,
                "connectivity": CONNECTIVITY,
                "voxel_volume_mm3": float(np.prod(image.spacing[:3])),
            },
        )

    # ------------------------------------------------------------- helpers
    def _label_map(
        self, image: MedicalImage, mask: MedicalImage | None, context: RunContext
    ) -> tuple[np.ndarray, dict[int, str], str]:
        from medm3.imaging.overlay import check_mask

        option_names = context.options.get("label_names") or {}
        if mask is not None:
            names = option_names or mask.metadata.get("label_names") or {}
            source, where = "mask", f"mask {mask.source}"
        else:
            previous = next(
                (r for r in reversed(context.previous) if r.label_map is not None), None
            )
            if previous is None:
                raise ExpertError(
                    f"{self.trigger} has no label map to measure: "
                    "run a segmentation expert first or pass a mask"
                )
            mask = previous.label_map
            names = previous.label_names or option_names
            source, where = f"previous:{previous.expert}", f"the {previous.expert} result"
        assert mask is not None
        try:
            labels = check_mask(image, mask)
        except InputError as exc:
            raise ExpertError(f"cannot measure {where}: {exc.message}") from None
        return labels, {int(k): str(v) for k, v in dict(names).items()}, source

    def _overlays(
        self,
        image: MedicalImage,
        labels: np.ndarray,
        rows: list[dict[str, Any]],
        names: Mapping[int, str],
        context: RunContext,
    ) -> list[Overlay]:
        """One overlay per measured structure (its slice of largest diameter), with a legend.

        With ``context.slice_index`` set, or another plane than axial, one
        overlay of all measured structures on that slice instead (default:
        :func:`medm3.experts.views.overlay_slice`, the largest cross-section).
        """
        present = [r for r in rows if r["voxels"]]
        if not present:
            return []
        if context.slice_index is not None or context.plane != "axial":
            index = context.slice_index
            if index is None:  # the rule every segmentation overlay follows
                from medm3.experts.views import overlay_slice

                index = overlay_slice(labels, context.plane, ids=[r["label"] for r in present])
            return [self._overlay(image, labels, present, names, context, index)]
        return [
            self._overlay(image, labels, [row], names, context, row["max_axial_diameter_slice"])
            for row in present[:MAX_OVERLAYS]
        ]

    def _overlay(
        self,
        image: MedicalImage,
        labels: np.ndarray,
        rows: list[dict[str, Any]],
        names: Mapping[int, str],
        context: RunContext,
        index: int | None,
    ) -> Overlay:
        from medm3.imaging.labels import label_name
        from medm3.imaging.render import render_slice

        ids = [r["label"] for r in rows]
        shown = np.where(np.isin(labels, ids), labels, 0)
        legend_names = {i: f"{i}: {label_name(names, i)}" for i in ids}
        try:
            picture = render_slice(
                image, plane=context.plane, index=index, mask=shown, label_names=legend_names
            )
        except InputError as exc:
            raise ExpertError(f"cannot render the overlay: {exc.message}") from None
        meta = picture.info.get("medm3", {})
        plane, idx = meta.get("plane", context.plane), meta.get("index", index)
        in_slice = [label_name(names, i) for i in meta.get("labels_in_slice", [])]
        caption = f"{plane} slice {idx}: " + (", ".join(in_slice) or "no measured structure")
        suffix = f"_{_slug(rows[0]['name'])}" if len(rows) == 1 else ""
        return Overlay(
            name=f"measure_{plane}_{idx}{suffix}",
            image=picture,
            plane=plane,
            slice_index=idx,
            caption=caption,
        )


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")[:40] or "structure"


def select_structures(
    args: str, labels: np.ndarray, names: Mapping[int, str]
) -> list[tuple[int, str]]:
    """The ``(label id, name)`` pairs an argument string asks for.

    ``all`` selects every label present. Otherwise each comma-separated name
    matches a label name (case, ``_`` and spacing ignored) or a label id;
    failing that, every name containing it (``kidney`` -> ``kidney left``,
    ``kidney right``).

    Args:
        args: Normalised argument string (see :meth:`MeasureExpert.parse_args`).
        labels: The label map.
        names: Label id -> name.

    Returns:
        Selected pairs, in the order asked for (``all``: by id).

    Raises:
        ExpertError: A name matches nothing; the message suggests close names.
    """
    from medm3.imaging.labels import label_name

    present = [int(i) for i in np.unique(labels) if i > 0]
    if args == ALL:
        return [(i, label_name(names, i)) for i in present]
    known = {i: label_name(names, i) for i in sorted(set(names) | set(present))}
    by_name = {normalize_name(n): i for i, n in known.items()}
    by_key = {name_key(n): i for i, n in known.items()}
    selected: list[tuple[int, str]] = []
    for query in (q.strip() for q in args.split(",")):
        key = normalize_name(query)
        words = set(key.split())
        if key in by_name:
            ids = [by_name[key]]
        elif name_key(key) in by_key:
            ids = [by_key[name_key(key)]]
        elif key.isdigit() and int(key) in known:
            ids = [int(key)]
        else:  # every name holding all the words asked for ("kidney": left and right)
            ids = [i for n, i in by_name.items() if words and words <= set(n.split())]
            if not ids:
                ids = [i for n, i in by_name.items() if key and key in n]
        if not ids:
            hint = did_you_mean(key, by_name)
            hint = f" {hint}" if hint else ""
            listed = ", ".join(normalize_name(known[i]) for i in present[:20])
            more = f" ... ({len(present)} in all)" if len(present) > 20 else ""
            raise ExpertError(
                f"no structure named {query!r} in the label map.{hint} "
                f"Structures present: {listed or 'none'}{more}"
            )
        selected.extend((i, known[i]) for i in ids if i not in [s[0] for s in selected])
    return selected


def measure_structures(
    image: MedicalImage, labels: np.ndarray, structures: Sequence[tuple[int, str]]
) -> list[dict[str, Any]]:
    """Measure structures of a label map on its image (see the module docstring for keys).

    Args:
        image: The volume (intensities; multi-channel volumes use channel 0).
        labels: Integer label map on the image grid.
        structures: ``(label id, name)`` pairs to measure.

    Returns:
        One dict per structure, in the given order.
    """
    from medm3.imaging.overlay import label_color_name

    ndimage = require_scipy().ndimage

    spacing = tuple(float(s) for s in image.spacing[:3])
    voxel_ml = float(np.prod(spacing)) / 1000.0
    values = image.array if image.channels == 1 else image.array[..., 0]
    unit = "HU" if image.modality == "CT" else ""
    max_id = max((i for i, _ in structures), default=0)
    boxes = ndimage.find_objects(labels, max_label=max_id) if max_id else []
    structure = ndimage.generate_binary_structure(3, 3)  # 26-connectivity
    rows: list[dict[str, Any]] = []
    for label_id, name in structures:
        box = boxes[label_id - 1] if 0 < label_id <= len(boxes) else None
        row: dict[str, Any] = {
            "label": int(label_id),
            "name": name,
            "color": label_color_name(label_id),
            "voxels": 0,
            "volume_ml": 0.0,
            "extent_rl_mm": None,
            "extent_ap_mm": None,
            "extent_si_mm": None,
            "max_axial_diameter_mm": None,
            "max_axial_diameter_slice": None,
            "mean_intensity": None,
            "std_intensity": None,
            "intensity_unit": unit,
            "components": 0,
            "largest_component_ml": 0.0,
            "component_list": [],
            "touches_boundary": [],
        }
        if box is not None:
            region = labels[box] == label_id
            count = int(region.sum())
            components, n_components = ndimage.label(region, structure=structure)
            sizes = np.bincount(components.ravel())[1:]
            inside = values[box][region].astype(np.float64)
            pieces = component_sizes(components, sizes, spacing, voxel_ml, box[2].start)
            best = max(pieces, key=lambda c: c["max_axial_diameter_mm"], default=None)
            diameter = best["max_axial_diameter_mm"] if best else 0.0
            z = best["max_axial_diameter_slice"] - box[2].start if best else None
            row.update(
                component_list=pieces[:MAX_COMPONENTS_LISTED],
                touches_boundary=touched_faces(box, labels.shape),
            )
            row.update(
                voxels=count,
                volume_ml=count * voxel_ml,
                extent_rl_mm=(box[0].stop - box[0].start) * spacing[0],
                extent_ap_mm=(box[1].stop - box[1].start) * spacing[1],
                extent_si_mm=(box[2].stop - box[2].start) * spacing[2],
                max_axial_diameter_mm=diameter,
                max_axial_diameter_slice=None if z is None else int(z + box[2].start),
                mean_intensity=float(inside.mean()),
                std_intensity=float(inside.std()),
                components=int(n_components),
                largest_component_ml=float(sizes.max()) * voxel_ml if sizes.size else 0.0,
            )
        rows.append(row)
    return rows


def boundary_note(rows: Sequence[Mapping[str, Any]]) -> str:
    """A sentence naming the structures that touch the volume boundary (else ``""``)."""
    hits = [
        f"{r['name']} ({'/'.join(r['touches_boundary'])})"
        for r in rows
        if r.get("touches_boundary")
    ]
    if not hits:
        return ""
    return (
        f" Warning: {', '.join(hits)} touch the edge of the scan, so they may continue "
        "outside it; their volumes and sizes are lower bounds."
    )
