"""What a question or an expert run wrote, as clients see it: file objects, output URLs,
traces without server paths, stored sessions and the results zip."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.serve.errors import not_found
from medm3.serve.protocol import FileObject, OutputFile, SessionMessage, SessionObject

if TYPE_CHECKING:  # pragma: no cover
    from medm3.serve.files import FileStore
    from medm3.serve.store import FileRecord, SessionRecord, Store


def output_kind(name: str) -> str:
    """The kind of an output file from its name (``overlay``, ``label_map``, ``result`` ...)."""
    if name == "result.json":
        return "result"
    if "_labels." in name:
        return "label_map"
    if name == "trace.json":
        return "trace"
    if name.endswith("_seg.dcm"):
        return "dicom_seg"
    return "overlay" if name.endswith(".png") else "file"


def file_object(rec: FileRecord) -> FileObject:
    """The API view of a stored file."""
    facts = {**rec.meta, "format": rec.kind, "sha256": rec.sha256}
    facts["deidentified"] = rec.deidentified
    return FileObject(
        id=rec.id,
        bytes=rec.bytes,
        created_at=rec.created_at,
        filename=rec.filename,
        purpose=rec.purpose,
        medm3=facts,
    )


def output_url(files: FileStore, path: str | Path) -> str:
    """The download URL of a file inside ``outputs/``."""
    return "/v1/" + files.relative(path)


def output_file(
    url: str, *, expert: str | None = None, captions: dict[str, Any] | None = None
) -> OutputFile:
    """An :class:`OutputFile` for ``url`` (an overlay's caption looked up in ``captions``)."""
    name = url.rsplit("/", 1)[-1]
    kind = output_kind(name)
    caption = (captions or {}).get(Path(name).stem) if kind == "overlay" else None
    return OutputFile(url=url, name=name, kind=kind, expert=expert, caption=caption)


def expert_files(files: FileStore, steps: list[dict[str, Any]]) -> list[OutputFile]:
    """Every file the expert steps of a trace wrote."""
    out: list[OutputFile] = []
    for step in steps:
        if step.get("step") != "expert":
            continue
        overlays = step.get("result", {}).get("overlays", [])
        captions = {o.get("name"): o.get("caption") or None for o in overlays}
        out += [
            output_file(output_url(files, p), expert=step.get("expert"), captions=captions)
            for p in step.get("files", [])
        ]
    return out


def public_trace(files: FileStore, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trace steps as JSON with server file paths replaced by download URLs."""
    public = copy.deepcopy(steps)
    for step in public:
        if "files" in step:
            step["files"] = [output_url(files, p) for p in step["files"]]
    return json.loads(json.dumps(public, default=str))


def session_object(store: Store, rec: SessionRecord) -> SessionObject:
    """``GET /v1/sessions/{id}``: a stored session with its turns, traces and file URLs."""
    messages = [
        SessionMessage(
            role=m.role,
            content=m.content,
            created_at=m.created_at,
            files=[output_file("/v1/" + p) for p in m.files],
            trace=m.trace,
        )
        for m in store.messages(rec.id)
    ]
    return SessionObject(
        id=rec.id,
        created_at=rec.created_at,
        updated_at=rec.updated_at,
        images=rec.images,
        labels=rec.state.get("options", {}).get("labels"),
        messages=messages,
        archive_url=f"/v1/outputs/{rec.id}/archive.zip",
    )


def build_archive(files: FileStore, store: Store, owner: str) -> Path:
    """A zip of a session's or expert run's outputs, built in ``tmp/``.

    It holds ``outputs/<owner>/`` (overlays, label maps, result JSON) and, for a
    session, ``trace.json``: every question and answer with its trace.

    Raises:
        APIError: 404 for an unknown owner.
    """
    folder = files.output_dir(owner)
    if not folder.is_dir() and store.get_session(owner) is None:
        raise not_found("no such output", code="output_not_found")
    folder = files.inside(folder)
    dest = files.tmp_path().with_suffix(".zip")
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                zf.write(path, path.relative_to(folder).as_posix())
        turns = store.messages(owner)
        if turns:  # a session: its questions, answers and traces
            doc = [
                {"role": m.role, "content": m.content, "trace": m.trace, "files": m.files}
                for m in turns
            ]
            zf.writestr("trace.json", json.dumps(doc, indent=2, default=str) + "\n")
    return dest
