"""What the reliability and fault tests share: a small training config, running netlang in this process
or in a child whose progress lines can be waited for, and reading what a run left behind."""
from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

from netlang.cli import main
from netlang.ir.modelfile import load_model

CONFIG = """
command = train:test:write
modelPath = "{out}/model.dnn"
deviceId = "cpu"
precision = "double"
train = {{
    action = "train"
    network = {{
        features = Input {{2}} ; labels = Input {{3}}
        h = DenseLayer {{8, activation=Tanh}} (features)
        z = DenseLayer {{3}} (h)
        ce = CrossEntropyWithSoftmax (labels, z) ; errs = ClassificationError (labels, z)
        criterionNodes = (ce) ; evaluationNodes = (errs) ; outputNodes = (z)
    }}
    SGD = {{
        maxEpochs = {epochs} ; minibatchSize = {mb} ; learningRatesPerSample = {lr}
        momentumAsTimeConstant = 100 ; numMBsToShowResult = 50 ; dropoutRate = 0
    }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}/{train_file}"
               input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }}
}}
test = {{
    action = "test"
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}/{test_file}" ; randomize = false
               input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }}
}}
write = {{
    action = "write"
    outputPath = "{output_path}"
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}/{test_file}"
               input = {{ features = {{ dim = 2 }} ; labels = {{ dim = 3 }} }} }}
}}
"""


def write_config(directory, data_dir, name="cfg.net", *, epochs=3, mb=32, lr="0.01*2:0.005", out=None,
                 train_file="Train_cntk_text.txt", test_file="Test_cntk_text.txt", output_path=None,
                 extra="") -> tuple[str, str]:
    """A config file in `directory`; returns (its path, the output directory of its model)."""
    out = out or os.path.join(str(directory), "out")
    path = os.path.join(str(directory), name)
    with open(path, "w") as fh:
        fh.write(CONFIG.format(out=out, data=data_dir, epochs=epochs, mb=mb, lr=lr, train_file=train_file,
                               test_file=test_file, output_path=output_path or f"{out}/result") + extra)
    return path, out


def cli(*argv) -> tuple[int, str, str]:
    """Run `netlang argv…` in this process: (exit code, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(list(argv))
    return code, stdout.getvalue(), stderr.getvalue()


def records(out: str) -> list[dict]:
    """metrics.jsonl of a run, without the fields that measure time (they differ from run to run)."""
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "samplesPerSecond")}
                for line in fh]


def final_parameters(out: str) -> dict:
    return load_model(os.path.join(out, "model.dnn")).parameters


# ---- children whose progress can be waited for ------------------------------------------------------

# A child reports every minibatch into a one-page pipe: when the pipe is full it blocks in its next
# write, so it can never run far ahead of what the test has read (see test_training.py).
PIPE_SIZE = 4096


def spawn(*argv, report_every_minibatch: bool = True) -> subprocess.Popen:
    """`netlang argv…` in a child process, its stderr in a small pipe."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    extra = ["train.SGD.numMBsToShowResult=1"] if report_every_minibatch else []
    return subprocess.Popen([sys.executable, "-m", "netlang", *argv, "--no-progress", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pipesize=PIPE_SIZE, env=env)


class Reader:
    """The stderr of a child, read as far as a test needs it."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.seen = b""

    @property
    def text(self) -> str:
        return self.seen.decode(errors="replace")

    def until(self, line_start: str, timeout: float = 120) -> str:
        """Everything up to the first line that starts with `line_start` (leading blanks aside)."""
        deadline = time.monotonic() + timeout
        while not any(line.lstrip().startswith(line_start) for line in self.text.splitlines()):
            left = deadline - time.monotonic()
            assert left > 0, f"no line starting with {line_start!r} within {timeout:g} s:\n{self.text[-3000:]}"
            ready, _, _ = select.select([self.proc.stderr], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.proc.stderr.fileno(), PIPE_SIZE)
                assert chunk, f"the run ended (exit {self.proc.wait()}) before {line_start!r}:\n{self.text[-3000:]}"
                self.seen += chunk
        return self.text

    def rest(self, timeout: float = 120) -> tuple[int, str]:
        """Read to the end: (exit code, all of stderr)."""
        _, rest = self.proc.communicate(timeout=timeout)
        self.seen += rest
        return self.proc.returncode, self.text
