"""How long does parsing a large, realistic config take?

Generates a ~3,000-line BrainScript config (top-level keys, command blocks, a network with layer
definitions, functions, array members, arithmetic, strings with $var$, all comment styles, SGD and
reader blocks) and prints the time `parse_text` takes on it, best of several runs.

    python benchmarks/bench_parse.py [--lines 3000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import time


def block(i: int) -> str:
    """One ~60-line chunk of config; `i` makes every member name unique."""
    return f'''
# ---------------- experiment {i} ----------------
train{i} = {{
    action = "train"   // what to do
    modelPath = "$ModelDir$/model{i}.dnn"
    deviceId = -1 ; precision = 'float'
    traceLevel = 1

    BrainScriptNetworkBuilder = {{
        imageShape = 28:28:1
        labelDim = 10
        hiddenDims[d:1..3] = 128 * d + 64 - (d - 1) * 32
        featScale = 1 / 256
        /* a small convolutional stack,
           spread over several lines */
        ConvBN(x, outChannels, kernel = (3:3), stride = 1, bnTimeConst = 4096) = {{
            c = ConvolutionalLayer {{outChannels, kernel, pad = true, stride = stride, bias = false}}(x)
            b = BatchNormalizationLayer {{normalizationTimeConstant = bnTimeConst, spatialRank = 2}}(c)
            r = ReLU(b)
        }}.r
        Stack(depth, x) = if depth == 0 then x else ConvBN(Stack(depth - 1, x), 16 * depth)
        model = Sequential (
            ConvolutionalLayer {{32, (5:5), pad = true, activation = ReLU}} :
            MaxPoolingLayer {{(3:3), stride = (2:2)}} :
            DenseLayer {{hiddenDims[1], activation = ReLU}} :
            Dropout :
            LinearLayer {{labelDim}}
        )
        features = Input {{imageShape}}
        labels = Input {{labelDim}}
        z = model (features .* featScale)
        ce = CrossEntropyWithSoftmax (labels, z)
        errs = ClassificationError (labels, z)
        top5 = ClassificationError (labels, z, topN = 5)
        scaled = [| 1 ; 2 ; 3 |]
        doubled = array[1..4](k => k * 2 + {i} % 7)
        check = (labelDim >= 10 && labelDim <= 1000) || !(imageShape[0] != 28)
        featureNodes = (features)
        labelNodes = (labels)
        criterionNodes = (ce)
        evaluationNodes = (errs : top5)
        outputNodes = (z)
    }}

    SGD = {{
        epochSize = 60000
        minibatchSize = 64:128*2:256
        learningRatesPerMB = 0.1*5:0.3*10:0.01
        momentumAsTimeConstant = 0*5:1024
        maxEpochs = {i % 40 + 10}
        L2RegWeight = 1e-4 ; dropoutRate = 0.5*2:0.25
        numMBsToShowResult = 500
        ParallelTrain = [ parallelizationMethod = "DataParallelSGD" ; distributedMBReading = true
            DataParallelSGD = [ gradientBits = 32 ] ]
    }}

    reader = {{
        readerType = "CNTKTextFormatReader"
        file = "$DataDir$/Train-28x28_cntk_text.txt"
        randomize = true
        input = {{
            features = {{ dim = 784 ; format = "dense" }}
            labels = {{ dim = 10 ; format = "dense" }}
        }}
    }}
}}
'''


def make_config(lines: int) -> str:
    parts = ['RootDir = "."\nDataDir = "$RootDir$/data"\nModelDir = "$RootDir$/models"\n']
    i = 0
    while sum(p.count("\n") for p in parts) < lines:
        parts.append(block(i))
        i += 1
    names = ":".join(f"train{k}" for k in range(i))
    parts.append(f"command = {names}\n")
    return "".join(parts)


def main() -> None:
    argp = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    argp.add_argument("--lines", type=int, default=3000)
    argp.add_argument("--repeat", type=int, default=5)
    args = argp.parse_args()

    t0 = time.perf_counter()
    from netlang.grammar.parser import _parser, parse_text

    _parser()
    setup = time.perf_counter() - t0

    text = make_config(args.lines)
    n_lines = text.count("\n")
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        record = parse_text(text, "<bench>")
        times.append(time.perf_counter() - t)
    best = min(times)
    print(f"parser setup (import + LALR table): {setup * 1000:.0f} ms")
    print(f"parsed {n_lines} lines, {len(text)} chars, {len(record.members)} top-level members")
    print(f"parse time: best {best * 1000:.0f} ms, median {sorted(times)[len(times) // 2] * 1000:.0f} ms "
          f"({n_lines / best:,.0f} lines/s)")


if __name__ == "__main__":
    main()
