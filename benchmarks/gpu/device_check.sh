#!/bin/bash
# The GPU engine's device check: one script for a machine with an NVIDIA GPU (issue 12).
#
# Run from the repository root with the carried, git-ignored folders
#   .whl/      lark and nvidia-cudnn-frontend==1.32.0 wheels for the device's Python (3.12, x86_64)
#   .gpudata/  mnist/ (IDX files) and atis/ (IOB files), copies of the shared data sets
# It installs the wheels, prepares MNIST and ATIS, and runs, each with its own time limit and log:
#   1. tests/test_gpu.py                           (setup.log, test_gpu.log)
#   2. benchmarks/gpu/probes.py                    (probes.log: cuDNN NCHW/NHWC, capture checks)
#   3. benchmarks/bench_gpu.py                     (bench.log: netlang vs PyTorch eager)
#   4. netlang train mnist_convnet.net deviceId=0  (mnist.log: two epochs, then the test error)
# Logs go to $OUT (the device tool's output folder) or ./gpu-logs. About 9 minutes in all.
set -u
OUT=${OUT:-$PWD/gpu-logs}
mkdir -p "$OUT" data
export PYTHONUNBUFFERED=1 CUPY_CACHE_DIR=/tmp/cupy-cache
start=$(date +%s)
stamp() { echo "== $1 at +$(( $(date +%s) - start )) s"; }

{
    stamp setup
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
    python3 - <<'EOF'
import cupy, cudnn
print("cupy", cupy.__version__, "| cudnn frontend", cudnn.__version__,
      "| cuDNN library", getattr(cudnn, "backend_version", lambda: "?")())
EOF
    python3 -m netlang data prepare mnist --source .gpudata/mnist --out data/mnist --no-png -q
    python3 -m netlang data prepare atis --source .gpudata/atis --out data/atis -q
    ls data/mnist data/atis
} > "$OUT/setup.log" 2>&1
export PYTHONPATH=/tmp/site:$PWD
[ -f data/mnist/Train-28x28_cntk_text.txt ] || { cat "$OUT/setup.log"; exit 1; }

stamp "GPU tests" | tee -a "$OUT/setup.log"
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -rfE > "$OUT/test_gpu.log" 2>&1
echo "test_gpu exit $?" >> "$OUT/test_gpu.log"
tail -3 "$OUT/test_gpu.log"

stamp probes | tee -a "$OUT/setup.log"
timeout 50 python3 benchmarks/gpu/probes.py > "$OUT/probes.log" 2>&1
cat "$OUT/probes.log"

stamp benchmark | tee -a "$OUT/setup.log"
timeout 150 python3 benchmarks/bench_gpu.py --steps 15 --data data > "$OUT/bench.log" 2>&1
cat "$OUT/bench.log"

stamp "MNIST ConvNet, two epochs on the GPU" | tee -a "$OUT/setup.log"
{
    timeout 90 python3 -m netlang train configs/vision/mnist_convnet.net deviceId=0 DataDir=data/mnist \
        modelPath=out/gpu_mnist/model.dnn train.SGD.maxEpochs=2 --no-progress
    timeout 25 python3 -m netlang run configs/vision/mnist_convnet.net command=test deviceId=0 DataDir=data/mnist \
        modelPath=out/gpu_mnist/model.dnn --no-progress
} > "$OUT/mnist.log" 2>&1
tail -5 "$OUT/mnist.log"
stamp done | tee -a "$OUT/setup.log"
