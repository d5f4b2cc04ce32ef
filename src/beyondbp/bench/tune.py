"""Hyperparameter search with Optuna: TPE sampler, median pruner, the rule's declared search space.

Studies live in an Optuna storage (SQLite next to the run store by default, or any Optuna
storage URL such as PostgreSQL for studies shared by several workers), so a killed study resumes
with its finished trials. Every trial is also an ordinary stored run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from beyondbp.errors import BeyondBPError
from beyondbp.rules import get_rule
from beyondbp.rules.base import Categorical, Distribution, IntUniform, LogUniform, Uniform
from beyondbp.runs import RunStore


def suggest(trial: Any, name: str, dist: Distribution) -> Any:
    """Map a rule's search-space declaration to an Optuna suggestion."""
    if isinstance(dist, LogUniform):
        return trial.suggest_float(name, dist.low, dist.high, log=True)
    if isinstance(dist, Uniform):
        return trial.suggest_float(name, dist.low, dist.high)
    if isinstance(dist, IntUniform):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    if isinstance(dist, Categorical):
        return trial.suggest_categorical(name, list(dist.choices))
    raise TypeError(f"unknown distribution {dist!r}")


def tune(
    rule: str,
    data: str = "digits",
    net: str = "mlp:1000x2",
    trials: int = 20,
    *,
    options: Mapping[str, Any] | None = None,
    space: Mapping[str, Distribution] | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    metric: str = "val_acc",
    data_dir: str | Path | None = None,
    store: str | Path | RunStore | None = None,
    seed: int = 0,
    heartbeat: float = 60.0,
    **config: Any,
) -> Any:
    """Search the rule's options to maximise ``val_acc`` (or minimise ``val_loss``) until the
    study has ``trials`` finished (complete or pruned) trials; return the ``optuna.Study``.

    ``options`` are fixed (not searched); ``space`` replaces the rule's declared search space.
    A running trial beats every ``heartbeat`` seconds; one silent for two beats (its process
    was killed) is failed and retried with the same options when a study starts, and its run
    in the store is marked ``interrupted``.
    """
    import optuna

    from beyondbp import runner

    rule_cls = get_rule(rule)
    space = dict(space if space is not None else rule_cls.search_space)
    fixed = dict(options or {})
    space = {k: v for k, v in space.items() if k not in fixed}
    if not space:
        raise BeyondBPError(f"rule {rule!r} declares no search space; pass one")
    run_store = store if isinstance(store, RunStore) else RunStore(store)
    if storage is None:
        legacy = run_store.path.parent / "optuna.sqlite"  # where stores kept it before
        path = legacy if legacy.is_file() else run_store.files / "optuna.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{path}"
    study_name = study_name or f"{rule}.{data}.{net}"
    direction = "minimize" if metric == "val_loss" else "maximize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from optuna.storages import RDBStorage, RetryFailedTrialCallback

    rdb = RDBStorage(
        storage,
        heartbeat_interval=max(1, round(heartbeat)),
        grace_period=max(2, round(2 * heartbeat)),
        failed_trial_callback=RetryFailedTrialCallback(max_retry=3),
    )
    study = optuna.create_study(
        storage=rdb,
        study_name=study_name,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        load_if_exists=True,
    )

    def objective(trial: optuna.Trial) -> float:
        opts = {**fixed, **{k: suggest(trial, k, d) for k, d in space.items()}}

        def report(row: dict[str, Any]) -> str | None:
            value = row.get(metric)
            if value is None:
                return None
            trial.report(value, row["epoch"] - 1)
            return "pruned by Optuna's median pruner" if trial.should_prune() else None

        run_id = f"tune.{study_name}.{trial.number}".replace(":", "_")
        trial.set_user_attr("run_id", run_id)  # before training: a killed trial names its run
        result = runner.train(
            rule,
            data,
            net,
            options=opts,
            data_dir=data_dir,
            store=run_store,
            run_id=run_id,
            callbacks=[report],
            **{"progress": False, **config},
        )
        if result.record.status != "finished":
            raise optuna.TrialPruned(f"run {result.record.status}")
        if result.metrics.get("stop_reason", "").startswith("pruned"):
            raise optuna.TrialPruned()
        return float(result.metrics[metric])

    _fail_stale_trials(study, run_store)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    while (done := len(study.get_trials(states=finished))) < trials:
        study.optimize(objective, n_trials=trials - done)
    return study


def _fail_stale_trials(study: Any, store: RunStore) -> None:
    """Fail (and so retry) the trials whose process died, and mark their runs interrupted."""
    import optuna

    optuna.storages.fail_stale_trials(study)
    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    ids = {t.user_attrs.get("run_id") for t in failed}
    for record in store.list() if failed else []:
        if record.id in ids and record.status == "running":
            record.status = "interrupted"
            record.error = "its tune process died (no heartbeat); the trial was retried"
            store.save(record)


def best_options(study: Any, rule: str, fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{rule: options}`` of the best trial: feed it to ``train --options`` or a grid file."""
    return {rule: {**dict(fixed or {}), **study.best_trial.params}}


def write_options(path: str | Path, options: dict[str, dict[str, Any]]) -> None:
    Path(path).write_text(json.dumps(options, indent=1) + "\n")


def read_options(path: str | Path, rule: str | None = None) -> dict[str, Any]:
    """Options from a JSON or YAML file: ``{rule: {...}}`` (as ``tune`` writes) or flat."""
    path = Path(path)
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else __import__("yaml").safe_load(text)
    except Exception as e:
        raise BeyondBPError(f"cannot read options file {path}: {e}") from e
    if not isinstance(data, dict):
        raise BeyondBPError(f"options file {path} must hold a mapping")
    if rule is not None and isinstance(data.get(rule), dict):
        return data[rule]
    return data
