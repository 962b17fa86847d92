"""An on-disk cache of embeddings, so a restart does not embed a bank again.

One SQLite file per encoder, named after the encoder's identity
(:func:`~slmgraph.models._embed.embedder_identity`), in a folder that defaults to
``.slmgraph/embeddings`` beside the default checkpoint file. Rows are keyed by the
SHA-256 of the text; each holds the float32 vector and a CRC-32 of key and vector.
Fitted heads are kept in the same file as named blobs, also checksummed.

A vector is only ever served when its checksum and length agree; a row that fails
is dropped and its text embedded again, and a file that SQLite cannot read is
moved aside (``*.corrupt``) and rebuilt. Both log a warning on the
``slmgraph.embed`` logger. All file work runs off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sqlite3
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._lazy import numpy_for
from ._embed import Embedder, embedder_identity

__all__ = ["EmbeddingCache", "DEFAULT_CACHE_DIR", "Progress"]

_log = logging.getLogger("slmgraph.embed")

#: Beside the default checkpoint file (``.slmgraph/checkpoints.sqlite``).
DEFAULT_CACHE_DIR = Path(".slmgraph") / "embeddings"

#: ``progress``: ``True`` (a bar on stderr), ``False`` (silent), ``None`` (a bar when
#: stderr is a terminal, else log lines) or a callable ``(done, total)``.
Progress = bool | None | Callable[[int, int], None]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL, crc INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS blobs (name TEXT PRIMARY KEY, data BLOB NOT NULL, crc INTEGER NOT NULL)",
)


def _np() -> Any:
    return numpy_for("the embedding cache")


def text_key(text: str) -> bytes:
    """The cache key of a text: the first 16 bytes of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


def _crc(*parts: bytes) -> int:
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    return crc


class _Bar:
    """A progress bar on stderr, or log lines, or a callback."""

    def __init__(self, progress: Progress, total: int, label: str) -> None:
        self.total, self.label, self.done, self.started = total, label, 0, time.perf_counter()
        self.callback = progress if callable(progress) else None
        tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.draw = progress is True or (progress is None and tty)
        self.log = progress is None and not tty
        if self.log:
            _log.info("%s: embedding %d texts", label, total)

    def advance(self, n: int) -> None:
        self.done += n
        if self.callback:
            self.callback(self.done, self.total)
        if self.draw:
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            filled = int(30 * self.done / max(self.total, 1))
            sys.stderr.write(f"\r{self.label}: [{'#' * filled}{'.' * (30 - filled)}] "
                             f"{self.done}/{self.total} texts, {rate:.0f}/s")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif self.log and self.done >= self.total:
            _log.info("%s: embedded %d texts in %.1fs", self.label, self.total, time.perf_counter() - self.started)


class EmbeddingCache:
    """Embeddings on disk, keyed by encoder identity and text hash.

    Args:
        folder: where the cache files go (default ``.slmgraph/embeddings``).
        batch: texts per encoder call when filling the cache (and per progress step).
    """

    def __init__(self, folder: str | Path | None = None, *, batch: int = 256) -> None:
        self.folder = Path(folder) if folder is not None else DEFAULT_CACHE_DIR
        self.batch = max(1, batch)
        self._checked: set[Path] = set()

    def path_for(self, identity: str) -> Path:
        """The cache file of an encoder identity."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", identity)[:60]
        return self.folder / f"{slug}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}.sqlite"

    # -- the file ---------------------------------------------------------------------
    def _open(self, identity: str) -> sqlite3.Connection:
        path = self.path_for(identity)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path not in self._checked:
            try:
                with sqlite3.connect(path, timeout=30) as probe:
                    status = probe.execute("PRAGMA quick_check").fetchone()
                    if status is None or status[0] != "ok":
                        raise sqlite3.DatabaseError(f"quick_check says {status}")
            except sqlite3.DatabaseError as exc:
                self._set_aside(path, f"cannot be read ({exc})")
            self._checked.add(path)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        for statement in _SCHEMA:
            conn.execute(statement)
        return conn

    @staticmethod
    def _set_aside(path: Path, why: str) -> None:
        aside = path.with_name(path.name + ".corrupt")
        _log.warning("embedding cache %s %s; moved it to %s and rebuilding it", path, why, aside.name)
        for suffix in ("-journal", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        path.replace(aside)

    # -- vectors ----------------------------------------------------------------------
    def lookup(self, identity: str, texts: Sequence[str]) -> dict[str, Any]:
        """The cached vectors of ``texts`` (those whose row checks out), by text."""
        np = _np()
        keys = {text_key(t): t for t in texts}
        found: dict[str, Any] = {}
        bad: list[bytes] = []
        with self._connection(identity) as conn:
            key_list = list(keys)
            for lo in range(0, len(key_list), 500):
                part = key_list[lo : lo + 500]
                query = f"SELECT key, vec, crc FROM vectors WHERE key IN ({','.join('?' * len(part))})"
                for key, vec, crc in conn.execute(query, part):
                    if _crc(key, vec) != crc or len(vec) % 4 or not vec:
                        bad.append(key)
                        continue
                    found[keys[key]] = np.frombuffer(vec, dtype="<f4")
            if bad:
                _log.warning("embedding cache %s: %d rows failed their checksum; embedding those texts again",
                             self.path_for(identity), len(bad))
                conn.executemany("DELETE FROM vectors WHERE key = ?", [(k,) for k in bad])
        dims = {v.shape[0] for v in found.values()}
        if len(dims) > 1:  # rows of another shape cannot be this encoder's: trust none
            _log.warning("embedding cache %s holds vectors of several sizes %s; embedding again",
                         self.path_for(identity), sorted(dims))
            return {}
        return found

    def store(self, identity: str, texts: Sequence[str], vectors: Any) -> None:
        """Write the vectors of ``texts`` (rows of ``vectors``)."""
        np = _np()
        matrix = np.ascontiguousarray(np.asarray(vectors, dtype="<f4"))
        rows = []
        for text, row in zip(texts, matrix):
            key, vec = text_key(text), row.tobytes()
            rows.append((key, vec, _crc(key, vec)))
        with self._connection(identity) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO vectors (key, vec, crc) VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")

    # -- blobs (fitted heads) -------------------------------------------------------------
    def load_blob(self, identity: str, name: str) -> bytes | None:
        with self._connection(identity) as conn:
            row = conn.execute("SELECT data, crc FROM blobs WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            if _crc(name.encode(), row[0]) != row[1]:
                _log.warning("embedding cache %s: saved %r failed its checksum; fitting it again",
                             self.path_for(identity), name)
                conn.execute("DELETE FROM blobs WHERE name = ?", (name,))
                return None
            return bytes(row[0])

    def store_blob(self, identity: str, name: str, data: bytes) -> None:
        with self._connection(identity) as conn:
            conn.execute("INSERT OR REPLACE INTO blobs (name, data, crc) VALUES (?, ?, ?)",
                         (name, data, _crc(name.encode(), data)))

    def _connection(self, identity: str) -> Any:
        cache = self

        class _Conn:
            def __enter__(self) -> sqlite3.Connection:
                try:
                    self.conn = cache._open(identity)
                except sqlite3.DatabaseError as exc:  # damaged after the check: once more, fresh
                    cache._set_aside(cache.path_for(identity), f"cannot be read ({exc})")
                    self.conn = cache._open(identity)
                return self.conn

            def __exit__(self, *exc: object) -> None:
                self.conn.close()

        return _Conn()

    # -- embedding through the cache ------------------------------------------------------
    async def embed(self, embedder: Embedder, texts: Sequence[str], *, progress: Progress = None,
                    label: str = "embedding") -> Any:
        """The vectors of ``texts`` (float32 array, rows in order): cached ones read,
        the rest embedded in batches (with a progress bar) and written as they come."""
        np = _np()
        texts = list(texts)
        identity = await asyncio.to_thread(embedder_identity, embedder)
        try:
            found = await asyncio.to_thread(self.lookup, identity, texts)
        except (OSError, sqlite3.Error) as exc:
            _log.warning("embedding cache %s unusable (%s); embedding without it", self.folder, exc)
            found, identity = {}, ""
        todo = list(dict.fromkeys(t for t in texts if t not in found))
        if todo:
            bar = _Bar(progress, len(todo), label)
            for lo in range(0, len(todo), self.batch):
                part = todo[lo : lo + self.batch]
                vectors = np.asarray(await embedder.embed(part), dtype=np.float32)
                found.update(zip(part, vectors))
                if identity:
                    try:
                        await asyncio.to_thread(self.store, identity, part, vectors)
                    except (OSError, sqlite3.Error) as exc:
                        _log.warning("could not write the embedding cache %s (%s)", self.folder, exc)
                        identity = ""
                bar.advance(len(part))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([np.asarray(found[t], dtype=np.float32) for t in texts])

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.folder)!r})"
