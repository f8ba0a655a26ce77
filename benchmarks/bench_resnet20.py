"""Forward + backward time of a whole ResNet-20 minibatch (batch 128, 32x32x3, CIFAR-10 shape).

netlang builds the network from configs/vision/resnet20_cifar10.net (the BrainScript config, the
library's layers, the compiled plan and the executor: everything a training step runs except the
update); PyTorch, when importable, runs the same architecture (3x3 convolutions without bias, batch
norm, 1x1 projection shortcuts at the stride-2 steps, 8x8 average pooling, dense 10) on the same
machine in the same process. Prints milliseconds per minibatch and the ratio.

    python benchmarks/bench_resnet20.py [--batch 128] [--repeat 5] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from torch_references import resnet20  # noqa: E402 - beside this script; imports torch only when called


def best_of(repeat: int, fn) -> float:
    fn()  # warm-up (plans, caches, allocator)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def netlang_step(batch: int, rng):
    import netlang

    model = netlang.load(os.path.join(REPO, "configs", "vision", "resnet20_cifar10.net"), precision="float")
    runner = model.network("train", precision="float")
    feeds = {"features": rng.random((batch, 3, 32, 32), dtype=np.float32),
             "labels": np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]}
    return lambda: runner.gradients(feeds)


def torch_step(batch: int, rng):
    import torch
    from torch import nn

    net = resnet20()
    x = torch.from_numpy(rng.random((batch, 3, 32, 32), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 10, batch))
    loss_fn = nn.CrossEntropyLoss(reduction="sum")

    def step():
        net.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()

    return step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    ours = best_of(args.repeat, netlang_step(args.batch, rng))
    print(f"ResNet-20, batch {args.batch}, 32x32x3, forward+backward, best of {args.repeat}")
    print(f"  netlang (NumPy)  {ours * 1000:8.1f} ms/minibatch")
    try:
        import torch
    except ImportError:
        print("  PyTorch not importable: no reference")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    theirs = best_of(args.repeat, torch_step(args.batch, rng))
    print(f"  PyTorch (CPU)    {theirs * 1000:8.1f} ms/minibatch  ({torch.get_num_threads()} threads)")
    print(f"  ratio netlang / PyTorch = {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
