"""The run record and its SQLite store, safe under concurrent writers (WAL, busy timeout)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import closing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from beyondbp.errors import BeyondBPError

Status = Literal["running", "finished", "diverged", "interrupted", "failed"]
_JSON_FIELDS = ("options", "config", "metrics", "history", "env")


def run_rows(path: str | Path) -> list[Any] | None:
    """The raw run rows of a JSON file (or a gzipped one, ``.json.gz``): the file itself if it
    is a list (``beyondbp runs export --format json``), else its ``runs`` list (the benchmark
    results files); None if it holds no such list."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError) as e:
        raise BeyondBPError(f"cannot read runs from {path}: {e}") from e
    rows = data.get("runs") if isinstance(data, dict) else data
    return rows if isinstance(rows, list) else None


def records_from_json(path: str | Path) -> list[RunRecord]:
    """The runs in a JSON file (see :func:`run_rows`) as records; an error if it holds none."""
    rows = run_rows(path)
    if rows is None:
        raise BeyondBPError(
            f"{path} holds no runs: expected a JSON list of run records (`beyondbp runs export "
            "--format json`) or an object with a 'runs' list"
        )
    names = {f.name for f in fields(RunRecord)}
    records = []
    for i, row in enumerate(rows):
        try:
            records.append(RunRecord(**{k: v for k, v in row.items() if k in names}))
        except (TypeError, AttributeError) as e:
            raise BeyondBPError(f"{path}: run {i} is not a run record ({e})") from e
    return records


def default_store_path() -> Path:
    return Path(os.environ.get("BEYONDBP_RUNS", "beyondbp-runs")) / "runs.sqlite"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


@dataclass
class RunRecord:
    """One run: what was asked, what happened, what was measured, and where."""

    rule: str
    dataset: str
    net: str
    seed: int
    data_seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # the rule's full options
    config: dict[str, Any] = field(default_factory=dict)  # the harness settings
    status: Status = "running"
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per epoch
    env: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    id: str = field(default_factory=new_run_id)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @property
    def unfinished(self) -> bool:
        """Still training, or stopped and resumable from a checkpoint: its record is partial."""
        return self.status in ("running", "interrupted")

    def summary(self) -> dict[str, Any]:
        """The flat row shown by ``runs list`` and exported to CSV."""
        row = {k: getattr(self, k) for k in ("id", "status", "rule", "dataset", "net", "seed")}
        row.update({k: v for k, v in self.metrics.items() if not isinstance(v, dict | list)})
        return row


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL,
    rule TEXT NOT NULL,
    dataset TEXT NOT NULL,
    net TEXT NOT NULL,
    seed INTEGER NOT NULL,
    data_seed INTEGER NOT NULL,
    options TEXT NOT NULL,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL,
    history TEXT NOT NULL,
    env TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_cell ON runs (rule, dataset, net, seed);
"""
_COLUMNS = [f.name for f in fields(RunRecord)]


def _insert(conflict: str) -> str:
    return (
        f"INSERT {conflict} INTO runs ({', '.join(_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(_COLUMNS))})"
    )


def _values(record: RunRecord) -> list[Any]:
    row = asdict(record)
    return [json.dumps(row[c]) if c in _JSON_FIELDS else row[c] for c in _COLUMNS]


class RunStore:
    """All runs in one SQLite file. Each call opens its own connection, so it is safe to share
    a store between threads and processes; WAL mode lets readers work while one process writes."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=60000")
        except sqlite3.DatabaseError as e:
            raise BeyondBPError(
                f"run store {self.path} cannot be opened ({e}); point --store at another file "
                "or move the damaged one away"
            ) from e
        db.row_factory = sqlite3.Row
        return db

    def save(self, record: RunRecord) -> None:
        """Insert or replace the record (one atomic transaction)."""
        record.updated = time.time()
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(_insert("OR REPLACE"), _values(record))
            db.execute("COMMIT")

    @staticmethod
    def _record(row: sqlite3.Row) -> RunRecord:
        data = {c: (json.loads(row[c]) if c in _JSON_FIELDS else row[c]) for c in _COLUMNS}
        return RunRecord(**data)

    def get(self, run_id: str) -> RunRecord:
        """A run by id or by a unique prefix of it."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT * FROM runs WHERE id LIKE ? ORDER BY created", (run_id + "%",)
            ).fetchall()
        if len(rows) != 1:
            what = "no run" if not rows else f"{len(rows)} runs"
            raise BeyondBPError(
                f"{what} with id {run_id!r} in {self.path}; see `beyondbp runs list`"
            )
        return self._record(rows[0])

    def list(self, **where: Any) -> list[RunRecord]:
        """Runs matching column=value filters (e.g. ``rule="bp", status="finished"``), oldest first."""
        bad = [k for k in where if k not in _COLUMNS]
        if bad:
            raise BeyondBPError(f"cannot filter runs by {bad[0]!r}; columns: {', '.join(_COLUMNS)}")
        clause = " AND ".join(f"{k} = ?" for k in where) or "1"
        with closing(self._connect()) as db:
            rows = db.execute(
                f"SELECT * FROM runs WHERE {clause} ORDER BY created", list(where.values())
            ).fetchall()
        return [self._record(r) for r in rows]

    @property
    def files(self) -> Path:
        """The store's own folder of side files (checkpoints, locks, logs, the tuner's study):
        ``<name>_files/`` beside ``<name>.sqlite``, so two stores in one folder share none."""
        return self.path.with_name(self.path.stem + "_files")

    def checkpoint_dir(self, run_id: str) -> Path:
        """Where a run's checkpoints live: ``checkpoints/<run id>/`` in :attr:`files` (or beside
        the store file, where stores before this layout kept them)."""
        here = self.files / "checkpoints" / run_id
        legacy = self.path.parent / "checkpoints" / run_id
        return legacy if legacy.is_dir() and not here.is_dir() else here

    def delete(self, run_id: str) -> RunRecord:
        """Remove one run (id or unique prefix) and its checkpoints from the store; returns what
        was removed. A grid then runs that cell again from the start."""
        record = self.get(run_id)
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM runs WHERE id = ?", (record.id,))
            db.execute("COMMIT")
        shutil.rmtree(self.checkpoint_dir(record.id), ignore_errors=True)
        return record

    def add(self, records: list[RunRecord]) -> list[RunRecord]:
        """Insert runs kept elsewhere (``export`` JSON, a results file) under their own ids; a run
        whose id is already here is left as it is. Returns the runs that were added."""
        added = []
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            for record in records:
                if db.execute(_insert("OR IGNORE"), _values(record)).rowcount:
                    added.append(record)
            db.execute("COMMIT")
        return added

    def export(self, fmt: Literal["csv", "json"], **where: Any) -> str:
        records = self.list(**where)
        if fmt == "json":
            return json.dumps([asdict(r) for r in records], indent=1)
        if fmt != "csv":
            raise BeyondBPError(f"unknown export format {fmt!r}; valid formats: csv, json")
        rows = [r.summary() | {"options": json.dumps(r.options)} for r in records]
        header: list[str] = []
        for row in rows:
            header += [k for k in row if k not in header]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
