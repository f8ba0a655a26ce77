"""The `netlang` command line: version, help, dispatch, check, explain, exit codes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netlang import cli
from netlang.actions import check as check_command
from netlang.actions.table import COMMANDS as COMMANDS_TABLE
from netlang.compiler.lang.blocks import ACTIONS as CONFIG_ACTIONS

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "hello.net")
COMMANDS = ("train", "eval", "write", "edit", "run", "check", "explain", "inspect", "time", "graph", "export", "plot",
            "data")


def position_of(text: str) -> str:
    """`file:line:col` of the first occurrence of `text` in the example config."""
    for number, line in enumerate(Path(EXAMPLE).read_text().splitlines(), start=1):
        if text in line:
            return f"{EXAMPLE}:{number}:{line.index(text) + 1}"
    raise AssertionError(f"{text!r} not in the example")


@pytest.fixture(autouse=True)
def in_examples_directory(monkeypatch):
    # hello.net's data paths are relative to the working directory, as in CNTK.
    monkeypatch.chdir(Path(EXAMPLE).parent)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- version, help, dispatch ----------------------------------------------------------------------

def test_version_prints_version_and_numpy(capsys):
    import numpy

    import netlang

    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.splitlines()[0] == f"netlang {netlang.__version__}"
    assert f"numpy {numpy.__version__}" in out
    assert "cupy" in out and "mpi4py" in out


def test_help_lists_every_command(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in COMMANDS:
        assert f"\n    {name} " in out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example(capsys, name):
    code, out, _ = run(capsys, name, "-h")
    assert code == 0
    assert f"usage: netlang {name}" in out


@pytest.mark.parametrize("name", ["check", "explain"])
def test_built_commands_show_an_example(capsys, name):
    _, out, _ = run(capsys, name, "-h")
    assert f"example:\n  netlang {name} " in out


def test_unknown_command_is_usage_error_with_suggestion(capsys):
    code, _, err = run(capsys, "chek", EXAMPLE)
    assert code == 2
    assert "unknown command 'chek'" in err and "did you mean 'check'?" in err


def test_no_command_prints_help_and_is_usage_error(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "usage: netlang" in err


def test_missing_config_argument_is_usage_error(capsys):
    code, _, err = run(capsys, "check")
    assert code == 2 and "CONFIG" in err


# ---- the command table ---------------------------------------------------------------------------

def test_the_parser_is_built_from_the_table_each_command_once():
    names = [name for command in COMMANDS_TABLE for name in command.names]
    assert len(names) == len(set(names))
    assert tuple(command.name for command in COMMANDS_TABLE) == COMMANDS
    assert set(cli._subparsers(cli.build_parser()).choices) == set(names)


def test_each_cntk_action_is_run_by_one_command_and_is_a_name_the_config_language_accepts():
    actions = [action for command in COMMANDS_TABLE for action in command.actions]
    assert len(actions) == len(set(actions)) and set(actions) <= set(CONFIG_ACTIONS)
    assert {action: command.name for command in COMMANDS_TABLE for action in command.actions} == \
        {"train": "train", "test": "eval", "eval": "eval", "write": "write", "edit": "edit"}
    for command in COMMANDS_TABLE:
        assert bool(command.actions) == (command.block_runner is not None)


def test_run_names_an_action_no_command_runs_at_its_line(capsys, tmp_path):
    path = tmp_path / "dump.net"
    path.write_text('command = change\nchange = { action = "dumpnode" }\n')
    code, _, err = run(capsys, "run", str(path))
    assert code == 78 and f"{path}:2:12: config error: action 'dumpnode' of block 'change' is not available" in err
    assert "available: train, test, eval, write, edit" in err


# ---- options and overrides in any order --------------------------------------------------------------

def parsed(*argv):
    return cli.parse_command_line(cli.build_parser(), list(argv))


@pytest.mark.parametrize("argv", [("eval", "cfg.net", "--json", "modelPath=x"),
                                  ("eval", "--json", "cfg.net", "modelPath=x"),
                                  ("eval", "cfg.net", "modelPath=x", "--json"),
                                  ("test", "cfg.net", "--json", "modelPath=x")])
def test_options_and_overrides_come_in_any_order(argv):
    args = parsed(*argv)
    assert args.command.name == "eval" and args.config == "cfg.net"
    assert args.json and args.overrides == ("modelPath=x",)


def test_global_flags_may_follow_the_overrides():
    args = parsed("--debug", "train", "cfg.net", "SGD.maxEpochs=1", "--no-progress", "x=2", "-q")
    assert args.overrides == ("SGD.maxEpochs=1", "x=2") and args.no_progress and args.quiet == 1 and args.debug


def test_explain_takes_key_paths_and_options_between_them():
    args = parsed("explain", "cfg.net", "train.SGD", "--json", "command", "x=1")
    assert args.key_paths == ["train.SGD", "command"] and args.overrides == ("x=1",) and args.json


def test_a_word_that_is_no_override_is_a_usage_error(capsys):
    code, _, err = run(capsys, "check", EXAMPLE, "maxEpochs")
    assert code == 2 and "unexpected argument 'maxEpochs'" in err and "key=value" in err


def test_check_json_before_the_config_and_an_override_after_it(capsys):
    code, out, err = run(capsys, "check", "--json", EXAMPLE, "x=1", "train.SGD.maxEpochs=7")
    assert code == 0, err
    document = json.loads(out)
    assert document["actions"]["train"]["SGD"]["maxEpochs"] == 7


def test_python_dash_m_netlang_runs():
    result = subprocess.run([sys.executable, "-m", "netlang", "--version"], capture_output=True, text=True,
                            cwd=Path(EXAMPLE).parents[1], timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("netlang ")


# ---- check ---------------------------------------------------------------------------------------

def test_check_accepts_the_example(capsys):
    code, out, err = run(capsys, "check", EXAMPLE)
    assert code == 0, err
    assert "ok" in out and "train (train) -> test (test)" in out
    assert "train.SGD.learningRatesPerSample" in out and "0.01*2:0.005" in out


def test_check_json_is_one_json_document(capsys):
    code, out, _ = run(capsys, "check", EXAMPLE, "--json")
    document = json.loads(out)
    assert code == 0 and set(document) == {"config", "actions", "data"}
    assert document["data"]["train.reader"] == {"samples": 16, "streams": ["features", "labels"]}
    assert document["config"]["command"] == ["train", "test"]
    assert document["actions"]["train"]["SGD"]["maxEpochs"] == 3
    assert document["actions"]["test"]["minibatchSize"] == 64


def test_check_applies_overrides(capsys):
    code, out, _ = run(capsys, "check", EXAMPLE, "train.SGD.maxEpochs=7", "--json")
    assert code == 0 and json.loads(out)["actions"]["train"]["SGD"]["maxEpochs"] == 7


def test_check_global_flags_work_after_the_command(capsys):
    code, out, _ = run(capsys, "check", EXAMPLE, "--no-color", "-q")
    assert code == 0 and out.startswith("ok ") and "top level" not in out


def test_check_verbose_shows_defaults(capsys):
    _, out, _ = run(capsys, "-v", "check", EXAMPLE)
    assert "train.SGD.numMBsToShowResult" in out


def test_check_bad_config_exits_78(capsys, tmp_path):
    path = tmp_path / "bad.net"
    path.write_text(Path(EXAMPLE).read_text().replace("maxEpochs = 3", "maxEpochs = 0"))
    code, _, err = run(capsys, "check", str(path))
    assert code == 78 and "must be at least 1" in err


def test_check_prints_each_network_with_its_parameter_count(capsys):
    code, out, _ = run(capsys, "check", EXAMPLE, "--no-color")
    assert code == 0 and "network of train" in out and "train: 6 learnable parameters" in out
    assert "train.reader: read 16 samples (features, labels)" in out


def test_check_reads_data_unless_told_not_to(capsys, tmp_path):
    path = tmp_path / "hello.net"
    path.write_text(Path(EXAMPLE).read_text().replace("hello_train.ctf", "missing.ctf"))
    code, _, err = run(capsys, "check", str(path))
    assert code == 65 and "missing.ctf" in err
    code, _, _ = run(capsys, "check", str(path), "--no-data")
    assert code == 0


def test_internal_error_exits_70_without_traceback(capsys, monkeypatch):
    monkeypatch.setattr(check_command, "load_config", _raise(RuntimeError("boom")))
    code, _, err = run(capsys, "check", EXAMPLE)
    assert code == 70 and "internal error: RuntimeError: boom" in err and "Traceback" not in err


def test_internal_error_with_debug_shows_traceback(capsys, monkeypatch):
    monkeypatch.setattr(check_command, "load_config", _raise(RuntimeError("boom")))
    code, _, err = run(capsys, "--debug", "check", EXAMPLE)
    assert code == 70 and "Traceback" in err


def test_keyboard_interrupt_exits_130(capsys, monkeypatch):
    monkeypatch.setattr(check_command, "load_config", _raise(KeyboardInterrupt()))
    assert run(capsys, "check", EXAMPLE)[0] == 130


def _raise(exc):
    def fail(*args, **kwargs):
        raise exc
    return fail


# ---- explain -------------------------------------------------------------------------------------

def test_explain_shows_values_with_origins(capsys):
    code, out, _ = run(capsys, "explain", EXAMPLE)
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert code == 0
    assert lines["train.SGD.maxEpochs"].split()[1:] == ["3", position_of("maxEpochs = 3")]
    assert lines["train.SGD.numMBsToShowResult"].split()[1:] == ["10", "default"]
    assert lines["test.modelPath"].endswith(f"{position_of('modelPath =')} (from top level)")


def test_explain_selects_key_paths_case_insensitively(capsys):
    code, out, _ = run(capsys, "explain", EXAMPLE, "train.sgd.maxepochs", "command")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["train.SGD.maxEpochs", "command"]


def test_explain_says_what_an_unset_adam_beta1_means(capsys):
    code, out, _ = run(capsys, "explain", EXAMPLE, "train.SGD.adamBeta1")
    assert code == 0 and out.split() == ["train.SGD.adamBeta1", "(the", "momentum", "per", "minibatch)", "default"]


def test_explain_selects_a_block(capsys):
    _, out, _ = run(capsys, "explain", EXAMPLE, "train.reader.input")
    keys = [line.split()[0] for line in out.splitlines()]
    assert keys and all(k.startswith("train.reader.input.") for k in keys)


def test_explain_marks_overrides(capsys):
    _, out, _ = run(capsys, "explain", EXAMPLE, "train.SGD.maxEpochs", "train.SGD.maxEpochs=9")
    assert out.split() == ["train.SGD.maxEpochs", "9", "override"]


def test_explain_unknown_key_path_is_usage_error(capsys):
    code, _, err = run(capsys, "explain", EXAMPLE, "train.SGD.maxEpoch")
    assert code == 2 and "did you mean 'train.SGD.maxEpochs'" in err


def test_explain_json_maps_keys_to_value_and_origin(capsys):
    code, out, _ = run(capsys, "explain", EXAMPLE, "--json")
    document = json.loads(out)
    assert code == 0
    assert document["train.SGD.maxEpochs"] == {"value": 3, "origin": position_of("maxEpochs = 3")}
    assert document["train.SGD.clippingThresholdPerSample"] == {"value": "infinity", "origin": "default"}


def test_explain_yaml_file_is_the_resolved_config(capsys, tmp_path):
    target = tmp_path / "resolved.yaml"
    code, _, _ = run(capsys, "explain", EXAMPLE, "--yaml", str(target))
    resolved = yaml.safe_load(target.read_text())
    _, out, _ = run(capsys, "check", EXAMPLE, "--json", "--no-data")
    checked = json.loads(out)
    for action in checked["actions"].values():   # check adds the built networks to its report
        action.pop("parameters", None)
        action.pop("nodes", None)
        action.pop("memory", None)               # and what training them takes
    assert code == 0 and resolved == checked


def test_explain_yaml_dash_writes_stdout(capsys):
    code, out, _ = run(capsys, "explain", EXAMPLE, "--yaml", "-")
    assert code == 0 and yaml.safe_load(out)["actions"]["train"]["SGD"]["learningRatesPerSample"] == "0.01*2:0.005"


def test_no_color_environment_is_honoured(capsys, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")  # would make rich colour even when captured
    _, out, _ = run(capsys, "explain", EXAMPLE, "command")
    assert "\x1b[" not in out


def test_color_is_used_when_forced(capsys, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    _, out, _ = run(capsys, "explain", EXAMPLE, "command")
    assert "\x1b[" in out
    _, out, _ = run(capsys, "--no-color", "explain", EXAMPLE, "command")
    assert "\x1b[" not in out

