"""netlang on an NVIDIA GPU against PyTorch eager on the same GPU, in the same run.

Workloads (issue 12): a ResNet-50 training step (224², batch 64 and 128), a ResNet-20 step (CIFAR
shape, batch 128), the MNIST ConvNet epochs 1 and 2 (configs/vision/mnist_convnet.net, minibatch 64:
the first also compiles and captures, the second is the steady state) and the ATIS slot LSTM epochs
(configs/text/atis_slots_lstm.net). A training step is forward, backward and the learner's update
(momentum SGD, L2 as in the configs), in float32, on synthetic data generated on the device; the
epochs run `netlang train` on prepared data and take the epoch's seconds from
its metrics log. PyTorch (imported here only, a reference and never a netlang dependency) runs the
same networks in eager mode, NCHW float32, with its default cuDNN settings.

    python benchmarks/bench_gpu.py [--only resnet50,resnet20,mnist,atis] [--steps 20]
                                   [--data DIR]   # DIR/mnist and DIR/atis as `netlang data prepare` writes them

Prints one line per workload: ms per step (or seconds per epoch), samples per second, and the
ratio netlang / PyTorch (time). `NETLANG_CUDNN=0` measures the im2col fallback instead of cuDNN.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from torch_references import resnet20  # noqa: E402 - beside this script; imports torch only when called

# ---- netlang: a training step on device-resident data ---------------------------------------------

def netlang_trainer(config: str, batch: int, feeds, precision: str = "float", tf32: bool = False,
                    graphs: bool = False):
    """A step function (forward, backward, fused update) for the train network of `config`; with
    `graphs`, the step runs through runtime/stepgraph.CompiledStep (captured per bucket, replayed)
    on host feeds, as the trainer runs it."""
    import netlang
    from netlang.compiler.lang import settings
    from netlang.compiler.lang.blocks import SGD_SCHEMA
    from netlang.compiler.lang.evaluator import evaluate_text
    from netlang.compiler.lang.views import validate
    from netlang.ir.shapes import to_runtime
    from netlang.runtime.backend import select_backend
    from netlang.runtime.executor import Executor, initial_parameters
    from netlang.runtime.flatbuffer import FlatParameters
    from netlang.runtime.learners import create_learner
    from netlang.runtime.stepgraph import CompiledStep

    network = netlang.load(os.path.join(REPO, config), precision="float").network("train", precision="float").network
    backend = select_backend(0, precision)
    backend.allow_tf32(tf32)
    params = network.parameters
    flat = FlatParameters([(p.name, to_runtime(p.shape)) for p in params], backend=backend,
                          lr_multipliers={p.name: p.learning_rate_multiplier for p in params})
    flat.copy_from(initial_parameters(network, 1))
    executor = Executor(network, backend, {p.name: flat.view(p.name) for p in params})
    learnable = [p for p in params if p.learning_rate_multiplier > 0]
    grads = {p.name: flat.grad_view(p.name) for p in learnable}
    block = "maxEpochs = 1 ; learningRatesPerSample = 0.0001 ; momentumPerMB = 0.9 ; L2RegWeight = 0.0001"
    learner = create_learner(settings.sgd_settings(validate(evaluate_text(block, "bench"), SGD_SCHEMA, "SGD")), flat)
    criterion = network.groups["criterion"][0]
    device_feeds = feeds(backend)

    def step():
        executor.run(device_feeds, [], loss=criterion, wrt=learnable, grads=grads, training=True)
        learner.step(1, batch)

    if not graphs:
        return step, backend.synchronize
    host_feeds = {k: backend.to_host(v) for k, v in device_feeds.items()}
    compiled = CompiledStep(backend, backend.graphs, True, say=lambda line: print("  note:", line),
                            state_of=lambda: executor.state, options=executor.options)
    STEPS_SEEN.append(compiled)

    def graph_step():
        hyper = learner.fused_hyper(1, batch)

        def body(bound):
            outputs, _ = executor.run(bound, [criterion], loss=criterion, wrt=learnable, grads=grads, training=True)
            learner.apply_fused(backend.upload_scalars(hyper))
            return {"ce": outputs[criterion.name].sum()}

        compiled.run(host_feeds, body, {("scalars",): hyper})

    return graph_step, backend.synchronize


STEPS_SEEN: list = []     # the compiled steps made, for their captured-graph memory


def graph_memory() -> str:
    """The last compiled step's captured-bucket pool size: the measured peak memory of its values."""
    if not STEPS_SEEN or not STEPS_SEEN[-1].memory_bytes:
        return "no graph captured"
    return f"graph pool {STEPS_SEEN[-1].memory_bytes / 2**20:.1f} MiB"


def image_feeds(batch: int, shape: tuple, classes: int):
    def make(backend):
        xp = backend.xp
        labels = xp.zeros((batch, classes), dtype=xp.float32)
        labels[xp.arange(batch), xp.random.randint(0, classes, batch)] = 1
        return {"features": xp.random.random((batch,) + shape, dtype=xp.float32), "labels": labels}
    return make


def timed(step, synchronize, steps: int, warmup: int = 3) -> float:
    """Seconds per step: the mean over `steps` after `warmup` (kernels compiled, graphs built)."""
    for _ in range(warmup):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return (time.perf_counter() - start) / steps


# ---- PyTorch references -------------------------------------------------------------------------

def torch_step(net, batch: int, shape: tuple, classes: int):
    import torch
    net = net.cuda().train()
    x = torch.rand((batch,) + shape, device="cuda")
    y = torch.randint(0, classes, (batch,), device="cuda")
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0001, momentum=0.9, weight_decay=0.0001)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        optimizer.step()

    return step, torch.cuda.synchronize


def torch_mnist_convnet():
    from torch import nn
    return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
                         nn.Conv2d(32, 48, 3), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(48, 64, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(64 * 3 * 3, 96), nn.ReLU(), nn.Dropout(0.5), nn.Linear(96, 10))


# ---- the workloads --------------------------------------------------------------------------------

def report(name: str, samples: int, ours: float, theirs: float | None, unit: str = "ms/step") -> None:
    scale = 1000.0 if unit == "ms/step" else 1.0
    line = f"{name:34s} netlang {ours * scale:9.2f} {unit} {samples / ours:10.0f} samples/s"
    if theirs is not None:
        line += (f" | PyTorch {theirs * scale:9.2f} {unit} {samples / theirs:10.0f} samples/s"
                 f" | ratio {ours / theirs:5.2f}")
    print(line, flush=True)


def bench_resnet50(batch: int, steps: int) -> None:
    import torchvision
    ours = timed(*netlang_trainer("configs/vision/resnet50_imagenet.net", batch,
                                  image_feeds(batch, (3, 224, 224), 1000)), steps)
    theirs = timed(*torch_step(torchvision.models.resnet50(), batch, (3, 224, 224), 1000), steps)
    report(f"ResNet-50 224² batch {batch}", batch, ours, theirs)


def bench_resnet20(steps: int) -> None:
    ours = timed(*netlang_trainer("configs/vision/resnet20_cifar10.net", 128, image_feeds(128, (3, 32, 32), 10)), steps)
    theirs = timed(*torch_step(resnet20(), 128, (3, 32, 32), 10), steps)
    report("ResNet-20 32² batch 128", 128, ours, theirs)


# ---- HKBU dlbench shapes, ResNet-50 precisions, torch.compile -----------------------------------------

TORCH_MODES = [("eager", False), ("compile", True)]    # the PyTorch references compare() measures


def torch_reference(net, batch, shape, classes, compiled: bool):
    import torch
    if compiled:
        try:
            net = torch.compile(net)
        except Exception as err:  # noqa: BLE001
            print(f"  torch.compile unavailable: {type(err).__name__}: {err}")
            return None
    return torch_step(net, batch, shape, classes)


def compare(name: str, config: str, batch: int, shape: tuple, classes: int, torch_net, steps: int,
            precision: str = "float", tf32: bool = False) -> None:
    """netlang eager and with CUDA graphs against PyTorch eager and torch.compile, same run."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    feeds = image_feeds(batch, shape, classes)
    eager = timed(*netlang_trainer(config, batch, feeds, precision, tf32), steps)
    graphed = timed(*netlang_trainer(config, batch, feeds, precision, tf32, graphs=True), steps)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else None
    results = {}
    for label, compiled in TORCH_MODES:
        try:
            made = torch_reference(torch_net(), batch, shape, classes, compiled)
            if made is None:
                continue
            step, sync = made
            if autocast is not None:
                plain = step

                def step(plain=plain):
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        plain()
            results[label] = timed(step, sync, steps)
        except Exception as err:  # noqa: BLE001
            print(f"  PyTorch {label} failed: {type(err).__name__}: {err}")
    line = (f"{name:38s} netlang eager {eager * 1000:8.2f} ms, graphs {graphed * 1000:8.2f} ms "
            f"({batch / graphed:8.0f} samples/s; {graph_memory()})")
    for label, seconds in results.items():
        line += f" | PyTorch {label} {seconds * 1000:8.2f} ms (ratio {graphed / seconds:5.2f})"
    print(line, flush=True)


def torch_fcn5():
    from torch import nn
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 2048), nn.Sigmoid(), nn.Linear(2048, 4096), nn.Sigmoid(),
                         nn.Linear(4096, 1024), nn.Sigmoid(), nn.Linear(1024, 10))


def torch_alexnet_r():
    from torch import nn
    return nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, padding=1, ceil_mode=False), nn.ReLU(),
                         nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
                         nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, padding=1),
                         nn.Flatten(), nn.Linear(64 * 4 * 4, 10))


def torch_resnet56():
    from torch import nn
    net = resnet20()
    blocks = [m for m in net if m.__class__.__name__ == "Block"]
    assert len(blocks) == 9
    layers, seen = [], 0
    for module in net:
        layers.append(module)
        if module.__class__.__name__ == "Block":
            seen += 1
            if seen % 3 == 0:          # six more blocks of the stage's width after its last one
                width = module.branch[0][0].out_channels
                layers += [type(module)(width, width, 1) for _ in range(6)]
    return nn.Sequential(*layers)


def bench_dlbench(steps: int) -> None:
    compare("FCN5 MNIST batch 4096", "configs/bench/fcn5_mnist.net", 4096, (784,), 10, torch_fcn5, steps)
    compare("AlexNet-R CIFAR batch 256", "configs/bench/alexnet_cifar10.net", 256, (3, 32, 32), 10,
            torch_alexnet_r, steps)
    compare("ResNet-56 CIFAR batch 128", "configs/bench/resnet56_cifar10.net", 128, (3, 32, 32), 10,
            torch_resnet56, steps)
    compare("ResNet-20 CIFAR batch 128", "configs/vision/resnet20_cifar10.net", 128, (3, 32, 32), 10,
            resnet20, steps)
    print("LSTM 2x256 PTB (configs/bench/lstm_ptb.net): its sparse word input is not captured yet "
          "(runtime/buckets.py); measure it with netlang train on PTB data", flush=True)


def bench_resnet50_precisions(steps: int) -> None:
    import torchvision
    for precision, tf32 in (("float", False), ("float", True), ("bf16", False)):
        label = {("float", False): "fp32", ("float", True): "TF32", ("bf16", False): "bf16"}[(precision, tf32)]
        compare(f"ResNet-50 224² batch 128 {label}", "configs/vision/resnet50_imagenet.net", 128, (3, 224, 224), 1000,
                torchvision.models.resnet50, steps, precision, tf32)


def netlang_epochs(config: str, data: str, subdir: str, overrides: list[str], epochs: int = 2) -> list[float]:
    """Seconds of each epoch of `netlang train config deviceId=0`, from its metrics log. The first
    epoch also compiles kernels, builds cuDNN plans and captures graphs; the second is the steady state."""
    out = tempfile.mkdtemp(prefix="bench-gpu-")
    log = os.path.join(out, "metrics.jsonl")         # train writes it beside the model
    command = [sys.executable, "-m", "netlang", "train", os.path.join(REPO, config), "deviceId=0",
               f"DataDir={os.path.join(data, subdir)}", f"modelPath={out}/model.dnn",
               f"train.SGD.maxEpochs={epochs}"] + overrides
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    with open(log) as fh:
        records = [json.loads(line) for line in fh]
    return [r["seconds"] for r in records if r.get("event") == "epoch"]


def bench_mnist_epoch(data: str) -> None:
    import torch
    first, second = netlang_epochs("configs/vision/mnist_convnet.net", data, "mnist", [])
    net = torch_mnist_convnet().cuda().train()
    x = torch.rand((60000, 1, 28, 28), device="cuda")
    y = torch.randint(0, 10, (60000,), device="cuda")
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    theirs = []
    for _ in range(2):              # PyTorch's first epoch also warms up (cuDNN's choices, allocations)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, 60000, 64):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x[i:i + 64]), y[i:i + 64]).backward()
            optimizer.step()
        torch.cuda.synchronize()
        theirs.append(time.perf_counter() - start)
    report("MNIST ConvNet epoch 1, minibatch 64", 60000, first, theirs[0], unit="s/epoch")
    report("MNIST ConvNet epoch 2, minibatch 64", 60000, second, theirs[1], unit="s/epoch")
    print("  (netlang reads and parses the CTF files as it trains; PyTorch's data are random tensors on the GPU)")


def bench_atis_epoch(data: str) -> None:
    for number, seconds in enumerate(netlang_epochs("configs/text/atis_slots_lstm.net", data, "atis", []), 1):
        report(f"ATIS slot LSTM epoch {number} (66,156 words)", 66156, seconds, None, unit="s/epoch")
    print("  (acceptance: >= 5x faster than the same config on the 2-core CPU; measure that with deviceId=cpu)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="dlbench,precisions,resnet50,resnet20,mnist,atis")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--data", default=os.path.join(REPO, "data"))
    parser.add_argument("--no-torch-compile", action="store_true",
                        help="leave torch.compile out (it compiles each network for a minute or more)")
    args = parser.parse_args(argv)
    TORCH_MODES[:] = [("eager", False)] if args.no_torch_compile else [("eager", False), ("compile", True)]
    wanted = set(args.only.split(","))
    print(f"netlang vs PyTorch eager, float32, same GPU; NETLANG_CUDNN={os.environ.get('NETLANG_CUDNN', '1')}",
          flush=True)
    runs = [("dlbench", lambda: bench_dlbench(args.steps)),
            ("precisions", lambda: bench_resnet50_precisions(args.steps)),
            ("resnet50", lambda: (bench_resnet50(64, args.steps), bench_resnet50(128, args.steps))),
            ("resnet20", lambda: bench_resnet20(args.steps)),
            ("mnist", lambda: bench_mnist_epoch(args.data)),
            ("atis", lambda: bench_atis_epoch(args.data))]
    for name, run in runs:
        if name in wanted:
            try:
                run()
            except Exception as err:     # noqa: BLE001 - report and go on to the next workload
                print(f"{name}: failed: {type(err).__name__}: {err}", flush=True)
                traceback.print_exc()


if __name__ == "__main__":
    main()
