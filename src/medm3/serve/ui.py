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
as password.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.serve.auth import key_is_valid
from medm3.serve.errors import APIError

if TYPE_CHECKING:  # pragma: no cover
    import gradio as gr
    from fastapi import FastAPI

    from medm3.serve.service import Service

#: Window choices offered (names of :mod:`medm3.imaging.windowing`).
WINDOWS = ("auto", "soft_tissue", "lung", "bone", "brain", "percentile", "stored")
PLANES = ("axial", "coronal", "sagittal")
_LIBRARY = "library:"


def _no_analytics() -> None:
    """Turn Gradio's usage analytics off (set before Gradio is imported)."""
    import os

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def mount_ui(app: FastAPI, svc: Service, path: str = "/ui") -> None:
    """Mount the UI on ``app`` at ``path`` (Gradio analytics off)."""
    _no_analytics()
    import gradio as gr

    keys = svc.settings.api_keys
    auth = (lambda _user, password: key_is_valid(password, keys)) if keys else None
    gr.mount_gradio_app(
        app,
        build_ui(svc),
        path=path,
        auth=auth,
        auth_message="Sign in with any user name and the server's API key as password."
        if keys
        else None,
        allowed_paths=[str(svc.root / "outputs")],
        max_file_size=svc.settings.max_upload_bytes,
        ssr_mode=False,
        footer_links=[],
    )


def _fail(exc: BaseException) -> gr.Error:
    import gradio as gr

    if isinstance(exc, APIError):
        return gr.Error(exc.message)
    return gr.Error(f"{type(exc).__name__}: {exc}")


class _Handlers:
    """The UI's event handlers (plain methods, so they can be tested without a browser)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    # ------------------------------------------------------------- scans
    def choices(self) -> list[tuple[str, str]]:
        """Scans on the server: uploads, then library scans not registered yet."""
        out: list[tuple[str, str]] = []
        registered: set[str] = set()
        for rec in self.svc.store.list_files(200):
            if rec.purpose == "chat":
                continue
            shape = "x".join(str(s) for s in rec.meta.get("shape", []))
            out.append((f"{rec.filename} ({rec.meta.get('modality', '?')} {shape})", rec.id))
            registered.add(rec.path)
        for rel in self.svc.files.library():
            if f"library/{rel}" not in registered:
                out.append((f"library/{rel}", _LIBRARY + rel))
        return out

    def _opened(self, file_id: str, plane: str, window: str) -> tuple[Any, ...]:
        import gradio as gr

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
        import gradio as gr

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
    ) -> Any:
        """Stream the answer into the chat; overlays, trace and archive follow."""
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
        try:
            req = ChatCompletionRequest(
                model=self.svc.model_id,
                messages=[{"role": "user", "content": content}],
                session_id=session_id,
                stream=True,
                medm3=options,
            )
            plan = self.svc.plan(req)
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
                    yield self._finish(history, answer, payload)
                    return
        finally:
            job.cancel()

    def _finish(self, history: list[dict[str, Any]], answer: dict[str, Any], out: Any) -> Any:
        answer["content"] = out.answer
        for f in out.overlays:
            path = self.svc.root / f.url.removeprefix("/v1/")
            label = f"{(f.expert or 'expert').upper()}: {f.caption or f.name}"
            history.append({"role": "assistant", "content": f"*{label}*"})
            history.append({"role": "assistant", "content": {"path": str(path), "alt_text": label}})
        return history, out.session_id, "", out.trace, self.archive(out.session_id)

    def archive(self, session_id: str | None) -> str | None:
        """A zip of the session's outputs in a temporary folder Gradio may serve."""
        if not session_id:
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


def build_ui(svc: Service) -> gr.Blocks:
    """The Gradio Blocks of the UI, bound to ``svc``."""
    _no_analytics()
    import gradio as gr

    h = _Handlers(svc)
    # Gradio's cache (its copies of shown overlays and archives): files older than a day go.
    with gr.Blocks(title="medm3", delete_cache=(3600, 86400), analytics_enabled=False) as ui:
        gr.Markdown(
            f"## medm3 - VILA-M3 with expert models\nModel: `{svc.model_id}`. "
            "Research software, not a medical device."
        )
        file_id = gr.State(None)
        session_id = gr.State(None)
        with gr.Row():
            with gr.Column(scale=5):
                upload = gr.File(
                    label="Upload a scan (NIfTI, DICOM, DICOM zip, PNG/JPEG)",
                    file_types=[".nii", ".gz", ".dcm", ".zip", ".png", ".jpg", ".jpeg"],
                    type="filepath",
                    elem_id="m3-upload",
                    height=110,
                )
                with gr.Row():
                    existing = gr.Dropdown(
                        choices=h.choices(),
                        value=None,
                        label="Or open a scan on the server",
                        elem_id="m3-existing",
                        scale=4,
                    )
                    refresh = gr.Button("Refresh", scale=1, size="sm")
                info = gr.Markdown("No scan yet.", elem_id="m3-info")
                with gr.Row():
                    plane = gr.Radio(list(PLANES), value="axial", label="Plane", elem_id="m3-plane")
                    window = gr.Dropdown(
                        list(WINDOWS), value="auto", label="Window", elem_id="m3-window"
                    )
                index = gr.Slider(
                    0, 1, value=0, step=1, label="Slice", elem_id="m3-slice", interactive=False
                )
                view = gr.Image(
                    label="View",
                    type="pil",
                    format="png",
                    elem_id="m3-view",
                    interactive=False,
                    height=420,
                )
            with gr.Column(scale=6):
                chat = gr.Chatbot(
                    label="Conversation", elem_id="m3-chat", height=520, layout="panel"
                )
                question = gr.Textbox(
                    placeholder="Ask about the scan, e.g. 'Segment the liver and measure it.'",
                    show_label=False,
                    elem_id="m3-question",
                    submit_btn=True,
                )
                with gr.Row():
                    clear = gr.Button("New conversation", size="sm")
                    download = gr.DownloadButton(
                        "Download results (zip)", value=None, elem_id="m3-download", size="sm"
                    )
                with gr.Accordion("Behind the scenes (trace of the last question)", open=False):
                    trace = gr.JSON(label="Trace", elem_id="m3-trace")

        opened = [file_id, session_id, info, index, view, chat, trace, download, existing]
        upload.upload(h.upload, [upload, plane, window], [*opened, upload])
        existing.input(h.open, [existing, plane, window], opened)
        refresh.click(lambda: gr.update(choices=h.choices()), None, existing)
        plane.change(h.plane_changed, [file_id, plane, window], [index, view])
        window.change(h.view, [file_id, plane, index, window], view)
        index.change(
            h.view,
            [file_id, plane, index, window],
            view,
            trigger_mode="always_last",
            show_progress="hidden",
        )
        question.submit(
            h.ask,
            [question, chat, file_id, session_id, plane, index, window],
            [chat, session_id, question, trace, download],
        )
        clear.click(h.new_chat, None, [chat, session_id, trace, download])
        if svc.settings.dicomweb:  # m3 serve --dicomweb URL
            from medm3.serve.ui_pacs import add_pacs_panel

            add_pacs_panel(svc, h, opened, file_id, session_id, plane, window)
    return ui
