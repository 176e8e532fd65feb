"""deploy.runtime.allocator: after the call, a message-sized allocation comes from the heap,
not mmap."""
from __future__ import annotations

import ctypes
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHILD = """
import ctypes, sys
from deploy.runtime.allocator import keep_message_buffers_on_heap
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
if sys.argv[1] == "set":
    assert keep_message_buffers_on_heap()
before = libc.mallinfo2().hblks
block = libc.malloc({size})
print(libc.mallinfo2().hblks - before)  # mmapped blocks the allocation added
"""


def mmapped_blocks_for(size: int, setting: str) -> int:
    """In a fresh process (glibc's thresholds at their start values), allocate `size` bytes,
    with or without the call first: how many mmapped blocks that allocation added."""
    out = subprocess.run([sys.executable, "-c", CHILD.format(size=size), setting], cwd=REPO,
                         check=True, capture_output=True, text=True)
    return int(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not hasattr(ctypes.CDLL(None), "mallinfo2"),
                    reason="malloc is not glibc's, or too old a glibc to count mapped blocks")
def test_a_message_sized_buffer_comes_from_the_heap():
    assert mmapped_blocks_for(1 << 20, "default") == 1  # glibc's start threshold: 128 KiB
    assert mmapped_blocks_for(1 << 20, "set") == 0
    assert mmapped_blocks_for(64 << 20, "set") == 1  # huge ones are still mapped
