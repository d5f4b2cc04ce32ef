from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import beyondbp as bb
from beyondbp.api import reproduce, reproduce_markdown, summarize
from beyondbp.bench.grid import GridSpec, load_grid_file, record_key
from beyondbp.bench.presets import PaperNumber, Preset, get_preset, register_preset
from beyondbp.bench.report import PLOTS, write_report
from beyondbp.errors import BeyondBPError
from beyondbp.runs import RunRecord, RunStore

TINY = {"epochs": 2, "energy": False}


def _bench_cmd(store: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "beyondbp.cli",
        "bench",
        "--rules",
        "bp",
        "--nets",
        "mlp:16,mlp:16x2",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--store",
        str(store),
        "--device",
        "cpu",
        *extra,
    ]


@pytest.mark.slow
def test_killed_grid_restarts_without_lost_or_duplicated_cells(tmp_path):
    store_path = tmp_path / "runs.sqlite"
    parent = subprocess.Popen(
        _bench_cmd(store_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the grid is under way, then kill its parent
        if store_path.exists() and any(r.status == "finished" for r in RunStore(store_path).list()):
            break
        time.sleep(0.2)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    before = RunStore(store_path).list()
    assert 1 <= sum(r.status == "finished" for r in before) < 4
    done_before = {r.id: r.updated for r in before if r.status == "finished"}

    again = subprocess.run(
        _bench_cmd(store_path, "--json"), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    runs = RunStore(store_path).list()
    assert len(runs) == 4 and len({r.id for r in runs}) == 4  # every cell exactly once
    assert len({record_key(r) for r in runs}) == 4
    assert all(r.status == "finished" for r in runs)
    for r in runs:  # finished cells were not recomputed
        if r.id in done_before:
            assert r.updated == done_before[r.id]


@pytest.mark.slow
def test_grid_goes_on_past_a_failing_cell_and_records_the_error(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    grid = GridSpec(
        rules=["bp"],
        datasets=["digits", "mnist"],
        nets=["mlp:8"],
        seeds=[0],
        config=TINY,
        data_dir=str(tmp_path / "no-data"),
    )
    result = bb.bench(grid, store=store)
    status = {r.dataset: r for r in result.records}
    assert status["digits"].status == "finished"
    assert status["mnist"].status == "failed" and "not found" in status["mnist"].error
    row = next(r for r in result.rows if r["dataset"] == "mnist")
    assert row["runs"] == 0 and row["not_finished"] == 1 and "not found" in row["errors"][0]
    # a second run skips both: finished and failed cells are not recomputed
    again = bb.bench(grid, store=store)
    assert [r.updated for r in again.records] == [r.updated for r in result.records]


def test_grid_files_yaml_and_toml(tmp_path):
    (tmp_path / "g.yaml").write_text(
        "rules: [bp]\nnets: [mlp:8]\nseeds: [0, 1]\noptions: {bp: {lr: 0.01}}\n"
        "config: {epochs: 3}\n"
    )
    (tmp_path / "g.toml").write_text(
        'rules = ["bp"]\nnets = ["mlp:8"]\nseeds = [0, 1]\n[options.bp]\nlr = 0.01\n'
        "[config]\nepochs = 3\n"
    )
    a, b = load_grid_file(tmp_path / "g.yaml"), load_grid_file(tmp_path / "g.toml")
    assert a == b and len(a.cells()) == 2 and a.cells()[1].config == {"epochs": 3, "seed": 1}
    (tmp_path / "bad.yaml").write_text("rules: [bp]\ncolour: red\n")
    with pytest.raises(BeyondBPError, match="colour"):
        load_grid_file(tmp_path / "bad.yaml")


def test_a_run_started_by_hand_counts_as_the_grid_cell(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    by_hand = bb.train(
        "bp", "digits", "mlp:8", seed=0, store=store, device="cpu", progress=False, **TINY
    )
    result = bb.bench(rules=["bp"], nets=["mlp:8"], seeds=[0], store=store, device="cpu", **TINY)
    assert [r.id for r in result.records] == [by_hand.record.id]


def _record(rule: str, acc: float, time_s: float, seed: int, net: str = "mlp:8") -> RunRecord:
    return RunRecord(
        rule=rule,
        dataset="digits",
        net=net,
        seed=seed,
        status="finished",
        metrics={
            "test_acc": acc,
            "train_time_s": time_s,
            "energy_wh": time_s / 10,
            "peak_step_bytes": 1000 * time_s,
            "energy_label": "estimated",
        },
        history=[
            {"epoch": 1, "val_acc": acc - 0.1, "train_time_s": time_s / 2},
            {"epoch": 2, "val_acc": acc, "train_time_s": time_s},
        ],
    )


def test_summary_statistics_and_ratios_against_bp():
    rows = summarize(
        [
            _record("bp", 0.90, 10, 0),
            _record("bp", 0.92, 14, 1),
            _record("other", 0.95, 36, 0),
            _record("other", 0.93, 36, 1),
        ],
        target_acc=0.84,
    )
    bp, other = (next(r for r in rows if r["rule"] == n) for n in ("bp", "other"))
    assert bp["test_acc"] == pytest.approx(0.91) and bp["test_acc_std"] == pytest.approx(
        0.01414, abs=1e-4
    )
    assert other["delta_acc"] == pytest.approx(0.03)
    assert other["time_ratio"] == pytest.approx(3.0) and other["energy_ratio"] == pytest.approx(3.0)
    assert other["memory_ratio"] == pytest.approx(3.0)
    # val acc 0.84 is first reached at epoch 2 by both bp runs (10 s and 14 s), and by the
    # other rule at epoch 1 (0.85: 18 s) and epoch 2 (36 s)
    assert bp["reached_target"] == 2 and bp["time_to_target_s"] == pytest.approx((10 + 14) / 2)
    assert other["time_to_target_s"] == pytest.approx((18 + 36) / 2)


def test_a_rule_under_its_own_budget_is_compared_with_bp_under_bp_s():
    other = _record("other", 0.95, 30, 0)
    other.config = {"batch_size": 100}  # another protocol than bp's: no same-budget bp exists
    rows = summarize([_record("bp", 0.90, 10, 0), other])
    row = next(r for r in rows if r["rule"] == "other")
    assert row["baseline"] == "bp, its own budget" and row["time_ratio"] == pytest.approx(3.0)
    same = summarize([_record("bp", 0.90, 10, 0), _record("other", 0.95, 20, 0)])
    assert next(r for r in same if r["rule"] == "other")["baseline"] == "bp, same budget"


def test_the_baseline_is_a_parameter_of_the_ratios_and_the_table():
    from beyondbp.bench.report import rule_colours, table_header, table_rows

    rows = summarize([_record("bp", 0.90, 10, 0), _record("dfa", 0.80, 20, 0)], baseline="dfa")
    bp = next(r for r in rows if r["rule"] == "bp")
    assert bp["delta_acc"] == pytest.approx(0.10) and bp["time_ratio"] == pytest.approx(0.5)
    assert "Δacc vs dfa" in table_header("dfa") and "time ×dfa" in table_header("dfa")
    assert [r[0] for r in table_rows(rows, "dfa")] == ["dfa", "bp"]  # the baseline first
    assert list(rule_colours(["bp", "dfa"], "dfa")) == ["dfa", "bp"]


def test_paper_numbers_can_belong_to_one_variant_of_a_rule():
    preset = Preset(
        name="variants", description="", source="", grids=(),
        paper={("cafo", "mnist", "cnn3", "block_training=rand"): PaperNumber(98.62),
               ("cafo", "mnist", "cnn3", "block_training=dfa"): PaperNumber(99.02),
               ("cafo", "mnist", "cnn3", "block_training=dfa, loss=mse"): PaperNumber(97.0),
               ("bp", "mnist", "cnn3"): PaperNumber(98.94)},
    )  # fmt: skip
    number = preset.paper_number
    assert number("cafo", "mnist", "cnn3", {"block_training": "rand"}).test_acc == 98.62
    assert (
        number("cafo", "mnist", "cnn3", {"block_training": "dfa", "loss": "ce"}).test_acc == 99.02
    )
    # the key naming the most matching options wins
    assert number("cafo", "mnist", "cnn3", {"block_training": "dfa", "loss": "mse"}).test_acc == 97
    assert number("bp", "mnist", "cnn3", {"lr": 0.1}).test_acc == 98.94
    assert number("cafo", "fashion-mnist", "cnn3", {"block_training": "rand"}) is None


def test_spyra2025_preset_has_a_paper_number_for_every_rule_of_the_paper():
    preset = get_preset("spyra2025")
    cells = [c for g in preset.grids for c in g.cells()]
    missing = {
        (c.rule, c.dataset, c.net)
        for c in cells
        if preset.paper_number(c.rule, c.dataset, c.net, c.full_options()) is None
    }
    # DFA is not in the paper's table, nor BP on FF's MNIST net (3x1000)
    assert missing == {
        ("dfa", "fashion-mnist", "mlp:1000x2"),
        ("dfa", "mnist", "mlp:1000x2"),
        ("bp", "mnist", "mlp:1000x3"),
    }


def test_tables_order_nets_by_the_numbers_in_their_names():
    from beyondbp.bench.grid import natural_key

    nets = ["noprop:20", "noprop:ct", "noprop:2", "mlp:1000x8", "noprop:10", "mlp:1000x2"]
    assert sorted(nets, key=natural_key) == [
        "mlp:1000x2", "mlp:1000x8", "noprop:2", "noprop:10", "noprop:20", "noprop:ct",
    ]  # fmt: skip


def test_every_preset_cell_has_valid_options_config_and_net():
    from beyondbp.bench.presets import PRESETS
    from beyondbp.rules import get_rule

    for preset in PRESETS.values():
        for grid in preset.grids:
            for c in grid.cells():
                c.full_options(), c.full_config()  # raise on an unknown or invalid setting
                assert get_rule(c.rule).works_on(c.net), (preset.name, c.rule, c.net)


@pytest.mark.slow
def test_reproduce_puts_the_paper_next_to_ours(tmp_path):
    register_preset(Preset(
        name="toy-paper", description="bp on digits", source="a toy paper",
        grids=(GridSpec(rules=["bp"], datasets=["digits"], nets=["mlp:16"], seeds=[0, 1],
                        config={"epochs": 5, "energy": False}),),
        paper={("bp", "digits", "mlp:16"): PaperNumber(99.9, 1.0)},
        quick={"epochs": 1},
    ))  # fmt: skip
    res = reproduce("toy-paper", store=tmp_path / "runs.sqlite")
    (row,) = res.rows
    assert row["runs"] == 2 and row["paper_acc"] == 99.9
    assert row["gap"] == pytest.approx(100 * row["test_acc"] - 99.9)
    assert row["verdict"] == "ours below"
    md = reproduce_markdown(res)
    assert "| digits | mlp:16 | bp | 2 |" in md and "ours below" in md and "a toy paper" in md
    stored = reproduce("toy-paper", store=tmp_path / "runs.sqlite", run=False)
    assert [r.id for r in stored.records] == [r.id for r in res.records]
    # --out DIR: the table and the runs with their provenance, in one place; the runs import
    from beyondbp.api import write_reproduction
    from beyondbp.runs import records_from_json

    md, js = write_reproduction(res, tmp_path / "out", "beyondbp reproduce toy-paper")
    assert md.name == "toy-paper.md" and "Command: `beyondbp reproduce toy-paper`" in md.read_text()
    assert "| digits | mlp:16 | bp | 2 |" in md.read_text()
    assert [r.id for r in records_from_json(js)] == [r.id for r in res.records]
    assert json.loads(js.read_text())["environment"]["git_commit"]
    # a long record is written gzipped, whole, and imports the same
    rp = importlib.import_module("beyondbp.bench.reproduce")  # the module, not the function

    long = rp.GZIP_ABOVE
    try:
        rp.GZIP_ABOVE = 10
        md, gz = write_reproduction(res, tmp_path / "out", "beyondbp reproduce toy-paper")
    finally:
        rp.GZIP_ABOVE = long
    assert gz.name == "toy-paper.json.gz" and not js.exists()
    assert records_from_json(gz) == records_from_json(tmp_path / "out" / "toy-paper.json.gz")
    assert [r.history for r in records_from_json(gz)] == [r.history for r in res.records]
    # scripts read the rows by the plain name, whichever was written
    assert rp.read_reproduction(js)["rows"] == json.loads(json.dumps(res.rows, default=str))
    with pytest.raises(bb.BeyondBPError, match="no results file"):
        rp.read_reproduction(tmp_path / "out" / "missing.json")
    # cells not run yet still get their row: no runs, the paper's number, "not run"
    (empty,) = reproduce("toy-paper", store=tmp_path / "empty.sqlite", run=False).rows
    assert (empty["runs"], empty["not_finished"], empty["paper_acc"]) == (0, 0, 99.9)
    assert empty["verdict"] == "not run" and empty["test_acc"] is None
    assert "| digits | mlp:16 | bp | 0 | - | 99.9 |" in reproduce_markdown(
        reproduce("toy-paper", store=tmp_path / "empty.sqlite", run=False)
    )
    quick = reproduce("toy-paper", quick=True, store=tmp_path / "runs.sqlite")
    assert quick.rows[0]["runs"] == 1 and quick.records[0].metrics["epochs"] == 1
    assert "Quick run" in reproduce_markdown(quick)
    # --device cpu is the preset's own cell; a time budget makes cells of its own
    same = reproduce("toy-paper", store=tmp_path / "runs.sqlite", run=False, device="cpu")
    assert [r.id for r in same.records] == [r.id for r in res.records]
    budget = reproduce("toy-paper", store=tmp_path / "runs.sqlite", seeds=[0], max_seconds=60)
    assert budget.records[0].id not in {r.id for r in res.records}
    assert budget.records[0].config["max_seconds"] == 60


@pytest.fixture(scope="module")
def report_store(tmp_path_factory) -> RunStore:
    store = RunStore(tmp_path_factory.mktemp("report") / "runs.sqlite")
    bb.bench(
        rules=["bp"],
        nets=["mlp:16x2", "mlp:16x4", "mlp:16x8"],
        seeds=[0],
        store=store,
        epochs=2,
        device="cpu",
    )
    return store


@pytest.mark.slow
def test_html_report_is_self_contained_and_has_every_plot(report_store, tmp_path):
    paths = write_report(report_store, tmp_path / "report")
    page = paths["html"].read_text()
    assert "://" not in page  # no external URL of any scheme (":" is not base64)
    assert "<link" not in page and "<script" not in page
    assert page.count('src="data:image/png;base64,') == len(PLOTS)
    for name in PLOTS:
        assert f'alt="{name}"' in page
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 5000
    md = paths["md"].read_text()
    assert "| bp | digits | mlp:16x2 |" in md
    assert "(estimated)" in md or "(measured)" in md


def test_report_renders_in_headless_chromium(report_store, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium (.ci/run installs it)")
        pytest.skip("no chromium on this machine")
    paths = write_report(report_store, tmp_path / "report")
    shot = tmp_path / "shot.png"
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2600",
         f"--screenshot={shot}", paths["html"].resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.is_file(), out.stderr
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1200, 2600)
    # the plots were drawn: many distinct grey levels, not a blank page
    assert sum(1 for count in img.histogram() if count) > 50


@pytest.mark.slow
def test_a_trial_whose_tune_was_killed_is_failed_retried_and_its_run_interrupted(tmp_path):
    import optuna
    from optuna.storages import RetryFailedTrialCallback

    from beyondbp.bench.tune import tune

    store_path, storage = tmp_path / "runs.sqlite", f"sqlite:///{tmp_path / 'optuna.sqlite'}"
    cmd = [sys.executable, "-m", "beyondbp.cli", "tune", "bp", "--trials", "1", "--net", "mlp:16",
           "--epochs", "100000", "--patience", "100000", "--storage", storage, "--study", "s",
           "--store", str(store_path), "--device", "cpu", "--heartbeat", "1"]  # fmt: skip
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # the trial's run has trained an epoch
        runs = RunStore(store_path).list() if store_path.exists() else []
        if runs and runs[0].history:
            break
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    (killed,) = optuna.load_study(study_name="s", storage=storage).trials
    assert killed.state == optuna.trial.TrialState.RUNNING  # left so by the kill
    time.sleep(2.5)  # two missed heartbeats: stale
    study = tune("bp", "digits", "mlp:16", 1, storage=storage, study_name="s",
                 store=RunStore(store_path), heartbeat=1, epochs=1, device="cpu")  # fmt: skip
    killed, retry = study.trials
    assert killed.state == optuna.trial.TrialState.FAIL
    assert RetryFailedTrialCallback.retried_trial_number(retry) == killed.number
    assert retry.params == killed.params and retry.state == optuna.trial.TrialState.COMPLETE
    runs = {r.id: r.status for r in RunStore(store_path).list()}
    assert runs == {
        killed.user_attrs["run_id"]: "interrupted",
        retry.user_attrs["run_id"]: "finished",
    }


@pytest.mark.slow
def test_tune_resumes_a_killed_study(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.sqlite'}"
    cmd = [
        sys.executable,
        "-m",
        "beyondbp.cli",
        "tune",
        "bp",
        "--trials",
        "6",
        "--epochs",
        "4",
        "--net",
        "mlp:16",
        "--storage",
        storage,
        "--study",
        "s",
        "--store",
        str(tmp_path / "runs.sqlite"),
        "--device",
        "cpu",
        "--heartbeat",
        "1",
    ]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    finished = []
    while time.time() < deadline and first.poll() is None:
        try:
            finished = optuna.load_study(study_name="s", storage=storage).get_trials(
                states=(optuna.trial.TrialState.COMPLETE,)
            )
        except KeyError:
            finished = []
        if len(finished) >= 2:
            break
        time.sleep(0.3)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert 2 <= len(finished) < 6
    kept = {t.number: (t.params, t.value) for t in finished}

    out = tmp_path / "best.json"
    again = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="s", storage=storage)
    done = study.get_trials(
        states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    assert len(done) >= 6
    for t in study.trials:  # the trials finished before the kill are kept as they were
        if t.number in kept:
            assert (t.params, t.value) == kept[t.number]
    import json

    best = json.loads(out.read_text())
    assert set(best["bp"]) >= {"lr", "weight_decay", "optimizer"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "beyondbp.cli",
            "train",
            "bp",
            "--net",
            "mlp:16",
            "--epochs",
            "1",
            "--options",
            str(out),
            "--store",
            str(tmp_path / "runs.sqlite"),
            "--no-energy",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    (last,) = [r for r in RunStore(tmp_path / "runs.sqlite").list() if not r.id.startswith("tune")]
    assert last.options["lr"] == best["bp"]["lr"]


@pytest.mark.slow
def test_sigterm_stops_the_grid_and_its_running_cell_saves(tmp_path):
    store_path = tmp_path / "runs.sqlite"
    cmd = [sys.executable, "-m", "beyondbp.cli", "bench", "--rules", "bp", "--nets", "mlp:16",
           "--seeds", "3", "--epochs", "100000", "--patience", "100000", "--store",
           str(store_path), "--device", "cpu"]  # fmt: skip
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the first cell has trained a few epochs
        runs = RunStore(store_path).list() if store_path.exists() else []
        if runs and len(runs[0].history) >= 3:
            break
        time.sleep(0.2)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 130
    (run,) = RunStore(store_path).list()  # no other cell was started
    assert run.status == "interrupted"
    ckpt = RunStore(store_path).files / "checkpoints" / run.id / "last.pt"
    assert ckpt.is_file()


@pytest.mark.slow
def test_ctrl_c_in_a_cell_s_first_epoch_ends_it_interrupted_and_the_grid_with_130(tmp_path):
    # a terminal's Ctrl-C goes to the whole foreground process group: here, killpg(SIGINT)
    store_path = tmp_path / "runs.sqlite"
    cmd = [sys.executable, "-m", "beyondbp.cli", "bench", "--rules", "bp", "--nets", "mlp:512x4",
           "--seeds", "1", "--epochs", "3", "--batch-size", "1", "--store", str(store_path),
           "--device", "cpu", "--no-energy"]  # fmt: skip
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:  # the cell is in its first epoch: running, no epoch done
        runs = RunStore(store_path).list() if store_path.exists() else []
        if runs and runs[0].status == "running" and not runs[0].history:
            break
        time.sleep(0.05)
    os.killpg(parent.pid, signal.SIGINT)
    assert parent.wait(timeout=60) == 130
    err = parent.stderr.read().decode()
    assert "interrupted" in err and "Aborted" not in err
    (run,) = RunStore(store_path).list()
    assert run.status == "interrupted", (run.status, run.error)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    (run,) = RunStore(store_path).list()
    assert run.status == "finished" and run.metrics["epochs"] == 3


@pytest.mark.slow
def test_ray_backend_runs_the_grid_like_local_processes(tmp_path):
    ray = pytest.importorskip("ray")
    grid = GridSpec(rules=["bp"], datasets=["digits"], nets=["mlp:8"], seeds=[0, 1], config=TINY)
    local = bb.bench(grid, store=RunStore(tmp_path / "local.sqlite"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        seen = []
        store = RunStore(tmp_path / "ray.sqlite")
        on_ray = bb.bench(grid, store=store, backend="ray", jobs=2,
                          on_done=lambda c, r: seen.append((c.seed, r.status)))  # fmt: skip
        assert sorted(seen) == [(0, "finished"), (1, "finished")]
        # the same cells, the same seeded runs: identical accuracies to the local grid's
        acc = {r.seed: r.metrics["test_acc"] for r in on_ray.records}
        assert acc == {r.seed: r.metrics["test_acc"] for r in local.records}
        # finished cells are not run again on the cluster either
        again = bb.bench(grid, store=store, backend="ray")
        assert [r.updated for r in again.records] == [r.updated for r in on_ray.records]
    finally:
        ray.shutdown()
    with pytest.raises(BeyondBPError, match="unknown grid backend"):
        bb.bench(grid, store=RunStore(tmp_path / "x.sqlite"), backend="dask")


def test_reproduce_shows_a_failed_cell_and_retries_it(tmp_path):
    register_preset(Preset(
        name="toy-missing", description="data that is not there", source="a toy paper",
        grids=(GridSpec(rules=["bp"], datasets=["no-such-data"], nets=["mlp:8"], seeds=[0],
                        config={"epochs": 1, "energy": False}),),
        paper={("bp", "no-such-data", "mlp:8"): PaperNumber(90.0)},
    ))  # fmt: skip
    first = reproduce("toy-missing", store=tmp_path / "runs.sqlite")
    (row,) = first.rows
    assert row["verdict"].startswith("failed: ") and "no-such-data" in row["verdict"]
    # a cell without a paper number that has not run says so too
    register_preset(Preset(
        name="toy-unrun", description="not run yet", source="ours",
        grids=(GridSpec(rules=["bp"], datasets=["digits"], nets=["mlp:8"], seeds=[0],
                        config={"epochs": 1, "energy": False}),),
    ))  # fmt: skip
    (ghost,) = reproduce("toy-unrun", store=tmp_path / "runs.sqlite", run=False).rows
    assert ghost["runs"] == 0 and ghost["verdict"] == "not run"
    (before,) = first.records
    again = reproduce("toy-missing", store=tmp_path / "runs.sqlite")  # retried, not skipped
    assert again.records[0].updated > before.updated


def test_a_preset_tables_its_metric_extra_columns_and_a_solved_bar(tmp_path):
    # robust accuracy as a column, and "solved" = above the task's floor (its chance level)
    register_preset(Preset(
        name="toy-robust", description="bp on 3s and 8s, attacked", source="ours",
        grids=(GridSpec(rules=["bp"], datasets=["digits:3,8"], nets=["mlp:16"], seeds=[0, 1],
                        config={"epochs": 2, "energy": False, "attack_eps": 0.05,
                                "attack_steps": 2}),),
        columns={"test_pgd_acc": "PGD %"}, solved_at={"digits:3,8": "chance"},
    ))  # fmt: skip
    res = reproduce("toy-robust", store=tmp_path / "runs.sqlite")
    (row,) = res.rows
    assert row["solved_at"] == pytest.approx(100 * 37 / 72, abs=2)  # the larger class's share
    assert row["solved"] == 2 and 0 <= row["test_pgd_acc"] <= row["test_acc"]
    md = reproduce_markdown(res, notes=["What I saw."])
    assert "| ours: test acc % | PGD % | paper % |" in md and "What I saw." in md
    pgd = f"{100 * row['test_pgd_acc']:.2f} ± {100 * row['test_pgd_acc_std']:.2f}"
    assert f"| {pgd} | - | - | no paper number | 2/2 (≥ {row['solved_at']:g}) |" in md


@pytest.mark.slow
def test_a_preset_scored_by_return_tables_returns():
    register_preset(Preset(
        name="toy-rl", description="Deep GA on the maze", source="ours", metric="test_return",
        grids=(GridSpec(rules=["deep-ga"], datasets=["deceptive-maze"], nets=["mlp:8"],
                        seeds=[0], options={"deep-ga": {"population": 20, "truncation": 5, "elite_evals": 1}},
                        config={"epochs": 1, "max_steps": 2, "batch_size": 1, "energy": False,
                                "patience": None}),),
        solved_at={"deceptive-maze": -0.5},
    ))  # fmt: skip
    res = reproduce("toy-rl", store=False)
    (row,) = res.rows
    assert row["score"] == row["test_return"] < -0.5 and row["solved"] == 0
    md = reproduce_markdown(res)
    assert "| ours: test return | paper | gap | verdict | solved |" in md
    assert f"| {row['test_return']:.2f} ± 0.00 |" in md and "| 0/1 (≥ -0.5) |" in md


def test_benchmark_results_are_written_with_their_provenance(tmp_path, monkeypatch):
    from beyondbp.bench.results import write_result

    monkeypatch.setenv("BEYONDBP_RESULTS", str(tmp_path))  # a dry run: not benchmarks/results
    md, js = write_result("speed", ["# Speed", "", "| a |", "|---|", "| 1 |"], {"a": 1},
                          command="python benchmarks/speed.py")  # fmt: skip
    assert md.parent == tmp_path and md.read_text().startswith("# Speed\n")
    assert "Command: `python benchmarks/speed.py`" in md.read_text()
    record = json.loads(js.read_text())
    assert record["a"] == 1 and record["command"] == "python benchmarks/speed.py"
    assert record["environment"]["torch"] and record["environment"]["git_commit"]
    (only_md,) = write_result("rows", ["# Rows"], folder=tmp_path / "x")
    assert only_md == tmp_path / "x" / "rows.md"


def test_two_stores_in_one_folder_keep_their_side_files_apart(tmp_path):
    a, b = RunStore(tmp_path / "a.sqlite"), RunStore(tmp_path / "b.sqlite")
    grid = GridSpec(rules=["bp"], datasets=["digits"], nets=["mlp:8"], seeds=[0], config=TINY)
    ra, rb = bb.bench(grid, store=a).records[0], bb.bench(grid, store=b).records[0]
    assert ra.id == rb.id  # the same cell has the same id in both stores
    assert a.checkpoint_dir(ra.id) != b.checkpoint_dir(rb.id)
    assert (a.checkpoint_dir(ra.id) / "last.pt").is_file()
    assert (b.checkpoint_dir(rb.id) / "last.pt").is_file()
    assert {p.name for p in tmp_path.iterdir()} == {"a.sqlite", "a_files", "b.sqlite", "b_files"}
    assert {p.name for p in (tmp_path / "a_files").iterdir()} >= {"checkpoints", "locks", "logs"}


def test_folds_give_each_seed_its_own_split_and_the_repeats_share_one_setup():
    from beyondbp.bench.grid import setup_key

    grid = GridSpec(rules=["bp"], datasets=["cora_ml"], nets=["gcn:8x1"], seeds=[0, 3],
                    folds=True, config={"epochs": 2})  # fmt: skip
    cells = grid.cells()
    assert [(c.config["seed"], c.config["data_seed"]) for c in cells] == [(0, 0), (3, 3)]
    assert cells[0].key != cells[1].key  # two cells, not one run twice
    runs = [RunRecord(rule="bp", dataset="cora_ml", net="gcn:8x1", seed=c.seed, data_seed=c.seed,
                      options={}, config=c.config) for c in cells]  # fmt: skip
    assert setup_key(runs[0]) == setup_key(runs[1])  # one row of the table, over the folds
    plain = GridSpec(rules=["bp"], datasets=["digits"], nets=["mlp:8"], seeds=[1]).cells()[0]
    assert "data_seed" not in plain.config
