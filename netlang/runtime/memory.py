"""How much memory a training needs, and whether its device has that much.

The trainer keeps every parameter in flat buffers (runtime/flatbuffer.py): the values, their
gradients, a learning-rate multiplier and a segment number per element, and the learner's state
buffers (momentum, squared averages …), each as large as the values. Those are allocated before the
first minibatch and live as long as the training. Activations come on top, per minibatch: the
values and gradients of one training step placed by their lifetimes in the compiled plan
(compiler/graph/memory.py), for sequences assumed 32 steps long.

`netlang check` reports the estimate; `check` and `train` refuse a network whose buffers alone
exceed the device's memory, instead of failing with a MemoryError after the data is read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from netlang.compiler.graph.memory import MemoryPlan, assumed_bucket, plan_memory
from netlang.compiler.graph.plan import Plan
from netlang.errors import ConfigError, Span
from netlang.ir.graph import Network
from netlang.runtime.learners import LEARNERS

SEGMENT_ID_BYTES = 4          # FlatParameters.segment_ids, int32 per trainable element


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int           # bytes of parameter values
    gradients: int
    learner_state: int        # the learner's buffers plus the per-element multipliers and segment ids
    minibatch_size: int
    step: MemoryPlan          # the planned arena of one step's values and gradients (the activations)
    batch: int                # the bucket the step was planned for: sequences (or samples) …
    steps: int                # … and time steps

    @property
    def activations(self) -> int:
        return self.step.arena_bytes

    @property
    def buffers(self) -> int:
        """What is allocated for the whole training, whatever the minibatch."""
        return self.parameters + self.gradients + self.learner_state

    def as_dict(self) -> dict:
        return {"parameters": self.parameters, "gradients": self.gradients, "learnerState": self.learner_state,
                "activationsPerMinibatch": self.activations, "minibatchSize": self.minibatch_size,
                "batch": self.batch, "steps": self.steps, **self.step.summary()}

    def describe(self) -> str:
        return (f"parameters {human_bytes(self.parameters)}, gradients {human_bytes(self.gradients)}, "
                f"learner state {human_bytes(self.learner_state)}; values and gradients of a step "
                f"{human_bytes(self.activations)} for a minibatch of {self.minibatch_size} samples")


def estimate(network: Network, plan: Plan, grad_update_type: str, dtype, minibatch_size: int) -> MemoryEstimate:
    """The memory of training `network` by the step `plan` with the learner `grad_update_type` in `dtype`."""
    itemsize = np.dtype(dtype).itemsize
    elements = sum(p.dim for p in network.parameters)
    trainable = sum(p.dim for p in network.learnable_parameters)
    state_buffers = len(LEARNERS[grad_update_type].state_names) if grad_update_type in LEARNERS else 1
    parameters = gradients = elements * itemsize
    learner_state = state_buffers * elements * itemsize + elements * itemsize + trainable * SEGMENT_ID_BYTES
    batch, steps = assumed_bucket(network, int(minibatch_size))
    step = plan_memory(plan, batch, steps, itemsize, parameters + gradients + learner_state)
    return MemoryEstimate(parameters, gradients, learner_state, int(minibatch_size), step, batch, steps)


def device_memory(backend) -> int | None:
    """Bytes of memory on the backend's device: the GPU's total, or the machine's physical memory."""
    if backend.xp is not np:
        return int(backend.xp.cuda.runtime.memGetInfo()[1])     # (free, total) of the current device
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):                 # not a POSIX system: cannot tell
        return None


def require_fit(memory: MemoryEstimate, device: str, available: int | None, span: Span | None) -> None:
    """A config error when the training's buffers alone exceed the device's memory."""
    if available is None or memory.buffers <= available:
        return
    raise ConfigError(f"the network does not fit the device: training needs {human_bytes(memory.buffers)} for "
                      f"{memory.describe().split('; ')[0]}, and {device} has {human_bytes(available)}", span,
                      hint="make the network smaller, use precision = \"float\", or a device with more memory")


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if value < 1024 or unit == "PB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"
