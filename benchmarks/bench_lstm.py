"""LSTM training throughput (tokens/s) on the CPU, against PyTorch's nn.LSTM on the same shapes.

An ATIS-like slot tagger: sparse word ids (vocabulary 943) → embedding 150 → LSTM 300 → dense layer
over 129 slot labels → cross entropy, on minibatches of 40 sentences of 6…18 words (12 on average),
padded and masked. One training step is forward, backward and a plain SGD update of every
parameter. netlang runs the network written in netlang (the composed RecurrentLSTMLayer, whose
recurrence is compiled into a loop over time, and the fused OptimizedRNNStack); PyTorch, when
importable, runs nn.Embedding + nn.LSTM on packed sequences + nn.Linear with the same sizes.
Runs are interleaved so that machine noise hits all alike; each figure is the best of `--repeat`
runs of `--steps` steps after a warm-up, as tokens per second of process CPU time (steady on a shared
machine; with one thread it is the compute time) and per second of wall-clock time.

    python benchmarks/bench_lstm.py [--steps 20] [--repeat 3] [--threads 1]

BLAS threads are set before numpy is imported (OPENBLAS_NUM_THREADS etc.) and torch gets the same
number, so both use the same cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

VOCAB, EMBED, HIDDEN, LABELS = 943, 150, 300, 129


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best counts")
    parser.add_argument("--batch", type=int, default=40, help="sentences per minibatch")
    parser.add_argument("--threads", type=int, default=1, help="BLAS / torch threads")
    return parser.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after the thread settings)

from netlang.compiler.graph import (
    evaluate_text,  # noqa: E402
    network,  # noqa: E402
)
from netlang.compiler.lang.nodes import BuildContext  # noqa: E402
from netlang.ops.sparse import SparseRows  # noqa: E402
from netlang.runtime.backend import select_backend  # noqa: E402
from netlang.runtime.executor import Executor  # noqa: E402

try:
    import torch
except ImportError:            # the comparison is optional
    torch = None

NETWORK = """
net = {{
    words = SparseInput{{{vocab}}}
    slots = Input{{{labels}}}
    z = Sequential (EmbeddingLayer {{{embed}}} : {lstm} : DenseLayer {{{labels}}}) (words)
    ce = CrossEntropyWithSoftmax (slots, z, tag='criterion')
}}
"""


def minibatches(count: int, batch: int, seed: int = 1) -> list:
    """(word ids (T, N), labels (T, N), mask (T, N)) with sentence lengths 6…18."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        lengths = rng.integers(6, 19, batch)
        mask = np.arange(lengths.max())[:, None] < lengths[None, :]
        words = rng.integers(0, VOCAB, mask.shape)
        labels = rng.integers(0, LABELS, mask.shape)
        out.append((words, labels, mask))
    return out


# ---- netlang -----------------------------------------------------------------------------------

class NetlangTrainer:
    def __init__(self, fused: bool):
        lstm = f"RecurrentLSTMLayer {{{HIDDEN}, allowOptimizedEngine={'true' if fused else 'false'}}}"
        text = NETWORK.format(vocab=VOCAB, labels=LABELS, embed=EMBED, lstm=lstm)
        self.net = network.build_network(evaluate_text(text).get("net"), BuildContext("", None))
        self.executor = Executor(self.net, select_backend("cpu", "float"))
        self.params = self.net.learnable_parameters
        self.loss = self.net.node("ce")

    def feeds(self, words, labels, mask):
        steps, n = mask.shape
        rows = mask.reshape(-1)
        ids = words.reshape(-1)[rows].astype(np.int32)
        counts = rows.astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        sparse = SparseRows(ids, np.ones(len(ids), np.float32), offsets, (steps, n), (VOCAB,))
        one_hot = np.zeros((steps, n, LABELS), np.float32)
        one_hot[np.arange(steps)[:, None], np.arange(n)[None, :], labels] = 1.0
        return {"words": (sparse, mask), "slots": (one_hot * mask[..., None], mask)}

    def step(self, batch, lr=0.001):
        _, grads = self.executor.run(self.feeds(*batch), [], loss=self.loss, wrt=self.params, training=True)
        for p in self.params:
            self.executor.parameters[p.name] -= lr * grads[p.name]


# ---- PyTorch -----------------------------------------------------------------------------------

class TorchTrainer:
    def __init__(self):
        self.embed = torch.nn.Embedding(VOCAB, EMBED)
        self.lstm = torch.nn.LSTM(EMBED, HIDDEN)
        self.out = torch.nn.Linear(HIDDEN, LABELS)
        params = list(self.embed.parameters()) + list(self.lstm.parameters()) + list(self.out.parameters())
        self.optimizer = torch.optim.SGD(params, lr=0.001)
        self.loss = torch.nn.CrossEntropyLoss(reduction="sum")

    def step(self, batch):
        words, labels, mask = batch
        lengths = torch.as_tensor(mask.sum(0))
        x = self.embed(torch.as_tensor(words))
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        h, _ = self.lstm(packed)
        h, _ = torch.nn.utils.rnn.pad_packed_sequence(h)
        keep = torch.as_tensor(mask)
        loss = self.loss(self.out(h[keep]), torch.as_tensor(labels)[keep])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


# ---- timing ------------------------------------------------------------------------------------

def tokens_per_second(trainer, batches) -> tuple[float, float]:
    """(tokens per CPU second, tokens per wall-clock second) over one pass through `batches`."""
    tokens = sum(int(b[2].sum()) for b in batches)
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in batches:
        trainer.step(batch)
    return tokens / (time.process_time() - cpu), tokens / (time.perf_counter() - wall)


def main(args) -> int:
    batches = minibatches(args.steps, args.batch)
    tokens = sum(int(b[2].sum()) for b in batches) / len(batches)
    print(f"ATIS-like slot tagger: vocabulary {VOCAB}, embedding {EMBED}, LSTM {HIDDEN}, {LABELS} labels; "
          f"{args.batch} sentences × {tokens / args.batch:.1f} words per minibatch; float32, {args.threads} thread(s)")
    if torch is not None:
        torch.set_num_threads(args.threads)
        torch.manual_seed(1)
    runners = {"netlang, composed RecurrentLSTMLayer": NetlangTrainer(fused=False),
               "netlang, fused OptimizedRNNStack": NetlangTrainer(fused=True)}
    torch_name = f"PyTorch {torch.__version__} nn.LSTM" if torch is not None else None
    if torch is not None:
        runners[torch_name] = TorchTrainer()
    for trainer in runners.values():
        trainer.step(batches[0])             # warm-up: plans, caches, allocator
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeat):               # interleaved rounds; each keeps its best
        for name, trainer in runners.items():
            cpu, wall = tokens_per_second(trainer, batches)
            old = best.get(name, (0.0, 0.0))
            best[name] = (max(old[0], cpu), max(old[1], wall))
    width = max(len(n) for n in best)
    print(f"  {'':<{width}}  {'tokens/CPU-s':>12}  {'tokens/s':>10}" + ("  vs PyTorch (CPU time)" if torch else ""))
    for name, (cpu, wall) in best.items():
        ratio = f"  {cpu / best[torch_name][0]:.2f}× PyTorch's throughput" if torch is not None else ""
        print(f"  {name:<{width}}  {cpu:12.0f}  {wall:10.0f}{ratio}")
    if torch is None:
        print("  (PyTorch is not importable: no comparison)")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
