"""Waiting on a condition in async tests, with a generous bound instead of a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(predicate: Callable[[], object], timeout_s: float = 30.0) -> None:
    """Wait until `predicate()` is true (a loaded machine's first DuckDB query can take
    seconds, and the feed waits three query durations between reads); the assertion after
    it says what did not happen."""
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
