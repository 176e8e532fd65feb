"""One logging format for every node: time, node name, level, message; as text or JSON lines.

JSON lines (`--log-format json`, or `DELTAPS_LOG_FORMAT=json` in the environment, which
`deltaps up` passes to every node it starts) are for log collectors (Kubernetes, Loki,
Elasticsearch): one object per line, so a message with newlines or a traceback stays one
record and no collector has to parse our text layout.
"""
from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "node", "logger", "message"}` plus `"exception"` when there is one."""

    def __init__(self, node: str):
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": datetime.fromtimestamp(record.created, timezone.utc)
                       .isoformat(timespec="milliseconds"),
               "level": record.levelname, "node": self.node, "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def log_format(fmt: str | None = None) -> str:
    """The format asked for, else the environment's, else text; an unknown name is an error."""
    fmt = (fmt or os.environ.get("DELTAPS_LOG_FORMAT") or "text").lower()
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {FORMATS}")
    return fmt


def setup_logging(node: str, fmt: str | None = None) -> None:
    level = os.environ.get("DELTAPS_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler()
    if log_format(fmt) == "json":
        handler.setFormatter(JsonFormatter(node))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {node} %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
