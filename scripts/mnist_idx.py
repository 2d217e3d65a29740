"""Reading the MNIST IDX files (plain or `.gz`) into NumPy arrays, shared by the scripts."""

import gzip
import os
import struct

import numpy as np


def read_idx(directory, stem):
    """The array of an IDX file `stem` (plain or `.gz`) in `directory`."""
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as f:
                data = f.read()
            break
    else:
        raise FileNotFoundError(f"{stem}(.gz) not found in {directory}")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{stem}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{stem}: header says {dims}, body has {body.size} bytes")
    return body.reshape(dims)
