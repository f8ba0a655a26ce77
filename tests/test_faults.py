"""Fault tests: runs killed (SIGKILL) or interrupted (SIGINT) at several points resume to the model and
the metrics log of an uninterrupted run, bit for bit; two trainings into one directory never both run.

Every wait is for an event the child reports (a progress line), never a sleep: a child reports each
minibatch into a one-page pipe and blocks when the test stops reading, so it is always within ~80
minibatches of the line the test waited for (tests/training_runs.py). Each case takes about two
seconds; the points not in the default run are marked slow (`pytest -m slow` runs them).
"""
from __future__ import annotations

import os
import select
import signal

import numpy as np
import pytest
from training_runs import Reader, cli, final_parameters, records, spawn, write_config

from netlang.datasets.synthetic import prepare_synthetic
from netlang.errors import EXIT_BUSY, EXIT_INTERRUPTED

EPOCHS, MB = 5, 4          # 250 minibatches per epoch: a child cannot run past an epoch unread
EVERY_MINIBATCH = "train.SGD.numMBsToShowResult=1"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults_data")
    prepare_synthetic(str(path), seed=3, classes=3, dim=2, samples=1000)
    return str(path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """The uninterrupted run: its final parameters and metrics records."""
    directory = tmp_path_factory.mktemp("reference")
    cfg, out = write_config(directory, data_dir, epochs=EPOCHS, mb=MB)
    code, _, err = cli("train", cfg, EVERY_MINIBATCH, "-q")
    assert code == 0, err
    return final_parameters(out), records(out)


def resume_and_compare(cfg: str, out: str, reference) -> str:
    """Run the config to its end in this process; its model and metrics must be the reference's."""
    code, _, err = cli("train", cfg, EVERY_MINIBATCH, "--no-progress")
    assert code == 0, err
    parameters, logged = reference
    for name, value in parameters.items():
        assert np.array_equal(value, final_parameters(out)[name]), name
    resumed = records(out)
    reported = [(r["epoch"], tuple(r["minibatches"])) for r in resumed if r["event"] == "minibatch"]
    assert len(reported) == len(set(reported)), "metrics.jsonl repeats minibatch reports"
    assert resumed == logged
    return err


# ---- kill -9 -------------------------------------------------------------------------------------------

KILL_POINTS = [
    pytest.param("Epoch[ 1 of 5]-Minibatch", id="in epoch 1, before any checkpoint", marks=pytest.mark.slow),
    pytest.param("Epoch[ 3 of 5]-Minibatch", id="in epoch 3"),
    pytest.param("Finished Epoch[ 2 of 5]", id="just after epoch 2's checkpoint", marks=pytest.mark.slow),
    pytest.param("Epoch[ 5 of 5]-Minibatch", id="in the last epoch", marks=pytest.mark.slow),
    pytest.param("Finished Epoch[ 5 of 5]", id="after the last epoch", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_killed_run_resumes_to_the_same_model_and_metrics(tmp_path, data_dir, reference, point):
    cfg, out = write_config(tmp_path, data_dir, epochs=EPOCHS, mb=MB)
    child = Reader(spawn("train", cfg))
    child.until(point)
    child.proc.send_signal(signal.SIGKILL)
    child.proc.wait()
    resume_and_compare(cfg, out, reference)


# ---- Ctrl-C --------------------------------------------------------------------------------------------

def interrupt(cfg: str, point: str) -> str:
    child = Reader(spawn("train", cfg))
    child.until(point)
    child.proc.send_signal(signal.SIGINT)
    code, stderr = child.rest()
    assert code == EXIT_INTERRUPTED and "checkpoint written" in stderr, stderr
    return stderr


@pytest.mark.parametrize("points", [
    pytest.param(["Epoch[ 1 of 5]-Minibatch"], id="in epoch 1", marks=pytest.mark.slow),
    pytest.param(["Epoch[ 3 of 5]-Minibatch"], id="in epoch 3", marks=pytest.mark.slow),
    pytest.param(["Epoch[ 2 of 5]-Minibatch", "Epoch[ 4 of 5]-Minibatch"], id="in epoch 2, then after resuming in epoch 4"),
])
def test_an_interrupted_run_resumes_to_the_same_model_and_metrics(tmp_path, data_dir, reference, points):
    cfg, out = write_config(tmp_path, data_dir, epochs=EPOCHS, mb=MB)
    for point in points:
        interrupt(cfg, point)
    resume_and_compare(cfg, out, reference)


# ---- one training per output directory ------------------------------------------------------------------

def test_a_second_training_into_a_directory_in_use_fails_at_once(tmp_path, data_dir, reference):
    cfg, out = write_config(tmp_path, data_dir, epochs=EPOCHS, mb=MB)
    other, _ = write_config(tmp_path, data_dir, "other.net", epochs=EPOCHS, mb=MB, lr="0.05", out=out)
    first = Reader(spawn("train", cfg))
    first.until("Epoch[ 1 of 5]-Minibatch")      # it holds the lock, and stalls until we read on
    code, _, err = cli("train", other)           # returns while the first run cannot have ended
    assert code == EXIT_BUSY, err
    assert f"{out}' is in use by another training run (pid {first.proc.pid} " in err
    assert "other.net:3:1" in err                # at the modelPath it shares
    code, stderr = first.rest()
    assert code == 0, stderr
    for name, value in reference[0].items():     # the first run's model is its own, no hybrid
        assert np.array_equal(value, final_parameters(out)[name]), name


def test_of_two_trainings_started_together_exactly_one_runs(tmp_path, data_dir, reference):
    cfg, out = write_config(tmp_path, data_dir, epochs=EPOCHS, mb=MB)
    runs = [Reader(spawn("train", cfg)) for _ in range(2)]
    # Read both until one has trained a minibatch (it holds the lock: then stop reading it, so it
    # stalls) and the other has ended.
    winner, loser = None, None
    while winner is None or loser is None:
        open_pipes = [r for r in runs if r not in (winner, loser)]
        ready, _, _ = select.select([r.proc.stderr for r in open_pipes], [], [], 120)
        assert ready, "neither run got anywhere within 120 s"
        for run in open_pipes:
            if run.proc.stderr not in ready:
                continue
            chunk = os.read(run.proc.stderr.fileno(), 4096)
            run.seen += chunk
            if not chunk:
                loser = run
            elif "Epoch[ 1 of 5]-Minibatch" in run.text:
                winner = run
    assert loser.proc.wait() == EXIT_BUSY, loser.text
    assert "is in use by another training run" in loser.text and "Epoch[" not in loser.text
    code, stderr = winner.rest()
    assert code == 0, stderr
    for name, value in reference[0].items():
        assert np.array_equal(value, final_parameters(out)[name]), name
