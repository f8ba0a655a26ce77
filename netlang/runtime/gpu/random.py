"""Counter-based random numbers on the GPU, for the CuPy backend's `random_stream` (dropout masks,
the learners' Gaussian noise).

Every number is a pure function of three integers: the stream's 64-bit key (from its seed), a
counter that lives in device memory, and the number's index in the draw. A draw is two launches:
the kernel that writes the numbers reads the counter, and a one-thread kernel then advances it.
Both are device work, so

* a CUDA graph that captured a draw draws new numbers on every replay, as the eager step does (a
  generator whose state the host moves on would replay the captured numbers every step);
* a checkpoint of (key, counter) resumes the very numbers the uninterrupted run draws.

The mixing function is SplitMix64's finaliser, applied to the key, the counter and the index in
turn: for a fixed key and counter it is a bijection of the index, so no two numbers of a draw
come from the same input. Uniform numbers take the top 53 bits; normal ones are Box-Muller over
two uniforms per number.
"""
from __future__ import annotations

import numpy as np

SOURCE = r"""
__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Uniform in [0, 1): the top 53 bits of the mixed (key, counter, index).
__device__ __forceinline__ double unit(unsigned long long key, unsigned long long counter, long long i) {
    const unsigned long long base = mix64(key ^ mix64(counter + 0x9E3779B97F4A7C15ULL));
    const unsigned long long z = mix64(base + (unsigned long long)i * 0x9E3779B97F4A7C15ULL);
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

extern "C" __global__ void uniform(double* out, const unsigned long long* counter, unsigned long long key,
                                   long long n) {
    const unsigned long long c = counter[0];
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x)
        out[i] = unit(key, c, i);
}

extern "C" __global__ void normal(T* out, const unsigned long long* counter, unsigned long long key, long long n) {
    const unsigned long long c = counter[0];
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x) {
        const double radius = sqrt(-2.0 * log(1.0 - unit(key, c, 2 * i)));      // 1 - u is in (0, 1]
        out[i] = (T)(radius * cos(6.283185307179586 * unit(key, c, 2 * i + 1)));
    }
}

// After a draw, in the same stream: one thread moves the counter on.
extern "C" __global__ void advance(unsigned long long* counter, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x)
        counter[0] += 1ULL;
}
"""


def stream_key(seed) -> int:
    """The 64-bit key of a stream seeded by `seed` (an int or a list of ints, as NumPy takes)."""
    entropy = [int(k) for k in np.atleast_1d(seed)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def draw_uniform(kernels, out, counter, key: int) -> None:
    """Fill float64 `out` with uniform numbers of draw `counter`, then advance the counter."""
    kernels.launch(SOURCE, "uniform", np.float64, out.size, (out, counter, np.uint64(key), np.int64(out.size)))
    kernels.launch(SOURCE, "advance", np.float64, 1, (counter, np.int64(1)))


def draw_normal(kernels, out, counter, key: int) -> None:
    """Fill `out` (float32 or float64) with standard normal numbers, then advance the counter."""
    kernels.launch(SOURCE, "normal", out.dtype, out.size, (out, counter, np.uint64(key), np.int64(out.size)))
    kernels.launch(SOURCE, "advance", np.float64, 1, (counter, np.int64(1)))


def reference_uniform(key: int, counter: int, n: int) -> np.ndarray:
    """The numbers `uniform` draws, computed by NumPy: what the tests hold the CUDA kernel to."""
    with np.errstate(over="ignore"):
        def mix(z):
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            return z ^ (z >> np.uint64(31))
        golden = np.uint64(0x9E3779B97F4A7C15)
        base = mix(np.uint64(key) ^ mix(np.uint64(counter) + golden))
        z = mix(base + np.arange(n, dtype=np.uint64) * golden)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
