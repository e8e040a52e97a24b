"""IDX files (MNIST's format): header checks with clear errors, before torchvision reads them.

An IDX file is a big-endian int32 magic number — 0x0000 then a type byte (0x08 = uint8) then the
number of dimensions — followed by one int32 per dimension and the raw values. torchvision only
asserts on a bad header, so the loaders check every file here first.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

from regene_search.errors import DataError

IMAGES_MAGIC = 2051  # uint8, 3 dimensions (count, rows, columns)
LABELS_MAGIC = 2049  # uint8, 1 dimension (count)


def check_idx(path: Path, magic: int) -> tuple[int, ...]:
    """Check that `path` is a complete uint8 IDX file with `magic`; return its shape."""
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    try:
        with open(path, "rb") as f:
            header = f.read(header_len)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        gz = path.with_name(path.name + ".gz")
        hint = f" (found {gz.name}: decompress it with gunzip)" if gz.exists() else ""
        raise DataError(f"{path}: file not found{hint}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if len(header) < 4:
        raise DataError(f"{path}: truncated IDX file ({size} bytes, no header)")
    (found,) = struct.unpack(">i", header[:4])
    if found != magic:
        raise DataError(f"{path}: not an IDX file of this kind (magic number {found}, expected {magic})")
    if len(header) < header_len:
        raise DataError(f"{path}: truncated IDX file ({size} bytes, header incomplete)")
    shape = struct.unpack(f">{ndim}i", header[4:])
    expected = header_len + math.prod(shape)
    if size != expected:
        problem = "truncated IDX file" if size < expected else "IDX file has trailing bytes"
        raise DataError(f"{path}: {problem} ({size} bytes, header {list(shape)} needs {expected})")
    return shape
