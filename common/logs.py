"""One logging format for every node: time, node name, level, message."""
import logging
import os


def setup_logging(node: str) -> None:
    level = os.environ.get("DELTAPS_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format=f"%(asctime)s {node} %(levelname)s %(message)s")
