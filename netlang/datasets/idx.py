"""IDX files (the MNIST container format), plain or gzipped.

Layout: two zero bytes, a type code, the number of dimensions `n`, then `n` big-endian uint32
sizes, then the data, big-endian, row-major. Gzip is recognised by its magic bytes, not by the name.
"""
from __future__ import annotations

import gzip
import struct

import numpy as np

from netlang.errors import DataError, DataPosition

_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder(">") if dtype.itemsize > 1 else dtype: code for code, dtype in _TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str) -> np.ndarray:
    """The array stored in IDX file `path` (native byte order)."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError("not an IDX file (it does not start with two zero bytes)", DataPosition(path),
                        hint="expected e.g. train-images-idx3-ubyte(.gz) from the MNIST distribution")
    code, ndim = raw[2], raw[3]
    if code not in _TYPES:
        raise DataError(f"unknown IDX element type 0x{code:02x}", DataPosition(path))
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError("the IDX header is cut off", DataPosition(path))
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"the IDX data has {len(raw) - header} bytes, the header promises {expected}",
                        DataPosition(path), hint="the file is truncated or damaged; download it again")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=False)


def write_idx(path: str, array: np.ndarray, *, compress: bool = False) -> None:
    """Write `array` as an IDX file (gzipped when `compress`); the inverse of `read_idx`."""
    big = array.astype(array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype)
    code = _CODES.get(big.dtype)
    if code is None:
        raise ValueError(f"IDX cannot store {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(big).tobytes()
    with open(path, "wb") as fh:
        fh.write(gzip.compress(payload, mtime=0) if compress else payload)


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as err:
        raise DataError(f"cannot open IDX file: {err.strerror or err}", DataPosition(path),
                        hint="check the --source directory") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"the gzip data is damaged ({err})", DataPosition(path),
                            hint="download the file again") from None
    return raw
