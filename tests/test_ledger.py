"""The sidecar's spend ledger over its HTTP API: replicas sync spend deltas and read the
global totals; a replayed sync counts nothing twice; the embedded journal survives a restart;
two sidecars share one ledger in a real Redis (`redis-server`, started here); and only the
token holder may sync or read it."""

import datetime
import shutil
import subprocess
import uuid

import pytest
import requests

from harness import Sidecar, free_port, wait_until


def today():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def sync(sidecar, replica, sync_id, key, micros, customer=None, token="default"):
    delta = {"key_id": key, "team": "caption", "period": today(), "spent_micros": micros, "requests": 1}
    if customer:
        delta["customer"] = customer
    kw = {} if token == "default" else {"token": token}
    return sidecar.post("/v1/ledger/sync", {"replica": replica, "sync_id": sync_id, "deltas": [delta]}, **kw)


def day_total(totals, level, ident):
    rows = [r for r in totals[level] if r["id"] == ident and r["period"] == today()]
    return rows[0]["spent_micros"] if rows else 0


def view(sidecar):
    r = requests.get(f"{sidecar.url}/v1/ledger", headers={"authorization": f"Bearer {sidecar_token()}"}, timeout=10)
    r.raise_for_status()
    return r.json()


def sidecar_token():
    from harness import SIDECAR_TOKEN
    return SIDECAR_TOKEN


def test_syncs_are_counted_once_and_survive_a_restart(tmp_path):
    data = tmp_path / "data"
    s = Sidecar(data)
    try:
        key = f"vk_{uuid.uuid4().hex[:6]}"
        a = sync(s, "envoy-a", "1", key, 1500, customer="merchant-7")
        assert a.status_code == 200, a.text
        assert day_total(a.json()["totals"], "keys", key) == 1500
        replay = sync(s, "envoy-a", "1", key, 1500, customer="merchant-7").json()
        assert replay["replayed"] is True
        assert day_total(replay["totals"], "keys", key) == 1500
        sync(s, "envoy-b", "1", key, 500)
        totals = view(s)
        assert day_total(totals, "keys", key) == 2000
        assert day_total(totals, "teams", "caption") >= 2000
        # A customer is tracked below the key that pays for it.
        assert day_total(totals, "customers", f"{key}/merchant-7") == 1500
        # Only the gateway (the token holder) may sync or read spend.
        assert sync(s, "envoy-x", "9", key, 10**9, token=None).status_code == 401
        assert requests.get(f"{s.url}/v1/ledger", timeout=10).status_code == 401
    finally:
        s.stop()
    s = Sidecar(data)
    try:
        assert day_total(view(s), "keys", key) == 2000
    finally:
        s.stop()


@pytest.fixture
def redis_port():
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up():
        out = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
        return out.stdout.strip() == "PONG"

    wait_until(up, "redis-server")
    yield port
    proc.kill()
    proc.wait()


def test_two_sidecars_share_one_ledger_in_redis(tmp_path, redis_port):
    url = f"redis://127.0.0.1:{redis_port}"
    s1 = Sidecar(tmp_path / "one", "--ledger", url)
    s2 = Sidecar(tmp_path / "two", "--ledger", url)
    try:
        key = f"vk_{uuid.uuid4().hex[:6]}"
        assert sync(s1, "envoy-a", "1", key, 700).status_code == 200
        answer = sync(s2, "envoy-b", "1", key, 300).json()
        assert day_total(answer["totals"], "keys", key) == 1000
        # A replica that resends to the other sidecar is still counted once.
        assert sync(s2, "envoy-a", "1", key, 700).json()["replayed"] is True
        assert day_total(view(s1), "keys", key) == 1000
    finally:
        s1.stop()
        s2.stop()
