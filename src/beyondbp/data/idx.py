"""Reader for the IDX format of MNIST and Fashion-MNIST (LeCun et al.), gzip or not.

Layout: two zero bytes, a type code, the number of dimensions ``d``, then ``d``
big-endian 32-bit sizes, then the data in big-endian order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import DataFormatError

IDX_TYPES = {
    0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


def read_idx(path: Path | str) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` files are decompressed)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, OSError) as error:  # truncated or not gzip at all
        raise DataFormatError(f"{path} is not a complete gzip file ({error}); fetch it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataFormatError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = np.dtype(IDX_TYPES[raw[2]]), raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise DataFormatError(f"{path}: header announces {shape} ({expected} bytes), file holds "
                              f"{len(raw) - offset}; the file is truncated or damaged, fetch it again")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))
