"""Fixtures that start real deltaps nodes as processes on 127.0.0.1 and always stop them."""
from __future__ import annotations

from pathlib import Path

import pytest

from deploy.local import LocalCluster

REPO = Path(__file__).resolve().parents[1]
MOVIELENS = (REPO.parent / "shared" / "data" / "movielens-100k").resolve()


@pytest.fixture
def local_cluster(tmp_path):
    """Factory: local_cluster(spec_text, shards, replicas) -> LocalCluster (stopped at teardown)."""
    made = []

    def make(spec_text: str = "", shards: int = 2, replicas: int = 1, **settings) -> LocalCluster:
        c = LocalCluster(tmp_path / f"c{len(made)}", spec_text, shards, replicas, **settings)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop_all()


@pytest.fixture(scope="session", autouse=True)
def _zmq_context_cleanup():
    yield
    from common.transport import context
    context().destroy(linger=0)
