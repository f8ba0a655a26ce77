"""Scaling of data-parallel training on MNIST: K = 1 vs K = 2 CPU workers, 32-bit vs 1-bit gradients.

    python benchmarks/bench_scaling.py                      MLP (784-200-10) and, if the Convolution
                                                            op is registered, the MNIST ConvNet
    python benchmarks/bench_scaling.py --models mlp --samples 12800 --threads 1

Every run is `netlang train` on the first --samples images of data/mnist (prepare with `netlang data
prepare mnist --source ../shared/data/mnist --out data/mnist`) with the same global minibatch (--minibatch)
for 2 epochs: K = 1 is a plain single process, K = 2 is `mpiexec -n 2` with DataParallelSGD at
32 bits, at 1 bit on CNTK's columns, and at 1 bit along each matrix's longer axis ("1L",
quantizeAlongLongerAxis). The figures are from the second epoch (chunks cached, plans built), taken from
the run's metrics.jsonl: aggregate samples/s, the speed-up over K = 1, and the bytes each worker
put on the wire per step (what a bandwidth-optimal algorithm sends; see distributed/comm.py).
Each worker runs with --threads BLAS threads, so K = 2 uses twice the cores of K = 1.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

MODELS = {
    "mlp": """
        model (x) = {
            h1 = DenseLayer {200, activation=ReLU} (x * (1/256))
            z = DenseLayer {10} (h1)
        }.z""",
    "convnet": """
        model = Sequential (
            (x => x * (1/256)) :
            ConvolutionalLayer {32, (5:5), pad=true, activation=ReLU} : MaxPoolingLayer {(3:3), stride=(2:2)} :
            ConvolutionalLayer {48, (3:3), pad=false, activation=ReLU} : MaxPoolingLayer {(3:3), stride=(2:2)} :
            ConvolutionalLayer {64, (3:3), pad=false, activation=ReLU} :
            DenseLayer {96, activation=ReLU} :
            LinearLayer {10})""",
}

CONFIG = """
command = train
deviceId = "cpu"
precision = "float"
modelPath = "{out}/model.dnn"
parallelTrain = {parallel}
train = {{
    action = "train"
    network = {{
        features = Input {{28:28:1}} ; labels = Input {{10}}
        {model}
        z = model (features)
        ce = CrossEntropyWithSoftmax (labels, z) ; errs = ClassificationError (labels, z)
        criterionNodes = (ce) ; evaluationNodes = (errs) ; outputNodes = (z)
    }}
    SGD = {{
        maxEpochs = 2 ; minibatchSize = {minibatch} ; learningRatesPerMB = 0.32 ; momentumAsTimeConstant = 0
        numMBsToShowResult = 0
        ParallelTrain = {{ parallelizationMethod = "DataParallelSGD"
                          DataParallelSGD = {{ gradientBits = {bits} ; quantizeAlongLongerAxis = {longer} }} }}
    }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}" ; randomize = false
               input = {{ features = {{ dim = 784 }} ; labels = {{ dim = 10 }} }} }}
}}
"""


def subset(source: str, samples: int, directory: str) -> str:
    """The first `samples` lines of the MNIST training file (a small file reads and caches fast)."""
    path = os.path.join(directory, f"train_{samples}.txt")
    with open(source) as src, open(path, "w") as dst:
        for i, line in enumerate(src):
            if i == samples:
                break
            dst.write(line)
    return path


def convolution_available() -> bool:
    from netlang.ops import registry

    try:
        registry.get("Convolution")
        return True
    except Exception:  # noqa: BLE001 - not registered (yet): the ConvNet is skipped
        return False


def run(model: str, workers: int, bits: str, data: str, directory: str, threads: int, minibatch: int) -> dict:
    """One training; `bits` is 32, 1, or 1L (1 bit along each matrix's longer axis)."""
    name = f"{model}_k{workers}_b{bits}"
    out = os.path.join(directory, name)
    cfg = os.path.join(directory, f"{name}.net")
    with open(cfg, "w") as fh:
        fh.write(CONFIG.format(out=out, parallel="true" if workers > 1 else "false", model=MODELS[model],
                               bits=bits.rstrip("L"), longer=str(bits.endswith("L")).lower(), data=data,
                               minibatch=minibatch))
    command = [sys.executable, "-m", "netlang", "train", cfg, "-q"]
    if workers > 1:
        command = [shutil.which("mpiexec"), "-n", str(workers)] + command
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        last = [r for r in map(json.loads, fh) if r["event"] == "epoch"][-1]
    parallel = last.get("parallel", {})
    return {"model": model, "workers": workers, "bits": bits if workers > 1 else None,
            "samples_per_s": last["samples"] / last["seconds"], "bytes_per_step": parallel.get("bytesSentPerStep"),
            "train_error": last["metrics"]["errs"], "wall_s": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,convnet", help="comma-separated: mlp, convnet")
    parser.add_argument("--samples", type=int, default=12800, help="training images per epoch (MLP)")
    parser.add_argument("--conv-samples", type=int, default=1920, help="training images per epoch (ConvNet)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per worker")
    parser.add_argument("--minibatch", type=int, default=64, help="global minibatch size (samples)")
    parser.add_argument("--data", default="data/mnist/Train-28x28_cntk_text.txt")
    parser.add_argument("--json", action="store_true", help="print the results as JSON lines")
    args = parser.parse_args(argv)
    if shutil.which("mpiexec") is None:
        raise SystemExit("mpiexec not found: pip install 'netlang[mpi]'")
    if not os.path.exists(args.data):
        raise SystemExit(f"{args.data} not found: netlang data prepare mnist --source ../shared/data/mnist "
                         f"--out data/mnist")
    models = [m for m in args.models.split(",") if m]
    if "convnet" in models and not convolution_available():
        print("Convolution is not registered: skipping the ConvNet", file=sys.stderr)
        models.remove("convnet")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as directory:
        for model in models:
            data = subset(args.data, args.conv_samples if model == "convnet" else args.samples, directory)
            for workers, bits in ((1, "32"), (2, "32"), (2, "1"), (2, "1L")):
                results.append(run(model, workers, bits, data, directory, args.threads, args.minibatch))
    if args.json:
        for r in results:
            print(json.dumps(r))
        return 0
    print(f"{'model':8} {'K':>2} {'bits':>4} {'samples/s':>10} {'speed-up':>8} {'bytes/step':>11} "
          f"{'vs 32-bit':>9} {'train err':>9}")
    for r in results:
        single = next(x for x in results if x["model"] == r["model"] and x["workers"] == 1)
        full = next((x for x in results
                     if x["model"] == r["model"] and x["workers"] > 1 and x["bits"] == "32"), None)
        sent = "-" if r["bytes_per_step"] is None else f"{r['bytes_per_step']:.0f}"
        ratio = (f"1/{full['bytes_per_step'] / r['bytes_per_step']:.1f}"
                 if full and r["bytes_per_step"] and r["bits"] != "32" else "")
        print(f"{r['model']:8} {r['workers']:>2} {r['bits'] or '-':>4} {r['samples_per_s']:>10.0f} "
              f"{r['samples_per_s'] / single['samples_per_s']:>8.2f} "
              f"{sent:>11} {ratio:>9} "
              f"{r['train_error'] * 100:>8.2f}%")
    print(f"(global minibatch {args.minibatch}; load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, "
          f"{args.threads} BLAS thread(s) per worker)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
