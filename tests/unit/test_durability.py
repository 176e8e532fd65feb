"""Write-ahead log, snapshots and recovery, driven directly (no sockets, no processes)."""
from __future__ import annotations

import numpy as np
import pytest

from common.config import load_spec
from ps.durable import ShardState
from ps.snapshot import CorruptSnapshot, load_newest_good, read_snapshot, write_snapshot
from ps.wal import MAGIC, ReadReport, WriteAheadLog

SPEC = "[models.a]\nbits = 10\n[models.b]\nbits = 8\n[models.b.optimizer]\nname = 'adagrad'"


def make_state(tmp_path, **settings) -> ShardState:
    spec = load_spec(text=SPEC)
    spec.shards = 2
    for k, v in settings.items():
        setattr(spec, k, v)
    return ShardState(spec, 1, tmp_path)


def random_pushes(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        model, bits = ("a", 10) if i % 3 else ("b", 8)
        keys = np.unique(rng.integers(0, 1 << (bits - 1), 40)).astype(np.uint64) * 2 + 1
        deltas = rng.normal(0, 1, (keys.size, 2)).astype(np.float32)  # ftrl (z, n), adagrad (w, g2)
        deltas[:, 1] = np.abs(deltas[:, 1])  # n and g2 stay >= 0
        yield model, keys, deltas


def state_arrays(state: ShardState) -> dict:
    """Every array a snapshot of `state` holds (FTRL's weights, computed, among them)."""
    return {(m, k): v for m, s in state.stores.items() for k, v in s.snapshot_arrays().items()}


def assert_same_state(a: ShardState, b: ShardState) -> None:
    sa, sb = state_arrays(a), state_arrays(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert np.array_equal(sa[key], sb[key]), key  # bit-identical, not approximately


def test_recovery_from_log_alone_is_bit_identical(tmp_path):
    live = make_state(tmp_path / "live")
    for i, (model, keys, deltas) in enumerate(random_pushes(60)):
        live.push(model, keys, deltas, "w1", i + 1)
    live.close()
    again = make_state(tmp_path / "live")
    report, _ = again.recover()
    assert report.replayed == 60 and report.snapshot is None and not report.problems
    assert_same_state(live, again)
    assert again.applied == {"w1": 60}


def test_a_push_that_overtakes_the_one_before_it_is_refused_and_nothing_logged(tmp_path):
    """Were push 3 applied before push 2, the retry of 2 would look like a duplicate."""
    from common.errors import MissingPush
    state = make_state(tmp_path / "o")
    (m1, k1, g1), (m2, k2, g2), (m3, k3, g3) = random_pushes(3)
    state.push(m1, k1, g1, "w", 1, after=0)
    with pytest.raises(MissingPush, match="push 3 follows push 2 of worker w"):
        state.push(m3, k3, g3, "w", 3, after=2)
    assert state.applied == {"w": 1} and state.last_lsn == 1
    assert state.push(m2, k2, g2, "w", 2, after=1) is not None
    assert state.push(m3, k3, g3, "w", 3, after=2) is not None
    assert state.applied == {"w": 3} and state.last_lsn == 3


def test_recovery_from_snapshot_plus_log_and_rotation(tmp_path):
    live = make_state(tmp_path / "s", wal_segment_mb=0)  # 0 MiB: a new segment per record
    pushes = list(random_pushes(90))
    for i, (model, keys, deltas) in enumerate(pushes[:50]):
        live.push(model, keys, deltas, "w", i + 1)
    live.snapshot({"a": 7, "b": 3})
    for i, (model, keys, deltas) in enumerate(pushes[50:], start=50):
        live.push(model, keys, deltas, "w", i + 1)
    live.snapshot({"a": 9, "b": 4})
    for i, (model, keys, deltas) in enumerate(pushes[50:], start=50):  # retries: all duplicates
        assert live.push(model, keys, deltas, "w", i + 1) is None
    live.close()
    segments = sorted((tmp_path / "s" / "wal").glob("wal-*.log"))
    assert len(segments) < 60  # segments covered by both kept snapshots were deleted
    again = make_state(tmp_path / "s")
    report, seqs = again.recover()
    assert seqs == {"a": 9, "b": 4} and report.replayed == 0
    assert_same_state(live, again)


def test_log_cut_at_last_fsync_recovers_exactly_the_synced_pushes(tmp_path):
    live = make_state(tmp_path / "l", fsync="always")
    pushes = list(random_pushes(30))
    for model, keys, deltas in pushes[:20]:
        live.push(model, keys, deltas)
        live.wal.commit()
    synced = live.wal._current_path.stat().st_size
    reference = state_arrays(live)
    for model, keys, deltas in pushes[20:]:
        live.push(model, keys, deltas)  # written but never fsynced
    live.wal._file.flush()
    path = live.wal._current_path
    with open(path, "r+b") as f:  # the machine crashed: the tail after the fsync is gone
        f.truncate(synced)
    again = make_state(tmp_path / "l")
    report, _ = again.recover()
    assert report.replayed == 20 and report.torn_bytes == 0
    got = state_arrays(again)
    assert all(np.array_equal(got[k], reference[k]) for k in reference)


@pytest.mark.parametrize("cut", [1, 7, 15, 30])
def test_torn_last_record_is_reported_cut_off_and_log_stays_usable(tmp_path, cut):
    live = make_state(tmp_path / "t")
    pushes = list(random_pushes(12))
    for model, keys, deltas in pushes[:10]:
        live.push(model, keys, deltas)
    reference = state_arrays(live)
    live.push(*pushes[10])
    live.close()
    path = sorted((tmp_path / "t" / "wal").glob("wal-*.log"))[-1]
    data = path.read_bytes()
    path.write_bytes(data[:-cut])  # the last record is torn
    again = make_state(tmp_path / "t")
    report, _ = again.recover()
    assert report.replayed == 10 and report.torn_bytes > 0
    got = state_arrays(again)
    assert all(np.array_equal(got[k], reference[k]) for k in reference)
    again.push(*pushes[11])  # appending after the cut works and survives another restart
    again.close()
    third = make_state(tmp_path / "t")
    assert third.recover()[0].replayed == 11
    assert_same_state(again, third)


def test_corruption_inside_the_log_is_reported_and_moved_aside(tmp_path):
    wal = WriteAheadLog(tmp_path, segment_bytes=100)
    for i in range(6):
        wal.append(bytes([i]) * 150)  # one record per segment
    wal.close()
    segments = sorted(tmp_path.glob("wal-*.log"))
    raw = bytearray(segments[2].read_bytes())
    raw[40] ^= 0xFF
    segments[2].write_bytes(bytes(raw))
    report = ReadReport()
    got = [lsn for lsn, _ in WriteAheadLog(tmp_path).replay(0, report)]
    assert got == [1, 2]
    assert report.corrupt and f"corrupt at byte {len(MAGIC)}" in report.corrupt[0]
    assert len(list((tmp_path / "corrupt").iterdir())) == 4  # the bad bytes + 3 later segments


def test_flipped_byte_in_snapshot_is_refused_and_previous_one_used(tmp_path):
    arrays = {"a": {"w": np.arange(100, dtype=np.float32)}}
    write_snapshot(tmp_path, 5, {"k": 1}, arrays)
    newest = write_snapshot(tmp_path, 9, {"k": 2},
                            {"a": {"w": np.arange(100, dtype=np.float32) * 2}})
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    newest.write_bytes(bytes(raw))
    with pytest.raises(CorruptSnapshot, match="checksum mismatch"):
        read_snapshot(newest)
    snap, refused = load_newest_good(tmp_path)
    assert snap.lsn == 5 and snap.header["k"] == 1
    assert len(refused) == 1 and "checksum mismatch" in refused[0]
    assert (tmp_path / "corrupt" / newest.name).exists()


def test_truncated_snapshot_is_refused(tmp_path):
    path = write_snapshot(tmp_path, 3, {}, {"a": {"w": np.ones(10, np.float32)}})
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CorruptSnapshot, match="truncated"):
        read_snapshot(path)


def test_recovery_uses_the_older_snapshot_plus_log_when_the_newest_is_bad(tmp_path):
    live = make_state(tmp_path / "f")
    pushes = list(random_pushes(40))
    for i, p in enumerate(pushes[:20]):
        live.push(*p, "w", i + 1)
    live.snapshot({"a": 1, "b": 1})
    for i, p in enumerate(pushes[20:], start=20):
        live.push(*p, "w", i + 1)
    newest = live.snapshot({"a": 2, "b": 2})
    live.close()
    raw = bytearray(newest.read_bytes())
    raw[100] ^= 0x10
    newest.write_bytes(bytes(raw))
    again = make_state(tmp_path / "f")
    report, seqs = again.recover()
    assert report.snapshot_lsn == 20 and report.replayed == 20 and report.problems
    assert_same_state(live, again)


def test_disk_full_leaves_nothing_applied_or_logged(tmp_path, monkeypatch):
    live = make_state(tmp_path / "d")
    pushes = list(random_pushes(3))
    live.push(*pushes[0])
    before = state_arrays(live)
    real_write = live.wal._file.write

    def full(data):
        real_write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(live.wal._file, "write", full, raising=False)
    with pytest.raises(OSError, match="No space left"):
        live.push(*pushes[1])
    got = state_arrays(live)
    assert all(np.array_equal(got[k], before[k]) for k in before)
    monkeypatch.undo()
    live.push(*pushes[2])
    live.close()
    again = make_state(tmp_path / "d")
    report, _ = again.recover()
    assert report.replayed == 2 and report.torn_bytes == 0
    assert_same_state(live, again)


def test_snapshot_of_another_layout_is_refused_clearly(tmp_path):
    live = make_state(tmp_path / "x")
    live.push(*next(random_pushes(1)))
    live.snapshot({})
    live.close()
    spec = load_spec(text=SPEC.replace("bits = 10", "bits = 12"))
    spec.shards = 2
    from common.errors import ConfigError
    with pytest.raises(ConfigError, match="saved with bits=10"):
        ShardState(spec, 1, tmp_path / "x").recover()


def test_background_sync_fsyncs_appended_records_while_the_log_rotates(tmp_path, monkeypatch):
    """The interval policy's syncer fsyncs what was appended (through a duplicate descriptor,
    so rotation underneath it is safe) and stops with the log."""
    import os
    import threading
    import time

    import ps.wal as wal_module
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(wal_module.os, "fsync",
                        lambda fd: synced.append(threading.current_thread().name) or real_fsync(fd))
    wal = WriteAheadLog(tmp_path / "wal", "interval", segment_bytes=4096)
    wal.replay(0, ReadReport())
    wal.start_background_sync(0.005)
    for i in range(200):  # ~20 segments' worth
        wal.append(bytes([i % 256]) * 300)
        if i % 20 == 0:
            time.sleep(0.01)
    deadline = time.monotonic() + 5
    while "wal-fsync" not in synced and time.monotonic() < deadline:
        time.sleep(0.01)
    wal.close()
    assert "wal-fsync" in synced
    assert not any(t.name == "wal-fsync" for t in threading.enumerate())
    reread = WriteAheadLog(tmp_path / "wal", "interval", segment_bytes=4096)
    report = ReadReport()
    records = list(reread.replay(0, report))
    assert [lsn for lsn, _ in records] == list(range(1, 201))
    assert all(payload == bytes([i % 256]) * 300 for i, (_, payload) in enumerate(records))
    assert report.torn_bytes == 0 and not report.corrupt


def test_a_snapshot_written_while_pushes_go_on_holds_its_capture_and_the_log_the_rest(tmp_path):
    """The periodic snapshot copies the state on the loop and writes it from a thread while
    pushes continue: the file must hold the state at capture time (not a mix), and recovery
    (snapshot + the log after it) must still be bit-identical to the live shard."""
    import threading

    live = make_state(tmp_path / "s", wal_segment_mb=0)
    pushes = list(random_pushes(80, seed=5))
    for i, (model, keys, deltas) in enumerate(pushes[:40]):
        live.push(model, keys, deltas, "w", i + 1)
    at_capture = state_arrays(live)
    capture = live.capture({"a": 40, "b": 20})
    writer = threading.Thread(target=live.write_snapshot, args=(capture,))
    writer.start()
    for i, (model, keys, deltas) in enumerate(pushes[40:], start=40):
        live.push(model, keys, deltas, "w", i + 1)
    writer.join()
    live.close()
    snap, problems = load_newest_good(tmp_path / "s" / "snapshots")
    assert not problems and snap.lsn == 40 and snap.header["applied"] == {"w": 40}
    for (model, name), array in at_capture.items():
        assert np.array_equal(snap.arrays[model][name], array), (model, name)
    again = make_state(tmp_path / "s", wal_segment_mb=0)
    report, seqs = again.recover()
    assert report.snapshot_lsn == 40 and report.replayed == 40 and seqs == {"a": 40, "b": 20}
    assert_same_state(live, again)


def test_the_log_holds_each_push_as_the_wire_codec_encodes_it(tmp_path):
    from common import wire
    from common.messages import Push
    from ps.wal import unpack_frames
    live = make_state(tmp_path / "w")
    model, keys, deltas = next(random_pushes(1))
    live.push(model, keys, deltas, "w7", 3, after=0)
    live.close()
    (lsn, payload), = WriteAheadLog(tmp_path / "w" / "wal").replay(0, ReadReport())
    push, _rid = wire.decode(unpack_frames(payload))
    assert isinstance(push, Push) and lsn == 1
    assert (push.model, push.worker, push.push_no) == (model, "w7", 3)
    assert np.array_equal(push.keys, keys) and np.array_equal(push.deltas, deltas)


def _as_format_1(wal_dir):
    """Make every segment look written by a release before the log had a format marker."""
    for path in wal_dir.glob("wal-*.log"):
        data = path.read_bytes()
        assert data.startswith(MAGIC)
        path.write_bytes(data[len(MAGIC):])


def test_an_old_format_log_that_a_snapshot_covers_is_left_behind(tmp_path):
    live = make_state(tmp_path / "o")
    pushes = list(random_pushes(6))
    for i, p in enumerate(pushes[:5]):
        live.push(*p, "w", i + 1)
    live.snapshot({"a": 5, "b": 2})
    live.close()
    _as_format_1(tmp_path / "o" / "wal")
    again = make_state(tmp_path / "o")
    report, seqs = again.recover()
    assert report.replayed == 0 and seqs == {"a": 5, "b": 2} and again.last_lsn == 5
    again.push(*pushes[5], "w", 6)  # goes to a new segment of the current format
    again.close()
    segments = sorted((tmp_path / "o" / "wal").glob("wal-*.log"))
    assert len(segments) == 2 and segments[-1].read_bytes().startswith(MAGIC)
    third = make_state(tmp_path / "o")
    report, _ = third.recover()
    assert report.replayed == 1 and third.applied == {"w": 6}
    assert_same_state(again, third)


def test_an_old_format_log_with_records_to_replay_is_a_clear_error(tmp_path):
    from common.errors import ConfigError
    live = make_state(tmp_path / "n")
    for p in random_pushes(3):
        live.push(*p)
    live.close()
    _as_format_1(tmp_path / "n" / "wal")
    again = make_state(tmp_path / "n")
    with pytest.raises(ConfigError, match="written by an older deltaps .* holds record 1"):
        again.recover()
    assert not any(np.any(a) for a in state_arrays(again).values())  # nothing applied


def test_a_segment_cut_while_being_created_is_torn_and_one_of_garbage_an_error(tmp_path):
    from common.errors import ConfigError
    live = make_state(tmp_path / "c", wal_segment_mb=0)
    pushes = list(random_pushes(4))
    for p in pushes[:2]:
        live.push(*p)
    live.close()
    wal_dir = tmp_path / "c" / "wal"
    (wal_dir / "wal-00000000000000000003.log").write_bytes(MAGIC[:3])
    again = make_state(tmp_path / "c")
    report, _ = again.recover()
    assert report.replayed == 2 and report.torn_bytes == 3
    again.push(*pushes[2])
    again.close()
    third = make_state(tmp_path / "c")
    assert third.recover()[0].replayed == 3
    assert_same_state(again, third)
    (wal_dir / "wal-00000000000000000009.log").write_bytes(b"not a log at all, no")
    with pytest.raises(ConfigError, match="not a deltaps log"):
        make_state(tmp_path / "c").recover()
