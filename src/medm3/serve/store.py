"""SQLite persistence: uploaded files, sessions and their messages (survives restarts).

Tables (``<data_dir>/medm3.sqlite3``, WAL mode):

* ``files``: one row per stored file (id, display name, kind, size, SHA-256,
  path relative to the data folder, purpose, de-identified flag, metadata JSON);
* ``sessions``: one row per conversation (the ids of its images by input name,
  the agent state needed to continue it, timestamps);
* ``messages``: the visible turns of each session (role, text, the trace of the
  question and the output files of an answer).

Paths are stored relative to the data folder and resolved (and checked) by
:mod:`medm3.serve.files`, never here. One connection is shared by all threads
behind a lock; every write is its own transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Database file name inside the data folder.
DB_NAME = "medm3.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    kind TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    purpose TEXT NOT NULL,
    deidentified INTEGER NOT NULL DEFAULT 0,
    meta TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    images TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    trace TEXT NOT NULL DEFAULT '[]',
    files TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_session ON messages(session_id, id);
"""


@dataclass
class FileRecord:
    """A stored file.

    Attributes:
        id: ``file-`` + 24 hex digits.
        filename: The client's file name (display only, never used as a path).
        kind: ``nifti``, ``dicom``, ``dicom_zip``, ``png`` or ``jpeg``.
        bytes: Stored size.
        sha256: Hex digest of the stored bytes.
        path: Location relative to the data folder.
        purpose: The ``purpose`` given at upload (``user_data``, ``vision``, ``chat`` ...).
        deidentified: True when DICOM content was de-identified on arrival.
        meta: Image facts (modality, shape, spacing) and de-identification notes.
        created_at: Unix time of the upload.
    """

    id: str
    filename: str
    kind: str
    bytes: int
    sha256: str
    path: str
    purpose: str
    deidentified: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: int = 0


@dataclass
class SessionRecord:
    """A stored conversation.

    Attributes:
        id: Session id.
        images: Input name -> file id of the study's images.
        state: Agent state needed to continue (see :mod:`medm3.serve.memory`).
        created_at: Unix time of creation.
        updated_at: Unix time of the last answer.
    """

    id: str
    images: dict[str, str]
    state: dict[str, Any]
    created_at: int
    updated_at: int


@dataclass
class MessageRecord:
    """A visible turn of a session.

    Attributes:
        role: ``user`` or ``assistant``.
        content: The question or the answer.
        trace: The steps of the question (assistant turns).
        files: Output files of the answer, paths relative to the data folder.
        created_at: Unix time.
    """

    role: str
    content: str
    trace: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    created_at: int = 0


class Store:
    """The server's database.

    Args:
        data_dir: Data folder; the database file is created inside it.
    """

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DB_NAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: no fsync per commit (the last commits may be lost on power
            # loss, the database is never corrupted); the per-request commit was the
            # largest server overhead (issue 13)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._lock:
            cur = self._db.execute(sql, params)
            return cur.rowcount

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ files
    def add_file(self, record: FileRecord) -> FileRecord:
        """Insert a file record (``created_at`` is set when 0)."""
        record.created_at = record.created_at or int(time.time())
        self._write(
            "INSERT INTO files (id, filename, kind, bytes, sha256, path, purpose, deidentified,"
            " meta, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.filename,
                record.kind,
                record.bytes,
                record.sha256,
                record.path,
                record.purpose,
                int(record.deidentified),
                json.dumps(record.meta, default=str),
                record.created_at,
            ),
        )
        return record

    @staticmethod
    def _file(row: sqlite3.Row) -> FileRecord:
        return FileRecord(
            id=row["id"],
            filename=row["filename"],
            kind=row["kind"],
            bytes=row["bytes"],
            sha256=row["sha256"],
            path=row["path"],
            purpose=row["purpose"],
            deidentified=bool(row["deidentified"]),
            meta=json.loads(row["meta"]),
            created_at=row["created_at"],
        )

    def get_file(self, file_id: str) -> FileRecord | None:
        """The record of ``file_id``, or None."""
        rows = self._read("SELECT * FROM files WHERE id = ?", (file_id,))
        return self._file(rows[0]) if rows else None

    def find_file_by_path(self, path: str) -> FileRecord | None:
        """The record whose stored path is ``path`` (relative to the data folder), or None."""
        rows = self._read("SELECT * FROM files WHERE path = ? ORDER BY created_at", (path,))
        return self._file(rows[0]) if rows else None

    def find_file_by_sha(self, sha256: str) -> FileRecord | None:
        """The oldest upload (not a library scan) with these stored bytes, or None."""
        rows = self._read(
            "SELECT * FROM files WHERE sha256 = ? AND purpose != 'library' "
            "ORDER BY created_at LIMIT 1",
            (sha256,),
        )
        return self._file(rows[0]) if rows else None

    def list_files(self, limit: int = 1000) -> list[FileRecord]:
        """Stored files, newest first."""
        rows = self._read("SELECT * FROM files ORDER BY created_at DESC, id LIMIT ?", (limit,))
        return [self._file(r) for r in rows]

    def delete_file(self, file_id: str) -> bool:
        """Remove a file record; True when it existed."""
        return self._write("DELETE FROM files WHERE id = ?", (file_id,)) > 0

    # --------------------------------------------------------------- sessions
    def get_session(self, session_id: str) -> SessionRecord | None:
        """The session ``session_id``, or None."""
        rows = self._read("SELECT * FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            return None
        row = rows[0]
        return SessionRecord(
            id=row["id"],
            images=json.loads(row["images"]),
            state=json.loads(row["state"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def save_session(
        self,
        session_id: str,
        images: dict[str, str],
        state: dict[str, Any],
        new_messages: list[MessageRecord],
    ) -> None:
        """Create or update a session and append its new turns, in one transaction."""
        now = int(time.time())
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO sessions (id, images, state, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                    "images = excluded.images, state = excluded.state, "
                    "updated_at = excluded.updated_at",
                    (session_id, json.dumps(images), json.dumps(state, default=str), now, now),
                )
                for m in new_messages:
                    self._db.execute(
                        "INSERT INTO messages (session_id, role, content, trace, files, "
                        "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            session_id,
                            m.role,
                            m.content,
                            json.dumps(m.trace, default=str),
                            json.dumps(m.files),
                            m.created_at or now,
                        ),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def messages(self, session_id: str) -> list[MessageRecord]:
        """The visible turns of a session, oldest first."""
        rows = self._read("SELECT * FROM messages WHERE session_id = ? ORDER BY id", (session_id,))
        return [
            MessageRecord(
                role=r["role"],
                content=r["content"],
                trace=json.loads(r["trace"]),
                files=json.loads(r["files"]),
                created_at=r["created_at"],
            )
            for r in rows
        ]

    def list_sessions(self, limit: int = 100) -> list[SessionRecord]:
        """Sessions, most recently updated first."""
        rows = self._read("SELECT * FROM sessions ORDER BY updated_at DESC, id LIMIT ?", (limit,))
        return [
            SessionRecord(
                r["id"],
                json.loads(r["images"]),
                json.loads(r["state"]),
                r["created_at"],
                r["updated_at"],
            )
            for r in rows
        ]

    def delete_session(self, session_id: str) -> bool:
        """Remove a session and its messages; True when it existed."""
        return self._write("DELETE FROM sessions WHERE id = ?", (session_id,)) > 0
