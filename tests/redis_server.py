"""A real redis-server for tests: on a free loopback port, its own directory, stopped by PID.

No fake Redis: consumer groups, pending entries, XCLAIM and MULTI/EXEC are what the exactly-once
tests exercise, and only the server has them right. The OS package provides the binary
(`.ci/run` installs it); a machine without it skips the tests that need it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from deploy.layout import free_ports


class RedisServer:
    def __init__(self, directory: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        import redis
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_ports("127.0.0.1", 1)[0]
        self.log = self.dir / "redis.log"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis("127.0.0.1", self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client.ping():
                    break
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def url(self, stream: str, group: str, consumer: str | None = None) -> str:
        url = f"redis://127.0.0.1:{self.port}/{stream}?group={group}"
        return url + (f"&consumer={consumer}" if consumer else "")

    def add_events(self, stream: str, events: list[dict], chunk: int = 5000) -> None:
        """XADD every event as JSON in a `data` field, in order."""
        for i in range(0, len(events), chunk):
            pipe = self.client.pipeline(transaction=False)
            for event in events[i:i + chunk]:
                pipe.xadd(stream, {"data": json.dumps(event)})
            pipe.execute()

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()
