"""Acceptance of the front end's errors: every kind reaches the user as `file:line:col`, exit 78.

Each test writes a small config, runs `netlang check` through `netlang.cli.main`, and asserts the
exact position in stderr. In BASE, the value of `maxEpochs` starts at line 5, column 21.
"""
from __future__ import annotations

import io

from rich.console import Console

from netlang import cli
from netlang.errors import ConfigError, DataError, DataPosition, Span, format_error, render_error
from netlang.runtime.distributed.launch import failure_message

BASE = """command = train
train = {
    network = { x = Input{2} ; ce = ReduceSum(x) ; criterionNodes = (ce) }
    SGD = {
        maxEpochs = MAX_EPOCHS
        learningRatesPerMB = 0.1
    }
    reader = { file = "d.ctf" }
}
"""


def write(tmp_path, text: str, name: str = "cfg.net") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def config_with(tmp_path, max_epochs: str, before: str = "") -> str:
    return write(tmp_path, before + BASE.replace("MAX_EPOCHS", max_epochs))


def check(capsys, path: str, *extra):
    code = cli.main(["check", path, *extra])
    out, err = capsys.readouterr()
    return code, err


def test_valid_base_config_passes(capsys, tmp_path):
    code, err = check(capsys, config_with(tmp_path, "3"), "--no-data")
    assert code == 0, err


def test_syntax_error(capsys, tmp_path):
    path = write(tmp_path, "a = 1 ;; b = 2\n")
    code, err = check(capsys, path)
    assert code == 78 and f"{path}:1:8: syntax error" in err


def test_unknown_identifier(capsys, tmp_path):
    path = config_with(tmp_path, "foo")
    code, err = check(capsys, path)
    assert code == 78 and f"{path}:5:21: evaluation error: unknown identifier 'foo'" in err


def test_cyclic_reference(capsys, tmp_path):
    path = config_with(tmp_path, "a", before="a = b\nb = a\n")
    code, err = check(capsys, path)
    assert code == 78 and f"{path}:2:1: evaluation error: cyclic reference" in err


def test_wrong_number_of_arguments(capsys, tmp_path):
    path = config_with(tmp_path, "f(1, 2)", before="f(x) = x\n")
    code, err = check(capsys, path)
    assert code == 78
    assert f"{path}:6:21: evaluation error: function expects 1 positional parameters, 2 were provided" in err


def test_unknown_named_argument(capsys, tmp_path):
    path = config_with(tmp_path, "f(1, z=2)", before="f(x, y=1) = x\n")
    code, err = check(capsys, path)
    assert code == 78
    assert f"{path}:6:26: evaluation error: function does not have an optional argument 'z'" in err


def test_bad_type(capsys, tmp_path):
    path = config_with(tmp_path, '"three"')
    code, err = check(capsys, path)
    assert code == 78
    assert f'{path}:5:9: config error: train.SGD.maxEpochs: expected a whole number, got the string "three"' in err


def test_index_out_of_bounds(capsys, tmp_path):
    path = config_with(tmp_path, "arr[5]", before="arr = 1:2:3\n")
    code, err = check(capsys, path)
    assert code == 78 and f"{path}:6:25: evaluation error: Index 5 out of bounds [0..2]" in err


def test_include_not_found(capsys, tmp_path):
    path = config_with(tmp_path, "3", before='include "nothere.net"\n')
    code, err = check(capsys, path)
    assert code == 78 and f"{path}:1:1: include error" in err and "nothere.net" in err


def test_include_cycle(capsys, tmp_path):
    write(tmp_path, 'include "second.net"\n', "first.net")
    second = write(tmp_path, 'x = 1\ninclude "first.net"\n', "second.net")
    path = config_with(tmp_path, "3", before=f'include "{tmp_path}/first.net"\n')
    code, err = check(capsys, path)
    assert code == 78 and f"{second}:2:1: include error: include cycle" in err


def test_unknown_config_key_with_suggestion(capsys, tmp_path):
    path = write(tmp_path, BASE.replace("maxEpochs = MAX_EPOCHS", "maxEpoch = 3"))
    code, err = check(capsys, path)
    assert code == 78
    assert f"{path}:5:9: config error: train.SGD.maxEpoch: unknown key 'maxEpoch' in SGD" in err
    assert "hint: did you mean 'maxEpochs'?" in err


def test_unused_top_level_key_with_suggestion(capsys, tmp_path):
    path = write(tmp_path, "\n  comand = train:test\n" + BASE.replace("MAX_EPOCHS", "3"))
    code, err = check(capsys, path)
    assert code == 78
    assert f"{path}:2:3: config error: comand: unknown key 'comand' (not a setting and never used)" in err
    assert "hint: did you mean 'command'?" in err


def test_unknown_command(capsys, tmp_path):
    path = write(tmp_path, BASE.replace("MAX_EPOCHS", "3").replace("command = train", "command = trian"))
    code, err = check(capsys, path)
    assert code == 78 and f"{path}:1:11: config error: command: unknown command 'trian'" in err


def test_bad_override_points_at_the_command_line(capsys, tmp_path):
    code, err = check(capsys, config_with(tmp_path, "3"), 'train.SGD.maxEpochs="x"')
    assert code == 78 and "<command line>:1:1: config error: train.SGD.maxEpochs: expected a whole number" in err


def test_error_shows_source_line_and_caret(capsys, tmp_path):
    path = config_with(tmp_path, "foo")
    _, err = check(capsys, path)
    assert "    5 |         maxEpochs = foo\n" in err
    assert "      |                     ^^^\n" in err


def test_no_traceback_without_debug(capsys, tmp_path):
    _, err = check(capsys, config_with(tmp_path, "foo"))
    assert "Traceback" not in err


def test_traceback_with_debug(capsys, tmp_path):
    code = cli.main(["--debug", "check", config_with(tmp_path, "foo")])
    err = capsys.readouterr().err
    assert code == 78 and "Traceback" in err and "unknown identifier 'foo'" in err


# ---- one way of writing an error -------------------------------------------------------------------

def _rendered(err) -> list[str]:
    console = Console(file=io.StringIO(), no_color=True, highlight=False, soft_wrap=True, width=200)
    render_error(err, console)
    return console.file.getvalue().splitlines()


def test_a_config_error_reads_the_same_as_text_on_the_terminal_and_from_a_failed_rank():
    err = ConfigError("must be at least 1", Span("cfg.net", 5, 21), hint="use 1 or more", key="maxEpochs")
    line = "cfg.net:5:21: config error: maxEpochs: must be at least 1"
    assert str(err) == "cfg.net:5:21: maxEpochs: must be at least 1 (hint: use 1 or more)"
    assert format_error(err, with_kind=True) == line + " (hint: use 1 or more)"
    assert _rendered(err)[0] == line and "  hint: use 1 or more" in _rendered(err)
    assert failure_message(1, 2, err, None) == f"netlang: rank 1 of 2 failed: {line} (hint: use 1 or more)"


def test_a_data_error_names_its_stream_in_every_form():
    err = DataError("expected 2 values", DataPosition("train.ctf", line=7, stream="features"))
    assert str(err) == "train.ctf:7: stream 'features': expected 2 values"
    assert _rendered(err)[0] == "train.ctf:7: data error: stream 'features': expected 2 values"
    assert format_error(err, with_kind=True) == _rendered(err)[0]
