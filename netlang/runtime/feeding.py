"""Reader minibatches → executor feeds: which stream feeds which input, in which form.

The reader (readers/batch.py) delivers a `StreamBatch` per stream; the executor binds arrays,
`(array, mask)` pairs or `SparseRows` by input name (runtime/executor.py lists the forms). This module
is the translation between the two, and the check, before training starts, that every input has a
stream of its name and dimension.
"""
from __future__ import annotations

import numpy as np

from netlang.errors import DataError, NetworkError
from netlang.ir.graph import Network, Node, dyn_rank
from netlang.ir.shapes import to_runtime
from netlang.ops.registry import op_of
from netlang.ops.sparse import SparseRows


def check_streams(network: Network, stream_infos: dict, reader_span=None) -> None:
    """Every network input needs a reader stream of the same name and dimension (CNTK pain #4)."""
    for node in network.inputs:
        info = stream_infos.get(node.name)
        if info is None:
            raise NetworkError(f"input '{node.name}' has no reader stream of that name", reader_span or node.span,
                               hint=f"the reader defines: {', '.join(sorted(stream_infos)) or 'no streams'}")
        dim = info[0]
        if dim != node.dim:
            raise NetworkError(f"reader stream '{node.name}' has dimension {dim}, but the network's Input "
                               f"'{node.name}' has {node.dim}", node.span,
                               hint="make the reader's `dim` equal to the product of the Input's dimensions")


def feeds_from_minibatch(network: Network, minibatch, dtype) -> dict[str, np.ndarray]:
    """Input arrays by node name from a reader minibatch (streams are bound by name)."""
    feeds = {}
    for node in network.inputs:
        stream = minibatch.streams.get(node.name)
        if stream is None:
            raise DataError(f"the reader has no stream named '{node.name}' for the network input",
                            hint=f"reader streams: {', '.join(sorted(minibatch.streams))}")
        if dyn_rank(node.layout) == 1 and stream.max_length > 1 and not stream.is_sparse:
            # frame mode: every frame of every sequence is one sample, in the reader's (packed) order
            feeds[node.name] = stream.data.values.astype(dtype, copy=False).reshape((-1,) + to_runtime(node.shape))
        else:
            feeds[node.name] = input_feed(node, stream, dtype)
    return feeds


def input_feed(node: Node, stream, dtype=np.float32):
    """The feed for input `node` from a reader's `StreamBatch` (readers/batch.py), by the input's layout."""
    if dyn_rank(node.layout) == 1 and stream.max_length <= 1:
        return stream.to_dense_batch(dtype)
    if stream.is_sparse:
        lengths = stream.lengths()
        indices, values, offsets = stream.padded_csr()
        steps = int(lengths.max()) if len(lengths) else 0
        mask = np.arange(steps)[:, None] < lengths[None, :]
        return SparseRows(indices, values.astype(dtype, copy=False), offsets, (steps, len(lengths)),
                          to_runtime(node.shape)), mask
    array, mask = stream.to_padded(dtype)
    return array.reshape(array.shape[:2] + to_runtime(node.shape)), mask


def frame_rows(mask: np.ndarray) -> np.ndarray:
    """The rows `t*N + n` of the real steps of a host `(T, N)` mask, sequence after sequence (frame
    mode's order, which is the reader's)."""
    seq, step = np.nonzero(mask.T)
    return step * mask.shape[1] + seq


def synthetic_feeds(network: Network, samples: int, sequence_length: int = 20, seed: int = 0,
                    dtype=np.float32) -> dict:
    """Random feeds for every input of `network`, without a reader (`netlang time`, export checks):
    `samples` samples per minibatch (sequence inputs: `samples // sequence_length` sequences of
    `sequence_length` steps, every step real), one-hot rows for labels and sparse inputs, values in
    [0, 1) otherwise."""
    rng = np.random.default_rng(seed)
    labels = {n.id for n in network.groups.get("label", [])}
    feeds = {}
    for node in network.inputs:
        lead = (samples,) if dyn_rank(node.layout) < 2 else (sequence_length, max(1, samples // sequence_length))
        sample = to_runtime(node.shape)
        width = int(np.prod(sample))
        if op_of(node).leaf == "sparse_input":
            rows = int(np.prod(lead))
            feeds[node.name] = SparseRows(rng.integers(0, width, rows), np.ones(rows, dtype), np.arange(rows + 1),
                                          lead, sample)
        elif node.id in labels:
            hot = np.zeros(lead + (width,), dtype)
            np.put_along_axis(hot, rng.integers(0, width, lead + (1,)), 1.0, axis=-1)
            feeds[node.name] = hot.reshape(lead + sample)
        else:
            feeds[node.name] = rng.random(lead + sample).astype(dtype)
    return feeds
