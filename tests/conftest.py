"""Fixtures that start real deltaps nodes on 127.0.0.1 and always stop them: as processes
(`local_cluster`) or as threads of the test process (`inprocess_cluster`)."""
from __future__ import annotations

from pathlib import Path

import pytest

from deploy.inprocess import InProcessCluster
from deploy.local import LocalCluster
from tests import leaks
from tests.redis_server import redis_server  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[1]
MOVIELENS = (REPO.parent / "shared" / "data" / "movielens-100k").resolve()
INPROCESS_TIMEOUT_S = 60.0  # per test; a test on an in-process cluster takes a few seconds
INPROCESS_FIXTURES = ("inprocess_cluster", "module_inprocess_cluster")

pytest_plugins = ["pytester"]


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


def inprocess_clusters(directory: Path):
    """The body of both in-process fixtures: a factory, then stop every cluster it made and
    fail if a node thread is still running, a node failed, or anything leaked (tests/leaks.py)."""
    before = leaks.snapshot()
    made: list[InProcessCluster] = []

    def make(spec_text: str = "", shards: int = 2, replicas: int = 1,
             **settings) -> InProcessCluster:
        c = InProcessCluster(directory / f"c{len(made)}", spec_text, shards, replicas, **settings)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop_all()
    problems = []
    running = [f"{c.dir.name}/{name}" for c in made for name in c.running()]
    if running:
        problems.append(f"node thread(s) still running after stop: {', '.join(running)}")
    for c in made:
        for (role, index), node in c.nodes.items():
            if node.error:
                problems.append(f"{c.dir.name}/{role}-{index} failed:\n{node.error}")
    problems += leaks.leaks(before)
    if problems:
        pytest.fail("the in-process cluster left something behind:\n" + "\n".join(problems),
                    pytrace=False)


@pytest.fixture
def inprocess_cluster(tmp_path):
    """Factory: inprocess_cluster(spec_text, shards, replicas, **settings) -> InProcessCluster
    (nodes as threads; stopped and checked for leaks at teardown, the test under a timeout)."""
    yield from inprocess_clusters(tmp_path)


@pytest.fixture(scope="module")
def module_inprocess_cluster(tmp_path_factory):
    """`inprocess_cluster` for a cluster a whole module shares (checked after its last test)."""
    yield from inprocess_clusters(tmp_path_factory.mktemp("inprocess"))


def pytest_collection_modifyitems(config, items):
    """Every test on an in-process cluster gets a timeout unless it sets its own. The signal
    method raises in the test's (main) thread, so the fixture still stops the nodes after."""
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if (set(INPROCESS_FIXTURES) & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("timeout") is None):
            item.add_marker(pytest.mark.timeout(INPROCESS_TIMEOUT_S, method="signal"))


@pytest.fixture(scope="session", autouse=True)
def _zmq_context_cleanup():
    yield
    from common.transport import context, use_curve
    use_curve(None)  # stops a ZAP thread before its context goes
    context().destroy(linger=0)
