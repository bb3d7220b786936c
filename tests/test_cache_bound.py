"""The exact cache's byte budget holds under a fill far past it: the cache gauge never exceeds
`max_bytes`, entries are evicted, and Envoy's heap stays flat (admin `/memory`)."""

import pytest
import requests

from conftest import gateway_test_config
from harness import Envoy

MAX_BYTES = 1 << 20


@pytest.fixture(scope="module")
def small_cache_envoy(provider):
    e = Envoy(provider, gateway_test_config(max_bytes=MAX_BYTES, max_entry_bytes=64 << 10))
    yield e
    e.stop()


def fill(envoy, start, count, session):
    """`count` unique streaming answers of ~6-7 KB each."""
    stored = 0
    for i in range(start, start + count):
        text = f"Request {i:06d}: " + "describe the product in a long and detailed caption please " * 3
        body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": text}]}
        r = session.post(envoy.url + "/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-demo"}, timeout=30)
        assert r.status_code == 200
        assert r.headers["x-semgate-cache"] == "miss"
        stored += len(r.content)
    return stored


def test_filling_far_past_the_budget_keeps_memory_flat(small_cache_envoy):
    envoy = small_cache_envoy
    s = requests.Session()
    # Warm up: fill the cache to its budget twice over, so every slot and Envoy's own pools exist.
    warm_bytes = fill(envoy, 0, 400, s)
    assert warm_bytes > 2 * MAX_BYTES
    mem_warm = envoy.memory_allocated()
    gauge_warm = envoy.stat("semgate_cache_bytes")
    # Now push ten times the budget through the cache.
    pushed = fill(envoy, 400, 1600, s)
    assert pushed > 10 * MAX_BYTES
    mem_after = envoy.memory_allocated()
    gauge_after = envoy.stat("semgate_cache_bytes")
    evictions = envoy.stat("semgate_cache_evictions_total")
    growth = mem_after - mem_warm
    print(f"\ncache bound: pushed {pushed / 1e6:.1f} MB through a {MAX_BYTES >> 20} MiB cache; "
          f"cache gauge {gauge_warm} -> {gauge_after} bytes; evictions {evictions}; "
          f"Envoy heap {mem_warm / 1e6:.1f} MB -> {mem_after / 1e6:.1f} MB ({growth / 1e6:+.2f} MB)")
    assert 0 < gauge_after <= MAX_BYTES
    assert 0 < gauge_warm <= MAX_BYTES
    assert evictions > 1000
    # An unbounded cache would have grown by `pushed` (>10 MB); allow one budget of slack for
    # allocator and stats noise.
    assert growth < MAX_BYTES, f"Envoy heap grew by {growth} bytes"
    # The newest entries are served from the cache.
    last = f"Request {1999:06d}: " + "describe the product in a long and detailed caption please " * 3
    r = s.post(envoy.url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": last}]},
               headers={"authorization": "Bearer sk-demo"}, timeout=30)
    assert r.headers["x-semgate-cache"] == "hit-exact"
