"""The gateway registry with real processes: two ``vshare gateway run`` processes on one
etcd heartbeat their load; ``vshare api run`` on the same etcd serves it, and
``vshare gateway list`` shows each gateway's sessions. A gateway killed with SIGKILL drops
out of the default listing within its ttl (10 s, etcd's lease) and is shown as gone with
``--all``."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import httpx
import pytest

from tests.processes import VSHARE, free_port, stop
from vshare.client import open_share

from .conftest import Fleet, wait_for

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

#: StoreFollower's default ttl: heartbeats every ttl/3 s, etcd's lease expires after ttl.
TTL = 10.0


def test_gateway_list_shows_load_and_drops_a_killed_gateway(fleet: Fleet) -> None:
    import anyio

    gw0, gw1 = fleet.add_gateway(), fleet.add_gateway()
    port = free_port()
    token = subprocess.run(
        [VSHARE, "api", "token", "create", "admin", "--store", fleet.store_uri],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    api = subprocess.Popen(
        [VSHARE, "api", "run", "--listen", f"127.0.0.1:{port}", "--store", fleet.store_uri,
         "--volume", f"default=posix:{fleet.volume}"],
        stdout=subprocess.DEVNULL, stderr=(fleet.workdir / "api.log").open("wb"),
    )  # fmt: skip
    env = {**os.environ, "VSHARE_ENDPOINT": f"http://127.0.0.1:{port}", "VSHARE_TOKEN": token}

    def listed(*extra: str) -> dict[str, dict[str, Any]]:
        out = subprocess.run([VSHARE, "gateway", "list", "--json", *extra], env=env,
                             capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
        return {g["id"]: g for g in json.loads(out.stdout)["gateways"]}

    def from_api() -> dict[str, dict[str, Any]]:
        """The API's answer (every gateway, with ``healthy``): cheap to poll."""
        reply = httpx.get(f"http://127.0.0.1:{port}/v1/gateways", timeout=5,
                          headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        return {g["id"]: g for g in reply.json()["gateways"]}

    def api_up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(api_up, 30, "the API answers")
        assert set(listed()) == {"gw-0", "gw-1"}

        async def with_sessions() -> None:
            async with (
                open_share(gw0.uri, fleet.share.name) as a,
                open_share(gw0.uri, fleet.share.name) as b,
            ):
                await a.write_bytes("x", b"x")
                await b.read_bytes("x")
                # The next heartbeat (every ttl/3 s) carries the two sessions.
                with anyio.fail_after(TTL / 3 + 3):
                    while (await anyio.to_thread.run_sync(from_api))["gw-0"]["sessions"] != 2:
                        await anyio.sleep(0.2)
                now = await anyio.to_thread.run_sync(listed)
                assert now["gw-1"]["sessions"] == 0
                assert now["gw-0"]["requests_in_flight"] >= 0

        anyio.run(with_sessions)
        table = subprocess.run([VSHARE, "gateway", "list"], env=env, capture_output=True,
                               text=True, check=True, timeout=60).stdout  # fmt: skip
        assert table.splitlines()[0].split()[:4] == ["ID", "HEALTHY", "SESSIONS", "IN_FLIGHT"]
        gw1.kill()
        killed = time.monotonic()
        wait_for(lambda: not from_api()["gw-1"]["healthy"], TTL + 5, "gw-1 is unhealthy")
        after = time.monotonic() - killed  # at most the ttl since its last heartbeat
        everything = listed("--all")
        assert everything["gw-1"]["healthy"] is False and everything["gw-0"]["healthy"]
        assert set(listed()) == {"gw-0"}
        table = subprocess.run([VSHARE, "gateway", "list", "--all"], env=env,
                               capture_output=True, text=True, check=True,
                               timeout=60).stdout  # fmt: skip
        rows = {line.split()[0]: line.split()[1] for line in table.splitlines()[1:]}
        assert rows == {"gw-0": "yes", "gw-1": "gone"}
        print(f"\nregistry: a SIGKILLed gateway left the list after {after:.1f} s (ttl {TTL:g} s)")
        assert after <= TTL + 1.5, after
    finally:
        stop(api, grace=20)
