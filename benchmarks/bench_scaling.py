"""Scaling of data-parallel training on MNIST: K = 1 vs K = 2 workers, 32-bit, 1-bit and BMUF.

    python benchmarks/bench_scaling.py                        both models, global minibatches 64 and 256
    python benchmarks/bench_scaling.py --models mlp --minibatches 256 --threads 1
    python benchmarks/bench_scaling.py --methods 32,1,1L,bmuf --json

Every run is `netlang train --profile` on the first --samples images of data/mnist (prepare with
`netlang data prepare mnist --source ../shared/data/mnist --out data/mnist`) for two epochs with
the same global minibatch: K = 1 is a plain single process, K = 2 is `mpiexec -n 2` with
DataParallelSGD at 32 bits ("32"), at 1 bit on CNTK's columns ("1"), at 1 bit along each matrix's
longer axis ("1L", quantizeAlongLongerAxis), or BlockMomentumSGD ("bmuf", --block-size samples
between syncs). The figures are from the second epoch (chunks cached, plans built), taken from the
run's metrics.jsonl:

* aggregate samples/s, the speed-up over K = 1 at the same minibatch, the bytes each worker put on
  the wire per step (what a bandwidth-optimal algorithm sends; see distributed/comm.py), the
  training error;
* the step broken into read / forward / backward / quantize / communicate / wait / update / other,
  in ms per step, for every rank (`--profile`, runtime/profile.py);
* a modelled time per step on a 10 Gb/s and a 100 Gb/s link: the slowest rank's step without its
  communicate and wait phases, plus its bytes per step at the link's rate (no latency, no overlap
  with backward: a bound from above). On one machine MPI moves bytes through shared memory,
  which hides what 1-bit SGD saves on a network; the model shows it.

Threads: by default netlang's own (a single process uses all cores, each of K workers its share,
netlang/launcher.py); --threads N gives every process N BLAS/OpenMP threads. The machine should
be quiet: the load average is printed with the results.
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

METHODS = {   # name -> (parallelizationMethod, gradientBits, quantizeAlongLongerAxis)
    "32": ("DataParallelSGD", 32, "false"),
    "1": ("DataParallelSGD", 1, "false"),
    "1L": ("DataParallelSGD", 1, "true"),
    "bmuf": ("BlockMomentumSGD", 32, "false"),
}

LINKS = {"10 Gb/s": 10e9 / 8, "100 Gb/s": 100e9 / 8}   # bytes per second

PHASES = ("read", "forward", "backward", "quantize", "communicate", "wait", "update", "other")

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
        ParallelTrain = {{ parallelizationMethod = "{method}"
                          DataParallelSGD = {{ gradientBits = {bits} ; quantizeAlongLongerAxis = {longer} }}
                          BlockMomentumSGD = {{ blockSize = {block_size} }} }}
    }}
    reader = {{ readerType = "CNTKTextFormatReader" ; file = "{data}" ; randomize = false
               input = {{ features = {{ dim = 784 }} ; labels = {{ dim = 10 }} }} }}
}}
"""


def subset(source: str, samples: int, directory: str) -> str:
    """The first `samples` lines of the MNIST training file (a small file reads and caches fast)."""
    path = os.path.join(directory, f"train_{samples}.txt")
    if not os.path.exists(path):
        with open(source) as src, open(path, "w") as dst:
            for i, line in enumerate(src):
                if i == samples:
                    break
                dst.write(line)
    return path


def run(model: str, minibatch: int, workers: int, method: str, data: str, directory: str,
        threads: int | None, block_size: int) -> dict:
    """One training; the second epoch's figures."""
    name = f"{model}_mb{minibatch}_k{workers}_{method}"
    out = os.path.join(directory, name)
    cfg = os.path.join(directory, f"{name}.net")
    parallel_method, bits, longer = METHODS[method]
    with open(cfg, "w") as fh:
        fh.write(CONFIG.format(out=out, parallel="true" if workers > 1 else "false", model=MODELS[model],
                               method=parallel_method, bits=bits, longer=longer, data=data, minibatch=minibatch,
                               block_size=block_size))
    command = [sys.executable, "-m", "netlang", "train", cfg, "--profile", "-q"]
    if workers > 1:
        command = [shutil.which("mpiexec"), "-n", str(workers)] + command
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        records = [json.loads(line) for line in fh]
    epoch = [r for r in records if r["event"] == "epoch"][-1]
    profile = [r for r in records if r["event"] == "profile"][-1]
    parallel = epoch.get("parallel", {})
    return {"model": model, "minibatch": minibatch, "workers": workers, "method": method if workers > 1 else "-",
            "samples_per_s": epoch["samples"] / epoch["seconds"], "bytes_per_step": parallel.get("bytesSentPerStep", 0.0),
            "train_error": epoch["metrics"]["errs"], "steps": profile["steps"],
            "ms_per_step": [{p: 1e3 * rank[p] for p in PHASES} for rank in profile["secondsPerStep"]]}


def modelled_ms(result: dict, bytes_per_second: float) -> float:
    """The slowest rank's step without its exchange, plus its bytes on a link of that rate."""
    compute = max(sum(ms.values()) - ms["communicate"] - ms["wait"] for ms in result["ms_per_step"])
    return compute + 1e3 * result["bytes_per_step"] / bytes_per_second


def print_results(results: list[dict], note: str) -> None:
    def single(r):
        return next(x for x in results if x["model"] == r["model"] and x["minibatch"] == r["minibatch"]
                    and x["workers"] == 1)

    head = f"{'model':8} {'mb':>4} {'K':>2} {'method':>6} {'samples/s':>10} {'speed-up':>8} {'bytes/step':>11} {'err':>6}"
    for link in LINKS:
        head += f" | {link + ' ms/step':>16} {'speed-up':>8}"
    print(head)
    for r in results:
        one = single(r)
        line = (f"{r['model']:8} {r['minibatch']:>4} {r['workers']:>2} {r['method']:>6} {r['samples_per_s']:>10.0f} "
                f"{r['samples_per_s'] / one['samples_per_s']:>8.2f} {r['bytes_per_step']:>11.0f} "
                f"{100 * r['train_error']:>5.2f}%")
        for rate in LINKS.values():
            ms = modelled_ms(r, rate)
            line += f" | {ms:>16.3f} {modelled_ms(one, rate) / ms:>8.2f}"
        print(line)
    print()
    print(f"{'model':8} {'mb':>4} {'K':>2} {'method':>6} {'rank':>4}" + "".join(f"{p:>12}" for p in PHASES)
          + f"{'total':>9}  (ms per step)")
    for r in results:
        for rank, ms in enumerate(r["ms_per_step"]):
            print(f"{r['model']:8} {r['minibatch']:>4} {r['workers']:>2} {r['method']:>6} {rank:>4}"
                  + "".join(f"{ms[p]:>12.3f}" for p in PHASES) + f"{sum(ms.values()):>9.3f}")
    print(note)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,convnet", help="comma-separated: mlp, convnet")
    parser.add_argument("--minibatches", default="64,256", help="global minibatch sizes (samples)")
    parser.add_argument("--methods", default="32,1,bmuf", help=f"K = 2 methods: {', '.join(METHODS)}")
    parser.add_argument("--samples", type=int, default=12800, help="training images per epoch (MLP)")
    parser.add_argument("--conv-samples", type=int, default=5120, help="training images per epoch (ConvNet)")
    parser.add_argument("--block-size", type=int, default=4096, help="BMUF: samples over all workers per block")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads per process (default: netlang's, cores / workers)")
    parser.add_argument("--data", default="data/mnist/Train-28x28_cntk_text.txt")
    parser.add_argument("--json", action="store_true", help="print the results as JSON lines")
    args = parser.parse_args(argv)
    if shutil.which("mpiexec") is None:
        raise SystemExit("mpiexec not found: pip install 'netlang[mpi]'")
    if not os.path.exists(args.data):
        raise SystemExit(f"{args.data} not found: netlang data prepare mnist --source ../shared/data/mnist "
                         f"--out data/mnist")
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method {unknown[0]}: use {', '.join(METHODS)}")
    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as directory:
        for model in [m for m in args.models.split(",") if m]:
            data = subset(args.data, args.conv_samples if model == "convnet" else args.samples, directory)
            for minibatch in map(int, args.minibatches.split(",")):
                for workers, method in [(1, "32")] + [(2, m) for m in methods]:
                    results.append(run(model, minibatch, workers, method, data, directory, args.threads,
                                       args.block_size))
    if args.json:
        for r in results:
            print(json.dumps(r))
        return 0
    threads = "netlang's default threads" if args.threads is None else f"{args.threads} BLAS thread(s) per process"
    print_results(results, f"(load average {os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} CPUs, {threads}; "
                           f"{time.perf_counter() - start:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
