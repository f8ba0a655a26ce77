"""GPU services of the CuPy backend: compiled-kernel caches, cuDNN graphs, pinned staging.

Nothing here imports CuPy or cuDNN: `runtime/backend.py` (the one place that imports them) hands
the modules in when a GPU is selected, so these modules load, and their source generation, cache
keys and bookkeeping are tested, on a machine without a GPU.
"""
