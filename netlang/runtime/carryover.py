"""Recurrent state carried from one minibatch to the next in truncated BPTT.

The truncated reader (readers/windows.py) hands out windows of `L` steps of the sequences in `S`
parallel slots, and says for each window whether it continues its slot's previous window. A
`PastValue` with time step `k` then reads, at the first `k` steps of a continuing window, the last
`k` steps its input had in the previous window — the recurrent state flows on — and its initial
state only where a sequence really starts. Gradients stop at the window edge: what was read from
the previous window is a constant of this minibatch (that is the truncation).

Each delay keeps its input's last `k` steps per slot in its persistent node state
(`state["carried"]`, `(k, S, …)`), written after every training minibatch; the trainer forgets them
at the start of an epoch. A whole-sequence delay (runtime/ops/sequence.py) and a delay inside a
recurrent loop (runtime/recurrence.py) use the same two calls: `read` before the step values are
formed, `write` after.

Ops that cannot carry their state so (their OpDef's `truncation_unsafe`: FutureValue,
OptimizedRNNStack) are refused before training starts (`check_network`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from netlang.errors import NetworkError
from netlang.ir.graph import Network
from netlang.ops.registry import op_of

CARRIED = "carried"


def check_network(network: Network) -> None:
    """Truncated BPTT can run every op of `network`, or a NetworkError names the first that it cannot."""
    for node in network.nodes:
        unsafe = op_of(node).truncation_unsafe
        if unsafe is not None:
            message, hint = unsafe
            raise NetworkError(message.format(name=node.name), node.span, hint=hint)


@dataclass
class CarryOver:
    """Which parallel slot each sequence of the minibatch is in, and how many of its steps came in
    earlier windows (0: it starts here)."""

    slots: Any          # (N,) int64 on the device
    steps_before: Any   # (N,) int64 on the device
    slot_count: int     # 1 + the highest slot (0 without sequences), known on the host

    @classmethod
    def of(cls, slots, steps_before, backend) -> "CarryOver":
        slots = np.asarray(slots, dtype="int64")
        return cls(backend.from_host(slots), backend.from_host(np.asarray(steps_before, dtype="int64")),
                   int(slots.max()) + 1 if len(slots) else 0)

    def read(self, state: dict, k: int, mask, xp):
        """`(flags, history)`: flags `(T, N)` where step `t` reads an earlier window (`t < k` and
        step `t - k` of the sequence exists), history `(k, N, …)` what it reads there (`history[t]`);
        `(None, None)` when nothing was carried (an epoch's first window, a run resumed in mid-epoch)."""
        stored = state.get(CARRIED)
        if stored is None or stored.shape[0] != k or self.slot_count == 0 or self.slot_count > stored.shape[1]:
            return None, None
        T = mask.shape[0]
        t = xp.arange(T)[:, None]
        flags = (t < k) & (t - k + self.steps_before[None, :] >= 0) & mask
        return flags, stored[:, self.slots]

    def write(self, state: dict, steps, k: int, history, xp) -> None:
        """Keep the last `k` of `steps` (`(T, N, …)`, the delay's input) for each sequence's slot."""
        T = steps.shape[0]
        if T >= k:
            last = steps[T - k:]
        else:
            before = history if history is not None else xp.zeros((k,) + steps.shape[1:], dtype=steps.dtype)
            last = xp.concatenate([before[T:], steps])
        needed = self.slot_count
        stored = state.get(CARRIED)
        if stored is None or stored.shape[0] != k or stored.shape[2:] != last.shape[2:] or stored.dtype != last.dtype:
            stored = xp.zeros((k, needed) + last.shape[2:], dtype=last.dtype)
        elif stored.shape[1] < needed:
            grown = xp.zeros((k, needed) + last.shape[2:], dtype=last.dtype)
            grown[:, :stored.shape[1]] = stored
            stored = grown
        stored[:, self.slots] = last
        state[CARRIED] = stored


def forget(states: dict) -> None:
    """Drop every carried history (a new epoch starts every slot afresh)."""
    for state in states.values():
        state.pop(CARRIED, None)
