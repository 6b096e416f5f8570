"""The web UI: a Gradio app mounted on ``/ui`` of the same server.

Left: upload a scan (or open one already on the server), choose plane, slice
and window, and see the rendered view update live. Right: chat with the
model; expert overlays appear inline in the conversation, the "Behind the
scenes" panel shows the trace of the last question, and the download button
gives a zip of every overlay, label map, result and the trace.

The UI is a client of :class:`~medm3.serve.service.Service` like the HTTP API:
uploads go through the same checks (sniffing, size cap, de-identification),
questions through the same request checks and the same bounded model queue.
With API keys configured, Gradio asks for a login: any user name, the API key
as password; with several keys, the UI's sessions belong to the key that
signed in, as the API's do (:class:`~medm3.serve.auth.UiLogins`).
"""

from __future__ import annotations

import queue
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from medm3.serve.auth import UiLogins
from medm3.serve.errors import APIError
from medm3.serve.gradio_import import gr
from medm3.serve.protocol import LABEL_CHOICES

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

    from medm3.serve.service import Service

#: Window choices offered (names of :mod:`medm3.imaging.windowing`).
WINDOWS = ("auto", "soft_tissue", "lung", "bone", "brain", "percentile", "stored")
PLANES = ("axial", "coronal", "sagittal")
_LIBRARY = "library:"
_SCAN_TYPES = (".nii", ".gz", ".dcm", ".zip", ".png", ".jpg", ".jpeg")


def mount_ui(app: FastAPI, svc: Service, path: str = "/ui") -> None:
    """Mount the UI on ``app`` at ``path`` (Gradio analytics off)."""
    keys = svc.settings.api_keys
    logins = app.state.ui_logins = UiLogins(keys)
    gr.mount_gradio_app(
        app,
        build_ui(svc, logins),
        path=path,
        auth=logins.check if keys else None,
        auth_message="Sign in with any user name and the server's API key as password."
        if keys
        else None,
        allowed_paths=[str(svc.root / "outputs")],
        max_file_size=svc.settings.max_upload_bytes,
        ssr_mode=False,
        footer_links=[],
    )


def _fail(exc: BaseException) -> gr.Error:
    if isinstance(exc, APIError):
        return gr.Error(exc.message)
    return gr.Error(f"{type(exc).__name__}: {exc}")


class _Handlers:
    """The UI's event handlers (plain methods, so they can be tested without a browser)."""

    def __init__(self, svc: Service, logins: UiLogins | None = None) -> None:
        self.svc = svc
        self.logins = logins or UiLogins(svc.settings.api_keys)

    def owner(self, request: gr.Request | None) -> str | None:
        """The key fingerprint a signed-in request acts for (see :class:`UiLogins`)."""
        return self.logins.owner(getattr(request, "username", None))

    # ------------------------------------------------------------- scans
    def choices(self) -> list[tuple[str, str]]:
        """Scans on the server: uploads, then library scans not registered yet."""
        out: list[tuple[str, str]] = []
        registered: set[str] = set()
        for rec in self.svc.store.list_files(200):
            if rec.purpose in ("chat", "mask"):
                continue
            shape = "x".join(str(s) for s in rec.meta.get("shape", []))
            out.append((f"{rec.filename} ({rec.meta.get('modality', '?')} {shape})", rec.id))
            registered.add(rec.path)
        for rel in self.svc.files.library():
            if f"library/{rel}" not in registered:
                out.append((f"library/{rel}", _LIBRARY + rel))
        return out

    def _opened(self, file_id: str, plane: str, window: str) -> tuple[Any, ...]:
        rec = self.svc.files.record(file_id)
        meta = rec.meta
        info = (
            f"**{rec.filename}** - {meta.get('modality', '?')}, "
            f"{'x'.join(str(s) for s in meta.get('shape', []))}, "
            f"spacing {', '.join(f'{s:g}' for s in meta.get('spacing_mm', []))} mm"
            + (" - de-identified" if rec.deidentified else "")
        )
        count = meta.get("slices", {}).get(plane, 1)
        index = count // 2
        slider = gr.update(
            minimum=0, maximum=max(count - 1, 0), value=index, step=1, interactive=count > 1
        )
        view = self.view(file_id, plane, index, window)
        return (
            file_id,
            None,
            info,
            slider,
            view,
            [],
            None,
            None,
            gr.update(choices=self.choices(), value=file_id),
        )

    def upload(self, path: str | None, plane: str, window: str) -> tuple[Any, ...]:
        """A file dropped in the upload box becomes a stored scan, shown at its middle slice."""
        if not path:
            raise _fail(APIError(400, "no file"))
        try:
            rec = self.svc.files.ingest_copy(Path(path), Path(path).name, "ui")
        except Exception as exc:
            raise _fail(exc) from None
        finally:
            # Gradio's copy may hold PHI (DICOM before de-identification): keep only ours.
            Path(path).unlink(missing_ok=True)
        return (*self._opened(rec.id, plane, window), None)

    def open(self, choice: str | None, plane: str, window: str) -> tuple[Any, ...]:
        """A scan picked in the list (a library scan is registered first)."""
        if not choice:
            raise _fail(APIError(400, "choose a scan"))
        try:
            if choice.startswith(_LIBRARY):
                choice = self.svc.files.register_library(choice[len(_LIBRARY) :]).id
            return self._opened(choice, plane, window)
        except Exception as exc:
            raise _fail(exc) from None

    def plane_changed(self, file_id: str | None, plane: str, window: str) -> tuple[Any, Any]:
        """New plane: the slider's range changes and the view jumps to the middle slice."""
        if not file_id:
            return gr.update(), None
        count = self.svc.files.record(file_id).meta.get("slices", {}).get(plane, 1)
        index = count // 2
        return (
            gr.update(maximum=max(count - 1, 0), value=index),
            self.view(file_id, plane, index, window),
        )

    def view(self, file_id: str | None, plane: str, index: float | None, window: str) -> Any:
        """The rendered slice (None without a scan)."""
        if not file_id:
            return None
        from medm3.imaging.render import render_slice

        try:
            image = self.svc.files.image(file_id)
            if not image.is_volume:
                return render_slice(image, window=window, legend=False)
            from medm3.imaging.slicing import num_slices

            count = num_slices(image.spatial_shape, plane)
            i = min(max(int(index or 0), 0), count - 1)
            return render_slice(image, plane=plane, index=i, window=window, legend=False)
        except Exception as exc:
            raise _fail(exc) from None

    # -------------------------------------------------------------- mask
    def upload_mask(self, path: str | None, file_id: str | None, labels: str) -> tuple[Any, ...]:
        """The user's label map for MEASURE: stored through the upload checks, checked
        against the open scan; it starts a new conversation (a session's mask is fixed)."""
        if not path:
            raise _fail(APIError(400, "no file"))
        try:
            if not file_id:
                raise APIError(400, "open the scan the mask labels first")
            rec = self.svc.files.ingest_copy(Path(path), Path(path).name, "mask")
            note = self._mask_note(rec.id, file_id, labels)
        except Exception as exc:
            raise _fail(exc) from None
        finally:
            Path(path).unlink(missing_ok=True)  # Gradio's copy: keep only ours
        return (rec.id, note, None, *self.new_chat())

    def labels_changed(self, mask_id: str | None, file_id: str | None, labels: str) -> Any:
        """Another label table for the mask (a new conversation); nothing without a mask."""
        if not (mask_id and file_id):
            return (gr.update(), *(gr.update() for _ in range(4)))
        try:
            return (self._mask_note(mask_id, file_id, labels), *self.new_chat())
        except Exception as exc:
            raise _fail(exc) from None

    def _mask_note(self, mask_id: str, file_id: str, labels: str) -> str:
        from medm3.serve.mask import session_mask

        _, info = session_mask(self.svc.files, file_id, mask_id, labels)
        name = self.svc.files.record(mask_id).filename
        return f"Mask **{name}**: {info.note}. MEASURE measures it in this conversation."

    @staticmethod
    def no_mask() -> tuple[None, str]:
        """A new scan drops the mask (it labelled the previous one)."""
        return None, ""

    # -------------------------------------------------------------- chat
    def ask(
        self,
        question: str,
        history: list[dict[str, Any]],
        file_id: str | None,
        session_id: str | None,
        plane: str,
        index: float | None,
        window: str,
        mask_id: str | None = None,
        labels: str = "auto",
        request: gr.Request | None = None,
    ) -> Any:
        """Stream the answer into the chat; overlays, trace and archive follow.

        A new conversation carries the scan and, when one was given, the user's mask.
        """
        from medm3.serve.protocol import ChatCompletionRequest
        from medm3.serve.runner import Job

        question = (question or "").strip()
        if not question:
            raise _fail(APIError(400, "type a question"))
        content: list[dict[str, Any]] = [{"type": "text", "text": question}]
        if file_id and not session_id:
            content.append({"type": "file", "file": {"file_id": file_id}})
        options: dict[str, Any] = {"plane": plane, "window": window}
        if file_id and self.svc.files.record(file_id).meta.get("kind") == "volume":
            options["slice_index"] = int(index or 0)
        if file_id and mask_id and not session_id:
            options.update(mask=mask_id, labels=labels)
        try:
            req = ChatCompletionRequest(
                model=self.svc.model_id,
                messages=[{"role": "user", "content": content}],
                session_id=session_id,
                stream=True,
                medm3=options,
            )
            owner = self.owner(request)
            plan = self.svc.plan(req, owner)
        except Exception as exc:
            raise _fail(exc) from None
        history = [*history, {"role": "user", "content": question}]
        answer = {"role": "assistant", "content": ""}
        history.append(answer)
        yield history, session_id or plan.session_id, "", None, None
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        job = Job()
        try:
            self.svc.start_chat(plan, events.put, job)
        except Exception as exc:
            raise _fail(exc) from None
        deadline = time.monotonic() + self.svc.settings.request_timeout_s
        text = ""
        try:
            while True:
                try:
                    kind, payload = events.get(timeout=max(deadline - time.monotonic(), 0.01))
                except queue.Empty:
                    raise _fail(APIError(504, "the answer took too long")) from None
                if kind == "delta":
                    text += payload
                    answer["content"] = text
                    yield history, plan.session_id, "", None, None
                elif kind == "event":
                    text += f"\n\n*[expert {payload.get('trigger', '')} "
                    text += "done]*\n\n" if payload["step"] == "expert" else "rejected]*\n\n"
                    answer["content"] = text
                    yield history, plan.session_id, "", None, None
                elif kind == "error":
                    raise _fail(self.svc.api_error(payload))
                else:
                    yield self._finish(history, answer, payload, owner)
                    return
        finally:
            job.cancel()

    def _finish(
        self, history: list[dict[str, Any]], answer: dict[str, Any], out: Any, owner: str | None
    ) -> Any:
        answer["content"] = out.answer
        for f in out.overlays:
            path = self.svc.root / f.url.removeprefix("/v1/")
            label = f"{(f.expert or 'expert').upper()}: {f.caption or f.name}"
            history.append({"role": "assistant", "content": f"*{label}*"})
            history.append({"role": "assistant", "content": {"path": str(path), "alt_text": label}})
        return history, out.session_id, "", out.trace, self.archive(out.session_id, owner)

    def archive(self, session_id: str | None, owner: str | None = None) -> str | None:
        """A zip of the session's outputs in a temporary folder Gradio may serve
        (None for another key's session)."""
        if not session_id or not self.svc.check_owner(session_id, owner):
            return None
        try:
            built = self.svc.archive(session_id)
        except APIError:
            return None
        dest = self.svc.root / "outputs" / "_ui" / f"{session_id}.zip"  # not an API path
        dest.parent.mkdir(exist_ok=True)
        built.replace(dest)
        return str(dest)

    @staticmethod
    def new_chat() -> tuple[Any, ...]:
        """Forget the conversation (the scan stays)."""
        return [], None, None, None


def build_ui(svc: Service, logins: UiLogins | None = None) -> gr.Blocks:
    """The Gradio Blocks of the UI, bound to ``svc`` (``logins``: who signed in with which key)."""
    h = _Handlers(svc, logins)
    # Gradio's cache (its copies of shown overlays and archives): files older than a day go.
    with gr.Blocks(title="medm3", delete_cache=(3600, 86400), analytics_enabled=False) as ui:
        gr.Markdown(
            f"## medm3 - VILA-M3 with expert models\nModel: `{svc.model_id}`. "
            "Research software, not a medical device."
        )
        w = SimpleNamespace(
            file_id=gr.State(None), session_id=gr.State(None), mask_id=gr.State(None)
        )
        with gr.Row():
            with gr.Column(scale=5):
                _scan_column(w, h)
            with gr.Column(scale=6):
                _chat_column(w)
        _wire(w, h)
        if svc.settings.dicomweb:  # m3 serve --dicomweb URL
            from medm3.serve.ui_pacs import add_pacs_panel

            add_pacs_panel(svc, h, w.opened, w.file_id, w.session_id, w.plane, w.window)
    return ui


def _scan_column(w: SimpleNamespace, h: _Handlers) -> None:
    """The scan side: upload or open a scan, the user's mask, plane, window, slice, view."""
    w.upload = _file_box("Upload a scan (NIfTI, DICOM, DICOM zip, PNG/JPEG)", "m3-upload", 110)
    with gr.Row():
        w.existing = gr.Dropdown(
            choices=h.choices(),
            value=None,
            label="Or open a scan on the server",
            elem_id="m3-existing",
            scale=4,
        )
        w.refresh = gr.Button("Refresh", scale=1, size="sm")
    w.info = gr.Markdown("No scan yet.", elem_id="m3-info")
    with gr.Accordion("Your label mask (optional; MEASURE measures it)", open=False):
        with gr.Row():
            w.mask = _file_box("Label map on the scan's grid", "m3-mask", 90, scale=3)
            w.labels = gr.Dropdown(
                list(LABEL_CHOICES), value="auto", label="Labels", elem_id="m3-labels", scale=2
            )
        w.mask_note = gr.Markdown("", elem_id="m3-mask-note")
    with gr.Row():
        w.plane = gr.Radio(list(PLANES), value="axial", label="Plane", elem_id="m3-plane")
        w.window = gr.Dropdown(list(WINDOWS), value="auto", label="Window", elem_id="m3-window")
    w.index = gr.Slider(0, 1, value=0, step=1, label="Slice", elem_id="m3-slice", interactive=False)
    w.view = gr.Image(
        label="View", type="pil", format="png", elem_id="m3-view", interactive=False, height=420
    )


def _file_box(label: str, elem_id: str, height: int, **extra: Any) -> Any:
    """A drop box for a scan file (the types the server reads), handed over as a path."""
    return gr.File(
        label=label,
        file_types=list(_SCAN_TYPES),
        type="filepath",
        elem_id=elem_id,
        height=height,
        **extra,
    )


def _chat_column(w: SimpleNamespace) -> None:
    """The conversation side: chat, question box, new conversation, download, trace."""
    w.chat = gr.Chatbot(label="Conversation", elem_id="m3-chat", height=520, layout="panel")
    w.question = gr.Textbox(
        placeholder="Ask about the scan, e.g. 'Segment the liver and measure it.'",
        show_label=False,
        elem_id="m3-question",
        submit_btn=True,
    )
    with gr.Row():
        w.clear = gr.Button("New conversation", size="sm")
        w.download = gr.DownloadButton(
            "Download results (zip)", value=None, elem_id="m3-download", size="sm"
        )
    with gr.Accordion("Behind the scenes (trace of the last question)", open=False):
        w.trace = gr.JSON(label="Trace", elem_id="m3-trace")


def _wire(w: SimpleNamespace, h: _Handlers) -> None:
    """Connect the widgets' events to the handlers."""
    w.opened = [
        w.file_id, w.session_id, w.info, w.index, w.view, w.chat, w.trace, w.download, w.existing,
    ]  # fmt: skip
    no_mask = (h.no_mask, None, [w.mask_id, w.mask_note])
    w.upload.upload(h.upload, [w.upload, w.plane, w.window], [*w.opened, w.upload]).then(*no_mask)
    w.existing.input(h.open, [w.existing, w.plane, w.window], w.opened).then(*no_mask)
    w.refresh.click(lambda: gr.update(choices=h.choices()), None, w.existing)
    conversation = [w.chat, w.session_id, w.trace, w.download]
    w.mask.upload(
        h.upload_mask,
        [w.mask, w.file_id, w.labels],
        [w.mask_id, w.mask_note, w.mask, *conversation],
    )
    w.labels.input(h.labels_changed, [w.mask_id, w.file_id, w.labels], [w.mask_note, *conversation])
    w.plane.change(h.plane_changed, [w.file_id, w.plane, w.window], [w.index, w.view])
    w.window.change(h.view, [w.file_id, w.plane, w.index, w.window], w.view)
    w.index.change(
        h.view,
        [w.file_id, w.plane, w.index, w.window],
        w.view,
        trigger_mode="always_last",
        show_progress="hidden",
    )
    w.question.submit(
        h.ask,
        [
            w.question,
            w.chat,
            w.file_id,
            w.session_id,
            w.plane,
            w.index,
            w.window,
            w.mask_id,
            w.labels,
        ],
        [w.chat, w.session_id, w.question, w.trace, w.download],
    )
    w.clear.click(h.new_chat, None, conversation)
