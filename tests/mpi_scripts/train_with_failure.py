"""Run under `mpiexec -n 2`: `netlang train` in which one worker fails at a chosen minibatch.

    python train_with_failure.py HOW RANK EPOCH MINIBATCH -- netlang train arguments ...

HOW says what worker RANK does just before its MINIBATCH-th step of EPOCH (both 1-based):
    kill       SIGKILL itself (a crash the worker cannot report)
    raise      raise a RuntimeError (a bug in the worker)
    interrupt  send itself SIGINT (Ctrl-C reaching one worker only)
The other worker trains on; the job must end (or stop cleanly for `interrupt`) without hanging.
"""
import os
import signal
import sys

from netlang.cli import main
from netlang.runtime.trainer import Trainer


def fail(how: str) -> None:
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "raise":
        raise RuntimeError("simulated failure in a training step")
    elif how == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)
    else:
        raise SystemExit(f"unknown failure {how!r}")


def install(how: str, rank: int, epoch: int, minibatch: int) -> None:
    original = Trainer.step
    steps = {}

    def step(self, e, mb):
        steps[e] = steps.get(e, 0) + 1
        if (e, steps[e]) == (epoch, minibatch) and self.comm.rank == rank:
            fail(how)
        return original(self, e, mb)

    Trainer.step = step


if __name__ == "__main__":
    how, rank, epoch, minibatch, separator, *argv = sys.argv[1:]
    assert separator == "--", "usage: HOW RANK EPOCH MINIBATCH -- train arguments"
    install(how, int(rank), int(epoch), int(minibatch))
    sys.exit(main(argv))
