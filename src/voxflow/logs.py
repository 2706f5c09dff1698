"""Logging setup shared by every command."""

from __future__ import annotations

import logging
import os


def setup(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("VOXFLOW_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
