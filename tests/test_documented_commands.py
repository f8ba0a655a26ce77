"""Every command the README and `netlang --help` show runs as written, from the root of a fresh copy
of the repository (its tracked files, as a clone has them).

What counts as a command: each line of a ```sh block of the README, each inline code span of the
README that starts with `netlang ` and an argument, `python `, `bash `, `pip ` or `mpiexec ` (a
synopsis, which has placeholders such as `cfg.net`, `DIR` or `…`, is not one), and each example line of `netlang --help` and of
`netlang COMMAND -h` for every command and data action. `&&` chains run in order.

Which run where:
* `pip install …` and `python -m pytest …` are not run: the first is the environment this test runs
  in, the second is the test suite itself;
* the GPU benchmark and device check need an NVIDIA GPU: they run with `pytest -m slow` on one;
* commands that read ../shared/data (MNIST, ATIS, FSDD), the detection pipeline (data/shapes, its
  configs and models: about half an hour on two cores), `mpiexec` and the benchmarks are slow: they run
  with `pytest -m slow`, after preparing what they need as the README says (MNIST and ATIS data,
  an ATIS model of one epoch for `score-slots`), and are skipped when ../shared/data is absent
  (NETLANG_DATA names it elsewhere);
* every other command runs in the default suite, in the order the README and the help show them,
  except that a command needing an optional extra (onnx for export, matplotlib for plot, Graphviz
  for SVG/PNG pictures, mkdocs for the site) is left out without it, with a warning naming it. netlang commands run in this process (`cli.main`,
  working directory the copy); others in a shell.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from netlang import cli
from netlang.actions.table import COMMANDS
from netlang.runtime.backend import gpu_available

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NETLANG_DATA") or ROOT.parent / "shared" / "data")
PLACEHOLDERS = ("cfg.net", "…", "DIR", "FILE", "OUTDIR", "MODEL", "\\|", "[key", "[-")
NOT_RUN = ("pip install", "python -m pytest")


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = []
    for block, lang, body in re.findall(r"(```(\w*)\n(.*?)```)", text, flags=re.S):
        if lang == "sh":
            found += [line.strip() for line in body.splitlines() if line.strip() and not line.startswith("#")]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        # `netlang time` in a sentence names the command; an example has arguments.
        if re.match(r"netlang \S+ |(python|bash|mpiexec|pip) ", span) and not any(p in span for p in PLACEHOLDERS):
            found.append(span)
    return list(dict.fromkeys(found))


def readme_python() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def help_commands() -> list[str]:
    """The example lines of `netlang --help` and of every `-h`, as the parser prints them."""
    parser = cli.build_parser()
    texts = [parser.format_help()]
    pending = [cli._subparsers(parser)]
    while pending:
        for sub in dict.fromkeys(pending.pop().choices.values()):
            texts.append(sub.format_help())
            pending += [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
    found = []
    for text in texts:
        lines = text.splitlines()
        for at, line in enumerate(lines):
            if line not in ("example:", "examples:"):
                continue
            for row in lines[at + 1:]:
                if not row.startswith("  netlang"):
                    break
                found.append(re.split(r"\s{2,}", row.strip())[0])
    return list(dict.fromkeys(found))


def needs_data(command: str) -> bool:
    return any(word in command for word in ("shared/data", "data/mnist", "data/atis", "configs/text/atis",
                                            "configs/vision/mnist_onehidden", "data/fsdd",
                                            "configs/speech/fsdd", "data/shapes", "configs/vision/shapes_classifier",
                                            "configs/vision/fast_rcnn", "out/shapes_classifier")) or \
        command.startswith(("mpiexec", "python benchmarks"))


def needs_gpu(command: str) -> bool:
    return "bench_gpu" in command or "benchmarks/gpu/" in command


def missing_extra(command: str) -> str | None:
    words = command.split()
    if words[0] == "mkdocs" and shutil.which("mkdocs") is None:
        return "mkdocs"
    if words[:2] == ["netlang", "export"] and importlib.util.find_spec("onnx") is None:
        return "onnx"
    if words[:2] == ["netlang", "plot"] and importlib.util.find_spec("matplotlib") is None:
        return "matplotlib"
    if words[:2] == ["netlang", "graph"] and re.search(r"\.(svg|png|pdf)\b", command) and shutil.which("dot") is None:
        return "Graphviz"
    return None


ALL = [" && ".join(part for part in (p.strip() for p in line.split("&&")) if not part.startswith(NOT_RUN))
       for line in readme_commands() + help_commands()]
ALL = [line for line in ALL if line]
FAST = [c for c in ALL if not needs_data(c) and not needs_gpu(c)]
SLOW = [c for c in ALL if needs_data(c) and not needs_gpu(c)]
GPU = [c for c in ALL if needs_gpu(c)]


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory):
    """The repository's files (tracked and new, not ignored) in a new directory, with ../shared."""
    base = tmp_path_factory.mktemp("clone")
    copy = base / "netlang"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    if SHARED_DATA.exists():      # the commands name ../shared/data
        (base / "shared").mkdir()
        (base / "shared" / "data").symlink_to(SHARED_DATA.resolve())
    return copy


def run_line(line: str, where: Path) -> None:
    """One documented line: its `&&` parts in order; netlang in this process, others in a shell."""
    for part in (p.strip() for p in line.split("&&")):
        words = shlex.split(part)
        if words[0] == "netlang":
            old = os.getcwd()
            os.chdir(where)
            try:
                code = cli.main(words[1:])
            finally:
                os.chdir(old)
            assert code == 0, f"`{part}` exited {code}"
            continue
        env = dict(os.environ, PYTHONPATH=str(where), OMP_NUM_THREADS="1")
        shim = where.parent / "bin"
        shim.mkdir(exist_ok=True)
        (shim / "netlang").write_text(f"#!/bin/sh\nexec {sys.executable} -m netlang \"$@\"\n")
        (shim / "netlang").chmod(0o755)
        (shim / "python").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
        (shim / "python").chmod(0o755)
        env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
        done = subprocess.run(part, shell=True, cwd=where, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"`{part}` exited {done.returncode}:\n{done.stderr[-3000:]}"


def test_the_documents_show_commands():
    assert len(FAST) >= 20 and any("export" in c for c in FAST) and any("--schedule" in c for c in FAST)
    shown = {c.split()[1] for c in ALL if c.startswith("netlang ")}
    assert {command.name for command in COMMANDS} <= shown


def test_every_documented_command_runs_as_written(fresh_copy, capsys):
    skipped = []
    for line in FAST:
        extra = missing_extra(line)
        if extra is not None:
            skipped.append(f"{line} (needs {extra})")
            continue
        run_line(line, fresh_copy)
        capsys.readouterr()
    old = os.getcwd()
    os.chdir(fresh_copy)
    try:
        for code in readme_python():
            exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(old)
    if skipped:   # the rest ran; these wait for their optional extras
        warnings.warn("not run without their optional extras: " + "; ".join(skipped))


@pytest.mark.slow
@pytest.mark.skipif(not gpu_available(), reason="needs an NVIDIA GPU with CuPy")
def test_every_documented_gpu_command_runs_as_written(fresh_copy, capsys):
    for line in GPU:
        run_line(line, fresh_copy)
        capsys.readouterr()


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is absent (or set NETLANG_DATA)")
def test_every_documented_command_on_real_data_runs_as_written(fresh_copy, capsys):
    prepare = ["netlang data prepare mnist --source ../shared/data/mnist --out data/mnist",
               "netlang data prepare atis --source ../shared/data/atis --out data/atis",
               "netlang run configs/text/atis_slots_lstm.net SGD.maxEpochs=1"]
    for line in prepare + SLOW:
        if line.startswith("mpiexec") and (shutil.which("mpiexec") is None or importlib.util.find_spec("mpi4py") is None):
            continue
        run_line(line, fresh_copy)
        capsys.readouterr()
