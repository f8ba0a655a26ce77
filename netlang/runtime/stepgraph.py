"""A step (training or evaluation) run as one captured CUDA graph per input-shape bucket.

`CompiledStep.run(feeds, body, extras)` runs `body(feeds)` — forward, backward, the update and the
criterion sums of one minibatch, as the trainer writes it — either eagerly or by replaying the graph
captured for the feeds' bucket (runtime/buckets.py says which minibatches share a bucket and when a
bucket is captured). The body must return only device arrays; what the host needs of a step
(sample counts, the learner's per-step numbers) is computed outside it.

Where data enters a step. Everything the body takes from the host goes through the backend's
`upload(key, host_array)` (the executor's inputs and masks, the learner's per-step scalars — learning
rate, momentum, counters — and nothing else): `StaticUploads` gives every key a static device
buffer of the bucket. The warm-up run copies each upload into its buffer and records the keys; in
the capture the uploads return the buffers without copying (a capture may not copy from the host);
before each replay the host data of every key is copied into its buffer (feeds by input name,
masks as `(name, "mask")`, anything else from `extras`), and the graph is launched. So a new
learning rate or a new epoch's schedule needs no new capture.

What cannot be captured runs eagerly, with one line said once per reason, never a wrong result:
the backend has no graph service (the CPU, or a GPU without direct cuBLAS), `cudaGraph = false` /
`--no-cuda-graph`, feeds that cannot be bucketed (sparse inputs), a body that reads the device from
the host (the guard counts the backend's `to_host`/`synchronize`/`from_host` during the warm-up;
CuPy itself refuses other host reads inside a capture, which also ends in eager), a key whose host
data the replay cannot supply, per-node state the warm-up replaced rather than updated in place (a
graph would keep writing the old arrays), or any error during capture.

`graphs` is the backend's capture service (runtime/gpu/capture.py on CuPy): `capture(body) ->
handle` (records, does not run), `launch(handle) -> the body's result`, `memory_bytes(handle)`, and
`scope()`, a context in which the warm-up and the capture run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netlang.runtime import buckets


class NotCapturable(Exception):
    """A step that must run eagerly; the message says why, in one line."""


class StaticUploads:
    """The backend's uploads during a bucket's warm-up, capture and replays (see the module doc)."""

    def __init__(self, xp):
        self.xp = xp
        self.mode = "record"
        self.buffers: dict = {}
        self.dtypes: dict = {}
        self.host_touches: list[str] = []

    def upload(self, key, array, dtype, plain):
        if self.mode == "capture":
            buffer = self.buffers.get(key)
            if buffer is None:
                raise NotCapturable(f"the step uploads '{key}', which its warm-up did not")
            return buffer
        device = plain(key, array, dtype)
        buffer = self.buffers.get(key)
        if buffer is None or buffer.shape != device.shape or buffer.dtype != device.dtype:
            if self.mode == "fill":
                raise NotCapturable(f"'{key}' changed shape within its bucket")
            buffer = self.buffers[key] = self.xp.empty(device.shape, dtype=device.dtype)
            self.dtypes[key] = dtype
        buffer[...] = device
        return buffer

    def touched(self, what: str) -> None:
        """A host read or write of device data inside the step."""
        if self.mode in ("record", "capture"):
            self.host_touches.append(what)


@dataclass
class _Bucket:
    seen: int = 0
    uploads: StaticUploads | None = None
    handle: object = None
    eager_reason: str | None = None
    memory_bytes: int = 0
    replays: int = 0


@dataclass
class CompiledStep:
    """One kind of step (training or evaluation) of one executor; see the module doc."""

    backend: object
    graphs: object                       # the backend's capture service, or None
    enabled: bool = True
    say: object = None                   # a function(line): where the notes go
    state_of: object = None              # a function() -> the per-node state that must stay in place
    options: dict = field(default_factory=dict)   # run-time options kernels bake in (executor.options)
    buckets: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def run(self, feeds: dict, body, extras: dict | None = None):
        """The result of `body(feeds)` for this minibatch, eager or replayed."""
        reason = self._why_eager(feeds)
        if reason is not None:
            self.note(reason)
            return body(feeds)
        key = buckets.bucket_of(feeds, self.options)
        bucket = self.buckets.setdefault(key, _Bucket())
        bucket.seen += 1
        if bucket.eager_reason is not None or bucket.seen == 1:
            return body(feeds)
        feeds = buckets.padded(feeds, key)
        if bucket.handle is None and bucket.uploads is None:
            return self._warm_up(bucket, feeds, body)
        if bucket.handle is None:
            try:
                bucket.handle = self._capture(bucket, feeds, body)
            except Exception as err:  # noqa: BLE001 - any capture failure: this bucket runs eagerly
                return self._give_up(bucket, feeds, body, f"{type(err).__name__}: {err}")
        return self._replay(bucket, feeds, extras or {})

    # ---- the stages of a bucket ------------------------------------------------------------------
    def _warm_up(self, bucket: _Bucket, feeds: dict, body):
        """The bucket's second minibatch: an eager step on the bucket's static buffers, watched."""
        bucket.uploads = StaticUploads(self.backend.xp)
        before = _signature(self.state_of()) if self.state_of else None
        with self.graphs.scope(), self._uploads(bucket.uploads):
            result = body(feeds)
        reason = None
        if bucket.uploads.host_touches:
            reason = f"it reads the device from the host ({bucket.uploads.host_touches[0]})"
        elif before is not None and _signature(self.state_of()) != before:
            reason = "an op replaced its state instead of updating it in place"
        if reason is not None:
            self._give_up(bucket, None, None, reason)
        return result

    def _capture(self, bucket: _Bucket, feeds: dict, body):
        if len([b for b in self.buckets.values() if b.handle is not None]) >= buckets.MAX_GRAPHS:
            raise NotCapturable(f"more than {buckets.MAX_GRAPHS} input shapes")
        for key in bucket.uploads.buffers:
            if not _fillable(key, feeds):
                raise NotCapturable(f"the replay cannot supply '{key}'")
        bucket.uploads.mode = "capture"
        try:
            with self.graphs.scope(), self._uploads(bucket.uploads):
                handle = self.graphs.capture(lambda: body(feeds))
        finally:
            bucket.uploads.mode = "fill"
        if bucket.uploads.host_touches:
            raise NotCapturable(f"it reads the device from the host ({bucket.uploads.host_touches[0]})")
        bucket.memory_bytes = self.graphs.memory_bytes(handle)
        return handle

    def _replay(self, bucket: _Bucket, feeds: dict, extras: dict):
        uploads = bucket.uploads
        uploads.mode = "fill"
        with self._uploads(uploads):
            for key in uploads.buffers:
                uploads.upload(key, _host_data(key, feeds, extras), uploads.dtypes[key], self.backend.upload_now)
        uploads.mode = "capture"          # an emulated replay runs the body: no copies in it
        try:
            with self._uploads(uploads):
                result = self.graphs.launch(bucket.handle)
        finally:
            uploads.mode = "fill"
        bucket.replays += 1
        return result

    def _give_up(self, bucket: _Bucket, feeds, body, reason: str):
        bucket.eager_reason = reason
        bucket.handle = None
        self.note(f"a step of this input shape is not captured: {reason}; it runs eagerly")
        return body(feeds) if body is not None else None

    # ---- helpers -----------------------------------------------------------------------------------
    def _why_eager(self, feeds: dict) -> str | None:
        if not self.enabled:
            return None if self.graphs is None else "CUDA graphs are off (cudaGraph = false or --no-cuda-graph)"
        if self.graphs is None:
            return None
        why = buckets.bucketable(feeds)
        return None if why is None else f"steps of these inputs are not captured: {why}; they run eagerly"

    def note(self, line: str) -> None:
        if line is None or line in self.notes:
            return
        self.notes.append(line)
        if self.say is not None:
            self.say(line)

    def _uploads(self, uploads: StaticUploads):
        return _Installed(self.backend, uploads)

    @property
    def captured(self) -> int:
        return sum(1 for b in self.buckets.values() if b.handle is not None)

    @property
    def memory_bytes(self) -> int:
        """The largest captured bucket's private memory: the step's peak GPU memory for values."""
        return max((b.memory_bytes for b in self.buckets.values()), default=0)


class _Installed:
    """`with`: the backend's uploads go through `uploads` (and its host reads are counted)."""

    def __init__(self, backend, uploads: StaticUploads):
        self.backend, self.uploads = backend, uploads

    def __enter__(self):
        self.previous = self.backend.static_uploads
        self.backend.static_uploads = self.uploads

    def __exit__(self, *exc):
        self.backend.static_uploads = self.previous
        return False


def _split(feed):
    if isinstance(feed, tuple) and len(feed) == 2:
        return feed
    return feed, None


def _fillable(key, feeds: dict) -> bool:
    if isinstance(key, str):
        return key in feeds
    return (len(key) == 2 and key[1] == "mask" and key[0] in feeds) or key == ("scalars",)


def _host_data(key, feeds: dict, extras: dict):
    if isinstance(key, str):
        return _split(feeds[key])[0]
    if len(key) == 2 and key[1] == "mask":
        return np.asarray(_split(feeds[key[0]])[1], dtype=bool)
    return extras[key]


def _signature(state: dict) -> dict:
    """Per-node state as identities (arrays) and values (numbers): what a graph depends on."""
    out = {}
    for nid, entries in state.items():
        for name, value in entries.items():
            if hasattr(value, "shape") and hasattr(value, "dtype"):
                out[(nid, name)] = ("array", id(value))
            elif isinstance(value, (int, float, bool, str)) or value is None:
                out[(nid, name)] = ("value", value)
    return out
