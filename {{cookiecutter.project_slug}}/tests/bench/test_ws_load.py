"""The WebSocket load benchmark's short mode on our chat alone: counts only, never a time.

20 real WebSocket clients in 2 rooms over 2 gunicorn workers on Redis; every message must reach every
member of its room exactly once. It needs no peer virtualenv.
"""

from __future__ import annotations

import pytest

from bench.ws_load import run_case

from ..brokers import require_broker


@pytest.mark.slow
async def test_ws_load_short_loses_and_duplicates_nothing() -> None:
    require_broker("redis")
    result = await run_case("ours", clients=20, workers=2, rooms=2, messages=3, rate=2.0, drain=30, deadline=120)
    assert result.status == "ok", result
    assert result.expected == 2 * 10 * 10 * 3, result
    assert result.delivered == result.expected, result
    assert result.lost == 0 and result.dup == 0, result
