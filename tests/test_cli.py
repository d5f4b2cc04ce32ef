from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from beyondbp.cli import app
from beyondbp.runs import RunStore

runner = CliRunner()


def test_rules_lists_one_rule_per_row_starting_with_its_name():
    out = runner.invoke(app, ["rules"])
    assert out.exit_code == 0
    rows = [line.split()[0] for line in out.stdout.strip().splitlines()]
    assert "bp" in rows


def test_rules_name_shows_options_with_defaults():
    out = runner.invoke(app, ["rules", "bp"], env={"COLUMNS": "200"})
    assert out.exit_code == 0
    assert "optimizer" in out.stdout and "'adam'" in out.stdout and "0.001" in out.stdout


def test_train_prints_the_result_table_and_stores_the_run(tmp_path):
    store = tmp_path / "runs.sqlite"
    out = runner.invoke(
        app,
        [
            "train",
            "bp",
            "--data",
            "digits",
            "--net",
            "mlp:64",
            "--epochs",
            "3",
            "--lr",
            "3e-3",
            "--set",
            "optimizer=adamw",
            "--store",
            str(store),
            "--no-energy",
        ],
        env={"COLUMNS": "200"},
    )
    assert out.exit_code == 0, out.stdout
    for text in ("test accuracy", "train time", "peak memory", "energy", "GFLOP/s"):
        assert text in out.stdout
    listed = runner.invoke(app, ["runs", "list", "--store", str(store)], env={"COLUMNS": "200"})
    assert "finished" in listed.stdout and "digits" in listed.stdout
    exported = runner.invoke(app, ["runs", "export", "--format", "json", "--store", str(store)])
    (rec,) = json.loads(exported.stdout)
    assert rec["options"]["optimizer"] == "adamw" and rec["options"]["lr"] == 3e-3
    shown = runner.invoke(app, ["runs", "show", rec["id"][:12], "--store", str(store)])
    assert shown.exit_code == 0 and "git_commit" in shown.stdout
    dump = tmp_path / "runs.json"
    dump.write_text(exported.stdout)
    copy = tmp_path / "copy.sqlite"
    for added in ("added 1 of 1", "added 0 of 1"):  # a second import adds nothing
        out = runner.invoke(app, ["runs", "import", str(dump), "--store", str(copy)])
        assert out.exit_code == 0 and added in out.stdout, out.stdout
    assert json.loads(
        runner.invoke(app, ["runs", "export", "--format", "json", "--store", str(copy)]).stdout
    ) == [rec]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beyondbp.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_unknown_names_exit_2_with_the_valid_ones():
    out = _cli("train", "bp", "--data", "imagenet")
    assert out.returncode == 2 and "valid datasets: cifar10, delay-synth, digits" in out.stderr
    out = _cli("train", "nope")
    assert out.returncode == 2 and "valid rules:" in out.stderr and "bp" in out.stderr
    out = _cli("train", "bp", "--set", "colour=red")
    assert out.returncode == 2 and "valid options:" in out.stderr


@pytest.mark.slow
def test_bench_compares_rules(tmp_path):
    out = runner.invoke(
        app,
        [
            "bench",
            "--rules",
            "bp",
            "--nets",
            "mlp:32",
            "--seeds",
            "2",
            "--epochs",
            "2",
            "--store",
            str(tmp_path / "r.sqlite"),
            "--json",
        ],
    )
    assert out.exit_code == 0, out.stdout
    (row,) = json.loads(out.stdout)
    assert row["runs"] == 2 and row["time_ratio"] == 1.0 and row["delta_acc"] == 0.0


def test_a_grid_over_all_rules_leaves_out_rules_that_cannot_train_its_nets():
    from beyondbp.api import default_rules, plan_grid

    plain, why = default_rules(["mlp:256x2"], ["digits"])
    assert "bp" in plain and "ff" in plain and "noprop" not in plain
    assert not {"mezo", "zo-adam", "deep-ga", "es", "de", "de-init"} & set(plain)  # --rules only
    assert "cannot train net mlp:256x2" in why["noprop"] and "--rules" in why["mezo"]
    both, _ = default_rules(["mlp:256x2", "noprop:3"], ["digits"])
    assert "noprop" in both
    # inside the grid, the pairs that do not fit are left out, each with its reason
    plan = plan_grid(data="digits", nets=["mlp:256x2", "noprop:3"], seeds=[0])
    assert ("noprop", "noprop:3") in {(c.rule, c.net) for c in plan.cells}
    unfit = plan.skipped
    assert "noprop on digits, mlp:256x2" in unfit and "bp on digits, noprop:3" not in unfit
    # a population rule named on an episodic task fits; a gradient rule does not
    pop, why = default_rules(["mlp:8"], ["deceptive-maze"])
    assert "bp" not in pop and "episodic" in why["bp"]
    # spiking and equilibrium nets get their own rules (and bp where gradients reach), never
    # the layer-local rules, which train a BlockNet's blocks
    spiking, why = default_rules(["snn:32", "tempotron", "stdp:32"], ["poisson-digits"])
    assert {"bp", "bptt", "tempotron", "stdp"} <= set(spiking)
    assert not {"ff", "dfa", "drtp", "cafo", "mono-forward", "tpsgd"} & set(spiking)
    assert "cannot train net" in why["ff"]
    plan = plan_grid(data="poisson-digits", nets=["snn:32", "tempotron"], seeds=[0])
    assert "bp on poisson-digits, tempotron" in plan.skipped
    assert ("bp", "snn:32") in {(c.rule, c.net) for c in plan.cells}
    eq, _ = default_rules(["vf:32", "phys:scatter:32x2"], ["digits"])
    assert {"ghep", "phyll", "pat", "ff", "dfa"} <= set(eq) and "bptt" not in eq


def test_train_reports_robust_accuracy_with_attack_eps(tmp_path):
    out = runner.invoke(
        app,
        ["train", "convex-gated", "--data", "digits", "--net", "mlp:100", "--epochs", "5",
         "--attack-eps", "0.05", "--attack-steps", "5", "--store", str(tmp_path / "r.sqlite"),
         "--no-energy", "--no-progress"],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "FGSM (ε = 0.05, margin loss)" in out.output
    assert "PGD-5 (ε = 0.05, margin loss)" in out.output


def test_train_head_init_probe_is_stored(tmp_path):
    store = tmp_path / "r.sqlite"
    out = runner.invoke(
        app,
        ["train", "bp", "--data", "digits", "--net", "mlp:64", "--epochs", "1", "--max-steps",
         "1", "--head-init", "probe", "--store", str(store), "--no-energy", "--no-progress"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    (record,) = RunStore(store).list()
    assert record.config["head_init"] == "probe"
    assert record.metrics["head_probe_train_acc"] > 0.9
    bad = runner.invoke(app, ["train", "bp", "--head-init", "warm", "--no-progress", "--store",
                              str(tmp_path / "bad.sqlite")])  # fmt: skip
    assert bad.exit_code != 0 and "head_init" in bad.output + str(bad.exception)


def test_bench_with_a_preset_refuses_flags_it_cannot_honour():
    out = runner.invoke(app, ["bench", "--preset", "quickstart", "--rules", "bp"])
    assert out.exit_code != 0
    assert "--preset sets the rules" in (out.stdout + str(out.exception))


@pytest.mark.parametrize("net", ["mlp:0", "mlp:100x0", "cnn3:16-0-64", "gru:0"])
def test_impossible_net_specs_are_refused_before_training(net, tmp_path):
    out = runner.invoke(app, ["train", "bp", "--net", net, "--store", str(tmp_path / "r.sqlite")])
    assert out.exit_code != 0 and "zero width" in str(out.exception)
    assert not (tmp_path / "r.sqlite").exists() or not RunStore(tmp_path / "r.sqlite").list()


def test_user_text_is_printed_as_written():
    from beyondbp import cli

    with cli.console.capture() as cap:
        cli.console.print("mlp:[bold]x :smile: [/]")
    assert cap.get().strip() == "mlp:[bold]x :smile: [/]"


def test_bench_exits_non_zero_when_a_cell_failed(tmp_path):
    out = runner.invoke(
        app,
        ["bench", "--rules", "bp", "--data", "no-such-data", "--nets", "mlp:8", "--seeds", "1",
         "--epochs", "1", "--store", str(tmp_path / "r.sqlite")],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert out.exit_code == 1, out.output
    (record,) = RunStore(tmp_path / "r.sqlite").list()
    assert record.status == "failed" and "no-such-data" in record.error
