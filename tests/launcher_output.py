"""Reading what an MPI job printed when one of its ranks was killed (shared by the MPI tests)."""
from __future__ import annotations

import re


def reports_a_killed_rank(output: str, rank: int) -> bool:
    """Whether the output says that a rank of the job was killed: our watchdog names the dead rank
    (never another), or MPICH's hydra reports a killed process whose pid a rank announced.

    Hydra's pid is not always the dead rank's. Its proxy notices a dead rank in one of two ways: by
    the rank's PMI connection closing (it then counts the other ranks' ends as its own clean-up and
    reports the dead rank alone), or, when the rank's stdout closing wakes it and it reaps the rank
    before reading the PMI socket, by the exit status (it then SIGKILLs the others without that mark
    and reports the lowest rank a signal ended: rank 0, which it killed itself). Which way comes first
    is a race inside hydra, lost about 1 kill in 5 on two cores, and either way the survivors die
    within milliseconds, before their watchdog can speak. So hydra's pid may be either rank's; the
    announcement lines map it to one.
    """
    named = re.findall(r"rank (\d+) \(pid \d+ .*\) (?:has )?died", output)
    if named:
        return set(named) == {str(rank)}
    announced = set(re.findall(r"rank \d+ of \d+ is pid (\d+)", output))
    reported = re.search(r"PID (\d+) RUNNING AT .*\n.*EXIT CODE: 9", output)
    return bool(reported) and reported.group(1) in announced
