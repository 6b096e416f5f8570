"""The web UI's PACS panel (``m3 serve --dicomweb URL``): browse, open, store back.

* **Search** studies on the DICOMweb server by patient ID, study date and
  modality (QIDO-RS); every image series of the matching studies is offered
  in a list (``patient  date  modality  'study' / 'series' (N images)``).
* **Open** a series: it is retrieved into the instance cache (WADO-RS,
  :mod:`medm3.dicomweb.fetch`), zipped and ingested like an upload, so the
  same checks and the same de-identification apply (with ``--deid``, the
  default, the model never sees the original headers).
* **Store results in PACS**: the latest segmentation of the conversation
  (its saved label map, on the grid of the scan) is written back to the
  source study as DICOM-SEG + SR (:func:`medm3.dicomweb.store.store_result`),
  with the last question and answer and the served model's name, against
  the *original* series (re-read from the cache, not the de-identified copy).

The panel's handlers are plain methods (:class:`PacsHandlers`), testable
without a browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.errors import InputError
from medm3.serve.errors import APIError
from medm3.serve.gradio_import import gr

if TYPE_CHECKING:  # pragma: no cover
    from medm3.serve.service import Service


class PacsHandlers:
    """Search, open and store handlers bound to one server's DICOMweb root."""

    def __init__(self, svc: Service, root_reference: str) -> None:
        from medm3.dicomweb.url import parse_reference

        self.svc = svc
        self.root = parse_reference(root_reference, need_study=False).root
        #: file id of an opened series -> its DICOMweb series reference.
        self.opened: dict[str, str] = {}

    def search(self, patient: str, date: str, modality: str) -> list[tuple[str, str]]:
        """``(label, series reference)`` of every image series of the matching studies.

        Raises:
            InputError: The server cannot be searched (one line, shown in the UI).
        """
        from medm3.dicomweb.client import connect
        from medm3.dicomweb.query import search_series, search_studies, text
        from medm3.imaging.readers.dicom_pixels import NON_IMAGE_MODALITIES

        client = connect(self.root)
        studies = search_studies(
            client,
            patient_id=(patient or "").strip() or None,
            modality=(modality or "").strip() or None,
            study_date=(date or "").strip() or None,
        )
        out = []
        for study in studies:
            uid = text(study, "StudyInstanceUID")
            head = f"{text(study, 'PatientID') or '-'}  {text(study, 'StudyDate') or '-'}"
            desc = text(study, "StudyDescription")
            for series in search_series(client, uid):
                kind = text(series, "Modality")
                if kind.upper() in NON_IMAGE_MODALITIES:
                    continue
                n = series.get("NumberOfSeriesRelatedInstances") or "?"
                label = (
                    f"{head}  {kind}  '{desc}' / '{text(series, 'SeriesDescription')}' ({n} images)"
                )
                ref = (
                    f"dicomweb+{self.root}/studies/{uid}/series/{text(series, 'SeriesInstanceUID')}"
                )
                out.append((label, ref))
        return out

    def open_series(self, reference: str) -> str:
        """Retrieve a series, ingest it as a scan (checks + de-identification); its file id.

        The same path as ``POST /v1/files`` with a ``dicomweb`` reference
        (:meth:`~medm3.serve.files.FileStore.ingest_reference`).
        """
        rec = self.svc.files.ingest_reference(reference, None, "ui", root=self.root)
        self.opened[rec.id] = reference
        return rec.id

    def store(self, file_id: str | None, session_id: str | None, owner: str | None = None) -> str:
        """Store the conversation's latest segmentation (+ measurements, Q/A) in the PACS.

        Returns:
            A one-line Markdown status.

        Raises:
            InputError: No PACS scan, no segmentation yet, or the store failed.
        """
        from medm3.dicomweb.store import store_result
        from medm3.imaging.io import load_image
        from medm3.serve import memory

        reference = self.opened.get(file_id or "")
        if reference is None:
            raise InputError("open a series from the PACS first (results go back to its study)")
        if not session_id or not self.svc.check_owner(session_id, owner):
            raise InputError("ask a question first: there is no result to store")
        messages = self.svc.store.messages(session_id)
        question = next((m.content for m in reversed(messages) if m.role == "user"), None)
        answer = next((m.content for m in reversed(messages) if m.role == "assistant"), None)
        folders: list[Path] = []
        for m in messages:
            for rel in m.files:
                folder = (self.svc.root / rel).parent
                if folder not in folders and any(folder.glob("*_labels.nii.gz")):
                    folders.append(folder)
        if not folders:
            raise InputError("no segmentation in this conversation yet: nothing to store")
        result = memory.load_result(folders[-1])
        image = load_image(reference)  # the original series, from the cache
        if result.label_map is not None:  # same grid; place it on the original image
            result.label_map = image.with_array(result.label_map.array, modality="OT")
        stored = store_result(
            result, image, vlm=self.svc.model_id, question=question, answer=answer
        )
        kinds = ", ".join(f"{o.kind.upper()} {o.sop_instance_uid}" for o in stored)
        return f"Stored in the PACS study: {kinds}"


def _fail(exc: BaseException) -> Any:
    if isinstance(exc, (InputError, APIError)):
        return gr.Error(exc.message if isinstance(exc, APIError) else str(exc))
    return gr.Error(f"{type(exc).__name__}: {exc}")


def add_pacs_panel(
    svc: Service,
    handlers: Any,
    opened: list[Any],
    file_id: Any,
    session_id: Any,
    plane: Any,
    window: Any,
) -> PacsHandlers:
    """Add the PACS accordion to the UI being built (inside its ``gr.Blocks``).

    Args:
        svc: The service.
        handlers: The UI's scan handlers (``_opened`` shows a scan).
        opened: The outputs that showing a scan updates.
        file_id: State holding the current scan's file id.
        session_id: State holding the conversation id.
        plane: The plane control.
        window: The window control.

    Returns:
        The panel's handlers.
    """
    pacs = PacsHandlers(svc, str(svc.settings.dicomweb))

    def search(patient: str, date: str, modality: str) -> Any:
        try:
            found = pacs.search(patient, date, modality)
        except Exception as exc:
            raise _fail(exc) from None
        return gr.update(choices=found, value=found[0][1] if found else None)

    def open_series(reference: str | None, plane_value: str, window_value: str) -> Any:
        if not reference:
            raise _fail(InputError("search and choose a series first"))
        try:
            fid = pacs.open_series(reference)
            return handlers._opened(fid, plane_value, window_value)
        except Exception as exc:
            raise _fail(exc) from None

    def store(fid: str | None, sid: str | None, request: gr.Request) -> str:
        try:
            return pacs.store(fid, sid, handlers.owner(request))
        except Exception as exc:
            raise _fail(exc) from None

    with gr.Accordion(f"PACS (DICOMweb: {pacs.root})", open=True, elem_id="m3-pacs"):
        with gr.Row():
            patient = gr.Textbox(
                label="Patient ID", placeholder="* for all", elem_id="m3-pacs-patient"
            )
            date = gr.Textbox(label="Study date", placeholder="YYYYMMDD[-YYYYMMDD]")
            modality = gr.Textbox(label="Modality", placeholder="CT, MR, CR ...")
            find = gr.Button("Search", size="sm")
        series = gr.Dropdown(choices=[], label="Series", elem_id="m3-pacs-series")
        with gr.Row():
            load = gr.Button("Open series", size="sm", elem_id="m3-pacs-open")
            save = gr.Button("Store results in PACS", size="sm", elem_id="m3-pacs-store")
        status = gr.Markdown("", elem_id="m3-pacs-status")
    find.click(search, [patient, date, modality], series)
    load.click(open_series, [series, plane, window], opened)
    save.click(store, [file_id, session_id], status)
    return pacs
