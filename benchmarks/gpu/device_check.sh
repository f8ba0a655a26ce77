#!/bin/bash
# The GPU engine's device check (issues 12 and 13): one script for a machine with an NVIDIA GPU.
#
# Run from the repository root with the carried, git-ignored folders
#   .whl/      lark and nvidia-cudnn-frontend==1.32.0 wheels for the device's Python (3.12, x86_64)
#   .gpudata/  mnist/ (IDX files) and atis/ (IOB files), copies of the shared data sets
# e.g. through the device tool: run(command="bash benchmarks/gpu/device_check.sh", carry=[".whl", ".gpudata"]).
# It installs the wheels and prepares MNIST and ATIS (setup.log), then runs the stages named in
# STAGES (default "tests bench"), each with its own time limit and log under $OUT (or ./gpu-logs):
#   tests   every GPU test (tests/test_gpu.py, the compiled step, precision and NCCL tests, and every
#           test the `backend` fixture runs on CuPy) on 8 processes, per-test limit 90 s (tests.log);
#           beside them the MNIST ConvNet trains two epochs on the GPU and is tested (mnist.log)
#   probes  benchmarks/gpu/probes.py: cuDNN NCHW/NHWC plans and times, frontend execute and random
#           draws inside a stream capture (probes.log)
#   profile netlang time of ResNet-50 (minibatch 64) and ResNet-20: each node's share of a step (profile.log)
#   bench   benchmarks/bench_gpu.py, netlang against PyTorch in the same run: ResNet-50, ResNet-20,
#           the MNIST and ATIS epochs, the dlbench shapes and ResNet-50 fp32/TF32/bf16 (bench.log);
#           BENCH_ONLY and BENCH_ARGS narrow it (e.g. BENCH_ARGS=--no-torch-compile)
#   bf16    the MNIST ConvNet two epochs in fp32 and in bf16, each tested (bf16.log)
# On an H200, STAGES="tests bench bf16" with BENCH_ARGS=--no-torch-compile took 3.5 minutes.
set -u
OUT=${OUT:-$PWD/gpu-logs}
mkdir -p "$OUT" data
export PYTHONUNBUFFERED=1 CUPY_CACHE_DIR=/tmp/cupy-cache
# The device image's mpiexec is Open MPI, which refuses root unless told (tests of the MPI paths)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
start=$(date +%s)
stamp() { echo "== $1 at +$(( $(date +%s) - start )) s" | tee -a "$OUT/setup.log"; }

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
    PYTHONPATH=/tmp/site python3 - <<'EOF'
import cupy
print("cupy", cupy.__version__, "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion())
try:
    import cudnn
    print("cudnn frontend", cudnn.__version__, "| cuDNN library", cudnn.backend_version())
except Exception as err:
    print("cudnn frontend unavailable:", type(err).__name__, err)
EOF
    PYTHONPATH=/tmp/site:$PWD python3 -m netlang data prepare mnist --source .gpudata/mnist --out data/mnist --no-png -q
    PYTHONPATH=/tmp/site:$PWD python3 -m netlang data prepare atis --source .gpudata/atis --out data/atis -q
    ls data/mnist data/atis
} >> "$OUT/setup.log" 2>&1
stamp setup
export PYTHONPATH=/tmp/site:$PWD
[ -f data/mnist/Train-28x28_cntk_text.txt ] || { cat "$OUT/setup.log"; exit 1; }
STAGES=${STAGES:-tests bench}
has() { case " $STAGES " in *" $1 "*) return 0 ;; esac; return 1; }

mnist_gpu() {   # $1: output folder, then overrides
    local out=$1; shift
    timeout 150 python3 -m netlang train configs/vision/mnist_convnet.net deviceId=0 DataDir=data/mnist \
        modelPath=$out/model.dnn train.SGD.maxEpochs=2 --no-progress "$@"
    timeout 40 python3 -m netlang run configs/vision/mnist_convnet.net command=test deviceId=0 DataDir=data/mnist \
        modelPath=$out/model.dnn --no-progress "$@"
}

if has tests; then
    stamp "GPU tests, and the MNIST ConvNet beside them"
    mnist_gpu out/gpu_mnist > "$OUT/mnist.log" 2>&1 &
    trainer=$!
    timeout ${TESTS_LIMIT:-200} python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 90 -rfE --tb=short --continue-on-collection-errors \
        -m "not slow" -k "${TESTS_K:-cupy or test_gpu or stepgraph or nccl or precision}" tests > "$OUT/tests.log" 2>&1
    echo "tests exit $?" >> "$OUT/tests.log"
    tail -4 "$OUT/tests.log"
    wait $trainer
    grep -E "Finished Epoch|Final Results|rror" "$OUT/mnist.log" | tail -6
fi

if has probes; then
    stamp probes
    timeout 60 python3 benchmarks/gpu/probes.py > "$OUT/probes.log" 2>&1
    cat "$OUT/probes.log"
fi

if has profile; then
    stamp "per-node step times"
    { timeout 40 python3 -m netlang time configs/vision/resnet50_imagenet.net deviceId=0 -n 3 train.SGD.minibatchSize=64
      timeout 30 python3 -m netlang time configs/vision/resnet20_cifar10.net deviceId=0 -n 5; } > "$OUT/profile.log" 2>&1
    head -40 "$OUT/profile.log"
fi

if has bench; then
    stamp benchmark
    timeout ${BENCH_LIMIT:-240} python3 benchmarks/bench_gpu.py --steps ${BENCH_STEPS:-10} --data data \
        --only ${BENCH_ONLY:-resnet50,resnet20,mnist,atis,dlbench,precisions} ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
    grep -v "^  File\|^    " "$OUT/bench.log" | tail -30
fi

if has bf16; then
    stamp "bf16 accuracy"
    { mnist_gpu out/acc_float precision=float; mnist_gpu out/acc_bf16 precision=bf16; } > "$OUT/bf16.log" 2>&1
    grep -E "Finished Epoch|Final Results|rror" "$OUT/bf16.log" | tail -8
fi
stamp done
