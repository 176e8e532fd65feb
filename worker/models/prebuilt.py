"""The worker's kernel, and its readers' compiled scan and string hash, built ahead of time into
an extension module, so `deltaps train` starts without importing numba.

Why: numba's JIT costs every process close to a second before its first batch even when every
function comes from its on-disk cache (importing numba, then setting up its compiler's target,
which imports most of numba's implementation modules), against a run that otherwise starts in a
few tenths. numba.pycc compiles the very same functions (`worker.models.kernel`, with the
optimizers' per-coordinate code inlined) into a plain extension module that needs only numpy
at run time. Same source, same compiler, no fast-math: the results are the JIT's bit for bit
(tests/unit/test_prebuilt.py checks it).

The module is built for the instruction set of the machine that builds it (numba's JIT, too,
compiles for its host): the word-at-a-time scans and the bitmap indexer count bits in one
instruction there, where the portable baseline has none. So it is built once per version of the
kernel's source, the numba, the Python and the CPU in use (`key()`: edited code is never run
from a stale build, nor a build made for another CPU, say from a home directory that several
machines share), into `DELTAPS_KERNEL_DIR` or
~/.cache/deltaps, by `python -m worker.models.prebuilt` (which `deltaps up` runs when the build
is missing). When it is absent or cannot be loaded the worker uses the JIT: slower to start,
same results. numba.pycc needs a C compiler to link, and numba marks it as pending deprecation;
the JIT fallback keeps training working wherever it is gone.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import sys
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parents[2]
# what the compiled code is made of: the kernel and the optimizer math it inlines, the readers'
# scan and hash and the constants they read
SOURCES = ("worker/models/kernel.py", "common/optim/ftrl.py", "common/optim/adagrad.py",
           "common/optim/sgd.py", "common/optim/lazy_adam.py", "common/optim/stored.py",
           "common/optim/params.py", "worker/models/prebuilt.py",
           "worker/sources/scan_kernel.py", "worker/sources/sparse_kernel.py",
           "worker/sources/json_kernel.py",
           "worker/sources/string_hash.py",
           "worker/sources/swar.py", "worker/sources/fields.py", "common/hashing.py",
           "common/features/entries.py")
# every export's signature; numba's JIT would specialize on the same types (the bytes a reader
# scans are read-only: a file block, an Arrow buffer)
_BYTES = "Array(u1, 1, 'C', readonly=True)"
SIGNATURES = {
    "group_by_event_i8": "none(i8[::1], i8[::1], i8[::1], i8[::1])",
    "group_by_event_i4": "none(i8[::1], i4[::1], i8[::1], i8[::1])",
    "mix_fields": "none(u8[::1], u8[::1], i8[::1], u8[::1])",
    "mix_entries": "i8(i8[::1], i2[::1], u8[::1], f8[::1], i8[::1], u8[::1], u8, b1, u8[::1], "
                   "i8[::1])",
    "patch_rows": "none(u8[::1], f4[:, ::1], i8[::1], u8[::1], f4[:, ::1], i8)",
    "index_slots": "i8(u8[::1], u8, u8[::1], i4[::1], i8[::1], i4[::1])",
    "count_scores": "f8(f8[::1], f8[::1], f8[::1], i8)",
    "learn_events_i4": "none(i8[::1], i4[::1], f4[::1], f4[::1], f4[:, ::1], f8[:, ::1], i8, "
                       "f8[::1], f8[::1], f4[:, ::1])",
    "learn_events_i8": "none(i8[::1], i8[::1], f4[::1], f4[::1], f4[:, ::1], f8[:, ::1], i8, "
                       "f8[::1], f8[::1], f4[:, ::1])",
    "scan_block": f"i8({_BYTES}, i8, i8, u8, u8, i8[::1], i8[::1], f8[::1], u1[:, ::1], "
                  "i8[::1], u1[:, ::1], i8[::1], f4[::1], u8[::1], f8[::1], i2[::1], i8[::1])",
    "scan_sparse": f"i8({_BYTES}, i8, i8, u1[::1], f8[::1], u1[:, ::1], i8[::1], u1[:, ::1], i8[::1], "
                   "f4[::1], f4[::1], i2[::1], i8[::1], u8[::1], i2[::1], i8[::1], f8[::1], "
                   "i8[:, ::1], i8[::1], i8[:, ::1], u8[::1], i8[::1], i8[::1])",
    "scan_json": f"i8({_BYTES}, i8, f8[::1], f4[::1], f4[::1], i2[::1], i8[::1], f8[::1], "
                 "u8[::1], i8[:, ::1], u8[::1], i8[::1], i8[::1], i8[::1], i8[::1], i8[::1], "
                 "i8[::1], u8[::1], i8[::1], f8[::1], i8[::1])",
    "hash_values": f"i8(i8[::1], {_BYTES}, i8[::1], u8[::1])",
    "line_cuts": f"i8({_BYTES}, i8, i8, i8[::1])",
}


def kernel_dir() -> Path:
    env = os.environ.get("DELTAPS_KERNEL_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deltaps"


def key() -> str:
    """Names one build: a hash of the sources, the numba and Python versions and the machine."""
    h = hashlib.sha256()
    for rel in SOURCES:
        h.update(rel.encode() + b"\0" + (_ROOT / rel).read_bytes() + b"\0")
    # numba's version file, found without importing numba (or importlib.metadata: both cost
    # more than the rest of this check)
    numba = importlib.util.find_spec("numba")
    if numba is not None and numba.origin:
        h.update(Path(numba.origin).with_name("_version.py").read_bytes())
    h.update(f"{sys.version} {platform.machine()} {_cpu_features()}".encode())
    return h.hexdigest()[:16]


def _cpu_features() -> str:
    """This CPU's instruction-set extensions as the OS lists them (the first CPU's flags line
    of /proc/cpuinfo on Linux, on x86 and Arm alike), or "" where there is no such list: the
    build is then made for the portable baseline of the architecture (`target_cpu`)."""
    try:
        with open("/proc/cpuinfo", "rb") as info:
            for line in info:
                if line.startswith((b"flags", b"Features")):
                    return line.split(b":", 1)[1].strip().decode("ascii", "replace")
                if not line.strip():  # the end of the first CPU's block
                    break
    except OSError:
        pass
    return ""


def target_cpu() -> str:
    """What the build is compiled for: numba's name for the host CPU, whose extensions the key
    names (`_cpu_features`), else "" (LLVM's generic CPU of the architecture)."""
    return "host" if _cpu_features() else ""


def module_name() -> str:
    return f"_deltaps_kernel_{key()}"


def module_path(directory: Path | None = None) -> Path:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return (directory or kernel_dir()) / f"{module_name()}{suffix}"


def load(directory: Path | None = None):
    """The prebuilt module for the current sources, or None (not built, or not loadable)."""
    path = module_path(directory)
    if not path.is_file():
        return None
    try:
        spec = importlib.util.spec_from_file_location(module_name(), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, OSError):
        return None
    return module


class Kernel:
    """The kernel functions, prebuilt or JIT, behind one call shape (`worker.models.kernel`
    documents them): arrays are made contiguous of the exported dtypes first (no copy when they
    already are), which the prebuilt functions require and the JIT does not mind."""

    def __init__(self, module=None):
        if module is None:
            from worker.models import kernel
            self.prebuilt = False
            self._group_i4 = self._group_i8 = kernel.group_by_event
            self._learn_i4 = self._learn_i8 = kernel.learn_events
            self._patch = kernel.patch_rows
            self._scores = kernel.count_scores
            self._mix, self._mix_entries = kernel.mix_fields, kernel.mix_entries
            self._index = kernel.index_slots
        else:
            self.prebuilt = True
            self.module = module
            self._group_i4, self._group_i8 = module.group_by_event_i4, module.group_by_event_i8
            self._learn_i4, self._learn_i8 = module.learn_events_i4, module.learn_events_i8
            self._patch = module.patch_rows
            self._scores = module.count_scores
            self._mix, self._mix_entries = module.mix_fields, module.mix_entries
            self._index = module.index_slots

    def group_by_event(self, n: int, rows, inverse,
                       offsets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, entries) of `kernel.group_by_event`; with the `offsets` of entries already
        grouped by event (`Features.offsets`), those and the indices as they are."""
        if offsets is not None:
            return offsets, inverse
        rows = np.ascontiguousarray(rows, np.int64)
        offsets, entries = np.zeros(n + 1, np.int64), np.empty(rows.size, np.int64)
        if inverse.dtype == np.int32:
            self._group_i4(rows, np.ascontiguousarray(inverse), offsets, entries)
        else:
            self._group_i8(rows, np.ascontiguousarray(inverse, np.int64), offsets, entries)
        return offsets, entries

    def unique_slots(self, ids: np.ndarray, bits: int, bitmap: np.ndarray,
                     prefix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct int64 slots, int32 index of each entry into them) of feature `ids`
        in a model of `bits` bits, with `kernel.index_slots` on `bitmap` (uint64, a bit per
        slot, all 0; left so) and `prefix` (int32, one per word of it)."""
        ids = np.ascontiguousarray(ids, np.uint64)
        uniq = np.empty(ids.size, np.int64)
        inverse = np.empty(ids.size, np.int32)
        count = self._index(ids, np.uint64((1 << bits) - 1), bitmap, prefix, uniq, inverse)
        return uniq[:count], inverse

    def mix_fields(self, words, seeds, ends, ids) -> None:
        """`kernel.mix_fields`: `ids` (C-contiguous uint64) filled in place; a
        `common.features.Featurizer` mixer."""
        c = np.ascontiguousarray
        self._mix(c(words, np.uint64), c(seeds, np.uint64), c(ends, np.int64), ids)

    def mix_entries(self, entries, codes: np.ndarray, seeds: np.ndarray, bias: int,
                    with_bias: bool):
        """`kernel.mix_entries` of a batch's `common.features.entries.Entries`: its `Features`,
        grouped by event (a `common.features.Featurizer` entries mixer)."""
        from common.features import Features
        c = np.ascontiguousarray
        n = entries.n
        size = entries.words.size + (n if with_bias else 0)
        ids, offsets = np.empty(size, np.uint64), np.empty(n + 1, np.int64)
        words = c(entries.words, np.uint64)
        count = self._mix_entries(c(entries.offsets, np.int64), c(entries.fields, np.int16),
                                  words, words.view(np.float64), c(codes, np.int64),
                                  c(seeds, np.uint64), np.uint64(bias), bool(with_bias), ids,
                                  offsets)
        return Features(n, None, ids[:count], offsets)  # rows made if asked for

    def patch_rows(self, slots, state, applied, keys, deltas, number: int) -> None:
        """`kernel.patch_rows`: `state` (C-contiguous float32) changed in place."""
        c = np.ascontiguousarray
        self._patch(c(slots, np.uint64), state, c(applied, np.int64), c(keys, np.uint64),
                    c(deltas, np.float32), int(number))

    def count_scores(self, p, y, counts, bins: int) -> float:
        """`kernel.count_scores`: `counts` (flat C-contiguous float64) changed in place."""
        c = np.ascontiguousarray
        return self._scores(c(p, np.float64), c(y, np.float64), counts, int(bins))

    def learn_events(self, offsets, entries, labels, importance, state, block, kind: int,
                     hp) -> tuple[np.ndarray, np.ndarray]:
        """`kernel.learn_events` from float32 `state` on the float64 `block` (reused by the
        caller; its contents are overwritten): (the events' probabilities, float32 deltas).
        `importance` None weighs every event 1."""
        c = np.ascontiguousarray
        p = np.empty(offsets.size - 1, np.float64)
        deltas = np.empty(state.shape, np.float32)
        learn = self._learn_i4 if entries.dtype == np.int32 else self._learn_i8
        learn(c(offsets, np.int64), entries if entries.dtype == np.int32 else c(entries, np.int64),
              c(labels, np.float32),
              np.empty(0, np.float32) if importance is None else c(importance, np.float32),
              c(state, np.float32), block, int(kind), c(hp, np.float64), p, deltas)
        return p, deltas


_current: Kernel | None = None


def kernel() -> Kernel:
    """This process's kernel: the prebuilt module when there is one for the current sources,
    else the JIT (loaded once)."""
    global _current
    if _current is None:
        _current = Kernel(load())
    return _current


def build(directory: Path | None = None) -> Path:
    """Compile the kernel into `module_path(directory)` (tens of seconds; imports numba).
    Written under a temporary name and renamed, so a reader never loads half a file."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc's pending-deprecation notice
        from numba.pycc import CC
        from numba.pycc import compiler as pycc_compiler
    from numba.core import codegen
    from worker.models import kernel
    from worker.sources import json_kernel, scan_kernel, sparse_kernel, string_hash
    functions = {"learn_events_i4": kernel.learn_events, "learn_events_i8": kernel.learn_events,
                 "patch_rows": kernel.patch_rows,
                 "mix_fields": kernel.mix_fields, "mix_entries": kernel.mix_entries,
                 "index_slots": kernel.index_slots,
                 "count_scores": kernel.count_scores, "group_by_event_i8": kernel.group_by_event,
                 "group_by_event_i4": kernel.group_by_event, "scan_block": scan_kernel.scan_block,
                 "scan_sparse": sparse_kernel.scan_sparse, "scan_json": json_kernel.scan_json,
                 "hash_values": string_hash.hash_values, "line_cuts": scan_kernel.line_cuts}

    class ReleaseGil(pycc_compiler.Flags):
        """pycc has no nogil option; its Python wrappers release the GIL around the compiled
        call (as the JIT's nogil=True does) when the flags say so, so the trainer's helper
        thread keeps featurizing while a batch is learned."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.release_gil = True

    out = module_path(directory)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = f"{module_name()}_tmp{os.getpid()}"
    cc = CC(module_name(), source_module=kernel)
    cc.use_nrt = False  # the functions allocate nothing (`worker.models.kernel`, `_nrt=False`)
    cc.target_cpu = target_cpu()
    cc.output_dir = str(out.parent)
    cc.output_file = tmp_name + out.suffix
    for name, sig in SIGNATURES.items():
        cc.export(name, sig)(functions[name].py_func)
    compiler_flags = pycc_compiler.Flags
    pycc_compiler.Flags = ReleaseGil
    # pycc gives LLVM a CPU model and no extensions, which then enables every extension of the
    # model, also those a virtual machine hides; the JIT names the host's own, and so does this
    aot_features = codegen.AOTCPUCodegen._customize_tm_features
    if cc.target_cpu == "host":
        codegen.AOTCPUCodegen._customize_tm_features = \
            codegen.AOTCPUCodegen._get_host_cpu_features
    try:
        cc.compile()
    finally:
        pycc_compiler.Flags = compiler_flags
        codegen.AOTCPUCodegen._customize_tm_features = aot_features
    os.replace(out.parent / cc.output_file, out)
    return out


def main() -> None:
    path = module_path()
    if load() is not None:
        print(f"worker kernel already built: {path}")
        return
    print(f"building the worker kernel (once per version): {build()}")


if __name__ == "__main__":
    main()
