"""`m3 dicomweb`: browse a DICOMweb server (PACS).

``m3 dicomweb ls URL`` lists the studies on the server (filtered by patient,
modality, date) with their series, or the series of one study. The indices
shown are the ones ``--series`` takes; derived objects (SEG, SR, ...) are
listed without an index since they are never read as images. Credentials
come from the environment or the config file (see docs/pacs.md).
"""

from __future__ import annotations

import json
from typing import Any

import click


def _series_rows(client: Any, study_uid: str, modality: str | None) -> list[dict[str, Any]]:
    from medm3.dicomweb.query import search_series, text
    from medm3.imaging.readers.dicom_pixels import NON_IMAGE_MODALITIES

    rows = []
    index = 0
    for ds in search_series(client, study_uid, modality):
        kind = text(ds, "Modality")
        image = kind.upper() not in NON_IMAGE_MODALITIES
        rows.append(
            {
                "index": index if image else None,
                "series_uid": text(ds, "SeriesInstanceUID"),
                "modality": kind,
                "number": text(ds, "SeriesNumber"),
                "description": text(ds, "SeriesDescription"),
                "instances": int(ds.get("NumberOfSeriesRelatedInstances") or 0),
            }
        )
        index += image
    return rows


def _study_row(ds: Any) -> dict[str, Any]:
    from medm3.dicomweb.query import text

    return {
        "study_uid": text(ds, "StudyInstanceUID"),
        "patient_id": text(ds, "PatientID"),
        "patient_name": text(ds, "PatientName"),
        "date": text(ds, "StudyDate"),
        "description": text(ds, "StudyDescription"),
        "modalities": text(ds, "ModalitiesInStudy"),
    }


def _print(studies: list[dict[str, Any]], root: str) -> None:
    if not studies:
        click.echo("no matching study")
    for study in studies:
        click.echo(
            f"study {study['study_uid']}  patient {study['patient_id'] or '-'}  "
            f"date {study['date'] or '-'}  {study['modalities'] or ''}  "
            f"{study['description']!r}".rstrip()
        )
        click.echo(f"  dicomweb+{root}/studies/{study['study_uid']}")
        for s in study["series"]:
            tag = f"[{s['index']}]" if s["index"] is not None else "[-]"
            n = s["instances"]
            click.echo(
                f"  {tag} {s['series_uid']} {s['modality']} #{s['number'] or '-'} "
                f"{s['description']!r} ({n} instance{'s' * (n != 1)})"
            )


@click.group("dicomweb")
def dicomweb() -> None:
    """Browse a DICOMweb server (PACS); images are read with dicomweb+https://... references."""


@dicomweb.command("ls")
@click.argument("url")
@click.option("--patient", default=None, help="PatientID to match (* and ? wildcards).")
@click.option("--modality", default=None, help="Only studies/series of this modality (CT, MR...).")
@click.option("--date", "study_date", default=None, help="StudyDate YYYYMMDD or YYYYMMDD-YYYYMMDD.")
@click.option("--limit", default=50, show_default=True, help="Most studies listed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(
    url: str,
    patient: str | None,
    modality: str | None,
    study_date: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List the studies (and their series) at URL, or the series of the study URL names.

    URL is dicomweb+https://HOST/ROOT or dicomweb+https://HOST/ROOT/studies/UID.
    """
    from medm3.dicomweb.client import connect
    from medm3.dicomweb.query import search_studies
    from medm3.dicomweb.url import parse_reference

    ref = parse_reference(url, need_study=False)
    client = connect(ref.root)
    if ref.study_uid:
        studies = [{"study_uid": ref.study_uid}]
    else:
        found = search_studies(
            client, patient_id=patient, modality=modality, study_date=study_date, limit=limit
        )
        studies = [_study_row(ds) for ds in found]
    for study in studies:
        study["series"] = _series_rows(
            client, study["study_uid"], modality if ref.study_uid else None
        )
    if as_json:
        click.echo(json.dumps(studies, indent=2))
        return
    if ref.study_uid:
        for key in ("patient_id", "date", "modalities", "description"):
            studies[0].setdefault(key, "")
    _print(studies, ref.root)
