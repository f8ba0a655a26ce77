"""The memory plan of a training or evaluation step: buffers placed in one arena by their lifetimes.

The executable plan (plan.py) says when every value and every gradient is made and when it dies.
For one input-shape bucket (the batch size N and, for sequences, the steps T) those lifetimes and
the values' sizes give a placement: each buffer gets an offset in one arena such that two buffers
alive at the same step never share a byte. `plan_memory` computes it (greedy by size, first fit
below the buffers already placed that overlap it in time, a standard interval-packing heuristic),
and with it

* `arena_bytes`: the arena the step needs for node values and gradients (what a bucket's private
  memory pool grows to on the GPU, before kernel scratch such as im2col columns or cuDNN workspace);
* `peak_live_bytes`: the most bytes alive at one step — a lower bound no placement can beat.

Lifetimes, as the executor keeps them: a forward value lives from the step that makes it to the
step after which the plan releases it (outputs and the loss to the end); a recurrent loop keeps the
whole trace of its nodes (T steps of every node) until its backward step; a gradient lives from the
first backward step that adds to it to the step that releases it; the gradients of the parameters
are written into the flat gradient buffer at the end (they live to the end). Parameters, the flat
gradient buffer and learner state are persistent and counted apart (`persistent_bytes`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netlang.compiler.graph.plan import Plan
from netlang.ir.graph import BATCH, Node, SeqAxis
from netlang.ir.shapes import num_elements

ALIGNMENT = 512          # bytes: CuPy's memory pool rounds every block to this
ASSUMED_STEPS = 32       # `netlang check`: sequences assumed this long, filling the minibatch


@dataclass(frozen=True)
class Buffer:
    """One value or gradient of the step: its size and the steps [first, last] it is alive."""

    name: str
    nbytes: int
    first: int
    last: int

    def overlaps(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass
class MemoryPlan:
    buffers: list[Buffer]
    offsets: dict[str, int] = field(default_factory=dict)
    arena_bytes: int = 0
    peak_live_bytes: int = 0
    persistent_bytes: int = 0

    @property
    def step_bytes(self) -> int:
        """What a step holds at its peak: the arena and the persistent buffers."""
        return self.arena_bytes + self.persistent_bytes

    def summary(self) -> dict:
        return {"arenaBytes": self.arena_bytes, "peakLiveBytes": self.peak_live_bytes,
                "persistentBytes": self.persistent_bytes, "stepBytes": self.step_bytes,
                "buffers": len(self.buffers)}


def _aligned(nbytes: int) -> int:
    return -(-max(int(nbytes), 1) // ALIGNMENT) * ALIGNMENT


def value_elements(node: Node, batch: int, steps: int) -> int:
    """Elements of `node`'s value for minibatches of `batch` sequences (or samples) of `steps` steps."""
    sample = num_elements(node.shape)
    if isinstance(node.layout, SeqAxis):
        return sample * batch * steps
    if node.layout is BATCH:
        return sample * batch
    return sample


def step_buffers(plan: Plan, batch: int, steps: int, itemsize: int) -> list[Buffer]:
    """The values and gradients of one run of `plan` with their lifetimes (see the module doc)."""
    end = len(plan.steps) - 1
    kept = {n.id for n in plan.outputs} | ({plan.loss.id} if plan.loss is not None else set())
    wrt = {n.id for n in plan.wrt}
    born: dict[int, int] = {}
    dies: dict[int, int] = {}
    grad_born: dict[int, int] = {}
    grad_dies: dict[int, int] = {}
    nodes: dict[int, Node] = {}
    traces: list[Buffer] = []
    for index, step in enumerate(plan.steps):
        made = step.loop.nodes if step.loop is not None else [step.node]
        if step.kind in ("forward", "loop"):
            for node in made:
                if step.kind == "forward" or node.id in step.loop.exported:
                    born.setdefault(node.id, index)
                    nodes[node.id] = node
            if step.kind == "loop":
                traces.append(_trace(plan, index, step, batch, steps, itemsize))
        else:
            inputs = step.loop.external_inputs() if step.loop is not None else step.node.inputs
            seeded = [step.node] if plan.loss is not None and step.node.id == plan.loss.id else []
            for reached in seeded + list(inputs):
                grad_born.setdefault(reached.id, index)
                nodes[reached.id] = reached
        for nid in step.release:
            dies[nid] = index
        for nid in step.release_grads:
            grad_dies[nid] = index
    leaves = {n.id for n in plan.leaves}
    buffers = []
    for nid, first in born.items():
        if nid in leaves:
            continue
        last = end if nid in kept else dies.get(nid, end)
        buffers.append(Buffer(nodes[nid].name, value_elements(nodes[nid], batch, steps) * itemsize, first, last))
    for nid, first in grad_born.items():
        node = nodes[nid]
        last = end if nid in wrt else grad_dies.get(nid, end)
        buffers.append(Buffer(f"grad:{node.name}", value_elements(node, batch, steps) * itemsize, first, last))
    return buffers + [t for t in traces if t.nbytes]


def _trace(plan: Plan, index: int, step, batch: int, steps: int, itemsize: int) -> Buffer:
    """A loop's per-step outputs, kept from its forward step to its backward step."""
    last = next((i for i, s in enumerate(plan.steps) if s.kind == "loop_backward" and s.loop is step.loop), index)
    per_step = sum(num_elements(n.shape) for n in step.loop.nodes) * batch
    return Buffer(f"trace:{step.node.name}", per_step * steps * itemsize, index, last)


def place(buffers: list[Buffer]) -> tuple[dict[str, int], int]:
    """Offsets for `buffers` in one arena (aligned), no two buffers alive together overlapping; the
    arena's size. Largest first; each goes to the lowest gap among the placed buffers it meets."""
    offsets: dict[str, int] = {}
    placed: list[tuple[Buffer, int, int]] = []           # (buffer, offset, aligned size)
    arena = 0
    for buf in sorted(buffers, key=lambda b: (-b.nbytes, b.first, b.name)):
        size = _aligned(buf.nbytes)
        busy = sorted((off, off + sz) for other, off, sz in placed if other.overlaps(buf))
        offset = 0
        for start, stop in busy:
            if offset + size <= start:
                break
            offset = max(offset, stop)
        offsets[buf.name] = offset
        placed.append((buf, offset, size))
        arena = max(arena, offset + size)
    return offsets, arena


def peak_live(buffers: list[Buffer]) -> int:
    if not buffers:
        return 0
    last = max(b.last for b in buffers)
    live = np.zeros(last + 2, dtype=np.int64)
    for b in buffers:
        live[b.first] += _aligned(b.nbytes)
        live[b.last + 1] -= _aligned(b.nbytes)
    return int(np.cumsum(live).max())


def plan_memory(plan: Plan, batch: int, steps: int = 1, itemsize: int = 4, persistent_bytes: int = 0) -> MemoryPlan:
    """The memory plan of one run of `plan` for a bucket of `batch` sequences × `steps` steps."""
    buffers = step_buffers(plan, batch, steps, itemsize)
    offsets, arena = place(buffers)
    return MemoryPlan(buffers, offsets, arena, peak_live(buffers), persistent_bytes)


def assumed_bucket(network, minibatch: int) -> tuple[int, int]:
    """(batch, steps) `netlang check` plans for: the minibatch's samples, or for a network with
    sequence inputs, sequences of ASSUMED_STEPS steps that fill the minibatch (its size counts steps)."""
    if any(isinstance(n.layout, SeqAxis) for n in network.inputs):
        return max(1, minibatch // ASSUMED_STEPS), ASSUMED_STEPS
    return max(1, minibatch), 1
