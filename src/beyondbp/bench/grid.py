"""Grids of runs: rules × datasets × nets × seeds, each cell in its own process, resumable.

A cell is identified by its content (rule, dataset, net, seed and the *full* options and harness
settings, defaults filled in; in the identity itself an entry equal to today's default is left
out, so a setting added later does not orphan runs made before it existed), not by when it ran: a finished run with the same content is
found in the store and never recomputed, however it was started (a grid, a preset, or
``beyondbp train`` by hand). Killing a grid at any moment loses nothing: a cell's worker holds a
lock while it runs, writes its record under the cell's fixed id, and a restarted grid resumes
unfinished cells from their last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from beyondbp.errors import BeyondBPError
from beyondbp.harness import TrainConfig, make_config
from beyondbp.rules import get_rule, make_options
from beyondbp.runs import RunRecord, RunStore

# Harness settings that do not change what a run computes or measures.
NOT_IDENTITY = {"progress", "checkpoint", "data_dir", "eval_batch_size"}
TERMINAL = ("finished", "diverged", "failed")


def natural_key(text: str) -> tuple[str | int, ...]:
    """Sort key that orders numbers inside names by value: noprop:2 < noprop:10 < noprop:20."""
    return tuple(int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", text)))


class GridSpec(BaseModel):
    """A grid: the product of rules, datasets, nets and seeds, with per-rule options.

    ``config`` holds harness settings for every cell (epochs, patience, batch_size, ...);
    ``rule_config`` overrides them per rule (e.g. FF's batch of 100).
    """

    model_config = ConfigDict(extra="forbid")

    rules: list[str]
    datasets: list[str] = ["digits"]
    nets: list[str] = ["mlp:1000x2"]
    seeds: list[int] = [0, 1, 2]
    options: dict[str, dict[str, Any]] = {}
    config: dict[str, Any] = {}
    rule_config: dict[str, dict[str, Any]] = {}
    data_dir: str | None = None
    target_acc: float | None = None  # validation accuracy for time-to-target
    # each seed also draws its own data split (data_seed = seed): a graph's folds, as
    # ForwardGNN's five runs use five folds
    folds: bool = False

    def cells(self) -> list[Cell]:
        return [
            Cell(
                rule=rule,
                dataset=dataset,
                net=net,
                seed=seed,
                options=dict(self.options.get(rule, {})),
                config={
                    **self.config,
                    **self.rule_config.get(rule, {}),
                    "seed": seed,
                    **({"data_seed": seed} if self.folds else {}),
                },
                data_dir=self.data_dir,
            )
            for rule in self.rules
            for dataset in self.datasets
            for net in self.nets
            for seed in self.seeds
        ]


def load_grid_file(path: str | Path) -> GridSpec:
    """A grid from a YAML or TOML file with the fields of :class:`GridSpec`."""
    path = Path(path)
    try:
        text = path.read_text()
        if path.suffix in (".toml",):
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
        return GridSpec.model_validate(data)
    except OSError as e:
        raise BeyondBPError(f"cannot read grid file {path}: {e}") from e
    except ValidationError as e:
        raise BeyondBPError(f"grid file {path}: {e}") from None
    except Exception as e:  # YAML/TOML syntax
        raise BeyondBPError(f"grid file {path} does not parse: {e}") from e


def _non_default(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The entries that differ from the defaults (a missing default counts as different)."""
    missing = object()
    return {k: v for k, v in sorted(values.items()) if defaults.get(k, missing) != v}


def _option_defaults(rule: str) -> dict[str, Any]:
    try:
        return make_options(get_rule(rule), {}).model_dump()
    except BeyondBPError:  # a rule no longer registered: keep every option
        return {}


_CONFIG_DEFAULTS = TrainConfig().model_dump()


def _identity(
    rule: str, dataset: str, net: str, options: dict, config: dict, options_of: str | None = None
) -> str:
    """A content hash; ``options_of`` names the rule whose defaults ``options`` are compared to
    (default: ``rule``)."""
    config = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    content = {
        "rule": rule,
        "dataset": dataset,
        "net": net,
        "options": _non_default(options, _option_defaults(options_of or rule)) if options else {},
        "config": _non_default(config, _CONFIG_DEFAULTS),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[
        :12
    ]


def record_key(r: RunRecord) -> str:
    """The cell identity of a stored run."""
    return _identity(r.rule, r.dataset, r.net, r.options, r.config)


def setup_key(r: RunRecord, with_options: bool = True) -> str:
    """What a run's seeds share: its identity without the seed and the data split (repeats of a
    setup differ in either) and, optionally, without the rule's options (runs of different
    rules under the same budget)."""
    config = {k: v for k, v in r.config.items() if k not in ("seed", "data_seed")}
    return _identity("", "", "", r.options if with_options else {}, config, r.rule)[:6]


@dataclass
class Cell:
    rule: str
    dataset: str
    net: str
    seed: int
    options: dict[str, Any] = field(default_factory=dict)  # as given
    config: dict[str, Any] = field(default_factory=dict)  # as given
    data_dir: str | None = None

    def full_options(self) -> dict[str, Any]:
        return make_options(get_rule(self.rule), self.options).model_dump()

    def full_config(self) -> dict[str, Any]:
        from beyondbp.runner import resolve_device

        cfg = make_config(self.config)
        device = resolve_device(cfg.device, get_rule(self.rule), check=False)  # checked on run
        return cfg.model_copy(update={"device": device}).model_dump()

    @property
    def key(self) -> str:
        return _identity(self.rule, self.dataset, self.net, self.full_options(), self.full_config())

    @property
    def run_id(self) -> str:
        name = f"{self.rule}.{self.dataset}.{self.net}.s{self.seed}.{self.key}"
        return re.sub(r"[^A-Za-z0-9._-]", "_", name)

    def record_failure(self, store: RunStore, error: str) -> None:
        """Mark the cell failed with ``error`` (a failed run again: the latest error), unless its
        run finished or diverged."""
        record = self.find(store)
        if record is not None and record.status in ("finished", "diverged"):
            return
        record = record or RunRecord(
            id=self.run_id,
            rule=self.rule,
            dataset=self.dataset,
            net=self.net,
            seed=self.seed,
            options=self.full_options(),
            config=self.full_config(),
        )
        record.status, record.error = "failed", error
        store.save(record)

    def find(self, store: RunStore) -> RunRecord | None:
        """The stored run of this cell: a finished one first, else the latest attempt."""
        key = self.key
        runs = [
            r
            for r in store.list(rule=self.rule, dataset=self.dataset, net=self.net, seed=self.seed)
            if record_key(r) == key
        ]
        done = [r for r in runs if r.status == "finished"]
        return (done or runs or [None])[-1]


def _payload(cell: Cell, store: RunStore) -> str:
    """What a worker (a local process or a Ray task) needs to run ``cell`` into ``store``."""
    return json.dumps({"cell": cell.__dict__, "store": str(store.path), "id": cell.run_id})


def _worker_cmd(cell: Cell, store: RunStore) -> list[str]:
    return [sys.executable, "-m", "beyondbp.bench.cell", _payload(cell, store)]


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a grid like Ctrl-C does (where a signal handler can be set)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_grid(
    cells: Iterable[Cell],
    store: RunStore,
    jobs: int = 1,
    retry_failed: bool = False,
    on_done: Callable[[Cell, RunRecord | None], None] | None = None,
    backend: str = "local",
    address: str | None = None,
) -> list[RunRecord]:
    """Run every cell not yet finished, ``jobs`` at a time, each in its own process
    (``backend="local"``) or as a Ray task (``backend="ray"``, on the cluster at ``address``;
    a local Ray head when None).

    Returns the stored record of every cell (None-free: a cell whose worker died without a
    record gets a ``failed`` record naming the exit code).
    """
    cells = list(cells)
    for c in cells:  # fail fast on unknown rules or options, before any process starts
        c.full_options()
        c.full_config()
    skip = ("finished", "diverged") if retry_failed else TERMINAL
    todo = [c for c in cells if (r := c.find(store)) is None or r.status not in skip]
    if backend == "ray":
        _run_on_ray(todo, store, jobs, address, on_done)
        found = [c.find(store) for c in cells]
        return [r for r in found if r is not None]
    if backend != "local":
        raise BeyondBPError(f"unknown grid backend {backend!r}: use local or ray")
    logs = store.files / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    live: set[subprocess.Popen] = set()
    stopping = threading.Event()

    def run(cell: Cell) -> RunRecord | None:
        if stopping.is_set():
            return None
        with open(logs / f"{cell.run_id}.log", "ab") as log:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            if jobs > 1:  # share the cores: parallel cells must not oversubscribe them
                env["BEYONDBP_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
            # a session of its own: a terminal's Ctrl-C reaches the grid alone, which then
            # stops each worker with one SIGTERM (two signals would abort it mid-epoch)
            proc = subprocess.Popen(_worker_cmd(cell, store), stdout=log, stderr=log, env=env,
                                    start_new_session=True)  # fmt: skip
            live.add(proc)
            code = proc.wait()
            live.discard(proc)
        if code not in (0, 130) and not stopping.is_set():  # 130: interrupted, resumable
            cell.record_failure(store, f"worker exited with code {code}; log: {log.name}")
        return cell.find(store)

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        with _terminate_as_interrupt():
            futures = {pool.submit(run, c): c for c in todo}
            for fut in as_completed(futures):
                if on_done is not None:
                    on_done(futures[fut], fut.result())
    except BaseException:
        # Ctrl-C or SIGTERM: start no new cell, and let the running workers save and stop
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in list(live):
            proc.send_signal(signal.SIGTERM)
        for proc in list(live):
            proc.wait()
        raise
    pool.shutdown()
    found = [c.find(store) for c in cells]
    return [r for r in found if r is not None]


def _ray_cell(payload: str, threads: int) -> int:
    """A grid cell as a Ray task: the same worker as a local cell, in the task's process."""
    os.environ["BEYONDBP_THREADS"] = str(threads)
    from beyondbp.bench.cell import main

    return main(payload)


def _run_on_ray(
    todo: list[Cell],
    store: RunStore,
    jobs: int,
    address: str | None,
    on_done: Callable[[Cell, RunRecord | None], None] | None,
) -> None:
    """Cells as Ray tasks, at most ``jobs`` in flight (each asks Ray for its threads' CPUs).

    Every node must reach the store's path (one machine, or a shared filesystem): the workers
    write their runs, checkpoints and locks there, as local workers do. Ctrl-C cancels the
    tasks in flight; their cells resume from their last checkpoint on the next start."""
    try:
        import ray
    except ImportError:
        raise BeyondBPError("--backend ray needs Ray: pip install 'beyondbp[population]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = max(1, cpus // max(1, jobs)) if jobs > 1 else 1
    task = ray.remote(num_cpus=threads, max_retries=0)(_ray_cell)
    queue, running = list(todo), {}
    try:
        while queue or running:
            while queue and len(running) < max(1, jobs):
                cell = queue.pop(0)
                running[task.remote(_payload(cell, store), threads)] = cell
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                cell = running.pop(ref)
                try:
                    ray.get(ref)
                except Exception as e:  # the task's process died (ray.exceptions.*)
                    cell.record_failure(store, f"Ray task failed: {type(e).__name__}: {e}")
                if on_done is not None:
                    on_done(cell, cell.find(store))
    except BaseException:
        for ref in running:
            ray.cancel(ref, force=True)
        raise
