"""bench.usertrain's process runner and its reading of VW's output, on a real `vw` process."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from bench import processes, usertrain

LINES = ["1 |f a=1 b=2", "-1 |f a=2 b=3", "1 |f a=1", "-1 |f b=3 c=1", "1 |f a=1 c=2"]


@pytest.fixture
def ctx(tmp_path):
    return SimpleNamespace(workdir=tmp_path, quick=True, log=lambda msg: None)


def _vw_file(tmp_path):
    path = tmp_path / "t.vw"
    path.write_text("\n".join(LINES) + "\n")
    labels = np.array([1.0 if ln.startswith("1") else 0.0 for ln in LINES], np.float32)
    return path, labels


def test_vw_train_reads_events_and_progressive_loss(ctx, tmp_path):
    data, labels = _vw_file(tmp_path)
    r = usertrain.vw_train(ctx, "t", data, 18)
    assert r["events"] == len(LINES)
    assert r["command"].startswith("vw -d ") and "-b 18" in r["command"]
    # the first prediction is 0.5 and learning moves the rest: neither 0 nor log 2 exactly
    assert 0.0 < r["logloss"] < 1.0 and r["logloss"] != pytest.approx(np.log(2), abs=1e-6)


def test_printed_loss_is_logloss_of_predictions(ctx, tmp_path):
    data, labels = _vw_file(tmp_path)
    check = usertrain.loss_check(ctx, data, 18, labels)
    assert check["same"], check
    flipped = usertrain.loss_check(ctx, data, 18, 1.0 - labels)  # wrong labels must not match
    assert not flipped["same"]
    assert flipped["vw_printed"] == check["vw_printed"]  # VW saw the same file both times


def test_timed_reports_exit_code_and_output(ctx):
    ok = processes.timed([sys.executable, "-c", "print('hi')"], ctx.workdir, "ok")
    assert ok["returncode"] == 0 and ok["stdout"].strip() == "hi" and ok["seconds"] > 0
    with pytest.raises(RuntimeError, match="exited with 3: boom"):
        processes.timed([sys.executable, "-c", "import sys; sys.stderr.write('boom'); "
                         "sys.exit(3)"], ctx.workdir, "bad")
    assert not list(ctx.workdir.iterdir())  # output files removed either way
