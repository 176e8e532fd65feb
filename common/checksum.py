"""Checksums of weight arrays, computed the same way by shards and replicas (`deltaps verify`)."""
import zlib

import numpy as np


def weights_checksum(weights: np.ndarray) -> int:
    """crc32 of the float32 little-endian bytes (copies a strided view to contiguous first)."""
    return zlib.crc32(memoryview(np.ascontiguousarray(weights, dtype="<f4")).cast("B"))
