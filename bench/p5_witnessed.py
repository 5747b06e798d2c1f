"""P1 with two real witnesses: does publishing checkpoints take anything from the paid path?

Paid gateways side by side on one upstream, each on a ledger of its own, the same routes and
settings: *plain* (P1's: no checkpoint key, so no checkpoints) and *witnessed* (a checkpoint
key, ``[checkpoints] interval_ms`` small, 200 ms, and two ``inferpay witness`` servers in
``[[checkpoints.witnesses]]``), loaded in turn on the flat route, round after round.
``witnessed_vs_plain_paid_throughput`` is witnessed req/s ÷ plain req/s (median of the rounds).
A third gateway, the same two witnesses at the default interval (2,000 ms), shows how the cost
follows the checkpoint rate (``witnessed_default_interval_vs_plain``, no target).

So that the figure proves the witnesses were at work, the witnessed gateway's own counters
(``inferpay_witness_pushes_total`` by witness and outcome, from ``/metrics``) are read before
and after the rounds, and its checkpoint status (size, cosigners) at the end.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import loadgen, sidebyside
from bench.common import new_ledger
from bench.p1_gateway import ROUTES, THREADS, WORKERS, _wait_quiet, gateway_config, offered_terms, sign_payments
from bench.servers import Server, free_port, start_gateway, start_upstream
from gateway.server.home import Home
from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER
from ledger.checkpoints import default_origin
from ledger.storage.sqlite import SQLiteStore

PAYERS = 16
INTERVAL_MS = 200  # a checkpoint at most every 200 ms: many pushes in every measured round
DEFAULT_INTERVAL_MS = 2000  # the gateway's default [checkpoints].interval_ms
WITNESS_NAMES = ("bench.witness/one", "bench.witness/two")
FLAT = {"flat": ROUTES["flat"]}


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "inferpay_cli", *args], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"inferpay {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def start_witness(out: Path, name: str, index: int, logs: list[tuple[str, str]]) -> tuple[Server, str]:
    """``inferpay witness`` (init, vkey, serve) for ``logs`` ((origin, vkey) each); returns it and its vkey."""
    directory = out / f"witness{index}"
    directory.mkdir(parents=True)
    config = directory / "witness.toml"
    config.write_text(
        "\n".join(
            [
                "[witness]",
                f'name = "{name}"',
                'key_file = "witness.key"',
                'db_path = "witness.db"',
                'listen = "127.0.0.1:0"',
                "workers = 1",
                "threads = 8",
            ]
            + [f'\n[[witness.logs]]\norigin = "{origin}"\nvkey = "{vkey}"' for origin, vkey in logs]
        )
        + "\n"
    )
    _cli("witness", "init", "--config", str(config))
    vkey = _cli("witness", "vkey", "--config", str(config))
    port = free_port()
    argv = [sys.executable, "-m", "inferpay_cli", "witness", "--config", str(config), "--port", str(port)]
    return Server(f"witness{index}", argv, port, out / f"witness{index}.log").wait_ready(), vkey


def _home(directory: Path, *, checkpoint_key: bool) -> tuple[Home, Any, str | None, str | None]:
    home = Home(directory)
    home.ensure()
    home.create_sealer_key()
    fixture = new_ledger(home.ledger_path, PAYERS, sealer_key=bytes.fromhex(home.sealer_path.read_text()))
    origin = vkey = None
    if checkpoint_key:
        genesis = fixture.ledger.store.block(0)
        assert genesis is not None
        signer = home.create_checkpoint_key(default_origin(fixture.chain.chain_id, genesis.block_hash))
        origin, vkey = signer.name, signer.vkey
    fixture.ledger.store.close()
    return home, fixture, origin, vkey


def witness_pushes(gateway: Server) -> dict[str, int]:
    """``inferpay_witness_pushes_total`` from the gateway's /metrics: {"<witness> <outcome>": n}."""
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("inferpay_witness_pushes_total{"):
            labels, value = line.rsplit(" ", 1)
            pairs = dict(p.split("=", 1) for p in labels[len("inferpay_witness_pushes_total{") : -1].split(","))
            found[f"{pairs['witness'].strip(chr(34))} {pairs['outcome'].strip(chr(34))}"] = int(float(value))
    return found


def checkpoint_status(gateway: Server) -> dict[str, Any]:
    with urllib.request.urlopen(gateway.url + "/ledger/checkpoint/status", timeout=10) as answer:
        status: dict[str, Any] = json.loads(answer.read())
        return status


def run(out: Path, settings: sidebyside.Settings, log: Any = print) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    plain_home, plain_fixture, _, _ = _home(out / "plain-home", checkpoint_key=False)
    wit_home, wit_fixture, origin, log_vkey = _home(out / "witnessed-home", checkpoint_key=True)
    slow_home, slow_fixture, slow_origin, slow_vkey = _home(out / "witnessed-default-home", checkpoint_key=True)
    assert origin is not None and log_vkey is not None and slow_origin is not None and slow_vkey is not None
    servers: dict[str, Server] = {}
    try:
        upstream = servers["upstream"] = start_upstream(out)
        witnesses = ""
        for index, name in enumerate(WITNESS_NAMES):
            # Each witness follows both witnessed logs (each its own origin and key).
            witness, vkey = start_witness(out, name, index, [(origin, log_vkey), (slow_origin, slow_vkey)])
            servers[f"witness{index}"] = witness
            witnesses += f'\n[[checkpoints.witnesses]]\nurl = "{witness.url}"\nvkey = "{vkey}"\n'
        extra = f"\n[checkpoints]\ninterval_ms = {INTERVAL_MS}\n" + witnesses
        slow_extra = f"\n[checkpoints]\ninterval_ms = {DEFAULT_INTERVAL_MS}\n" + witnesses
        plain = servers["plain"] = start_gateway(
            out,
            plain_home.path,
            gateway_config(plain_fixture.operator.address, WORKERS, THREADS, upstream.url, routes=FLAT),
            name="plain",
        )
        witnessed = servers["witnessed"] = start_gateway(
            out,
            wit_home.path,
            gateway_config(wit_fixture.operator.address, WORKERS, THREADS, upstream.url, routes=FLAT, extra=extra),
            name="witnessed",
        )
        slow = servers["witnessed_default_interval"] = start_gateway(
            out,
            slow_home.path,
            gateway_config(
                slow_fixture.operator.address, WORKERS, THREADS, upstream.url, routes=FLAT, extra=slow_extra
            ),
            name="witnessed-default-interval",
        )
        path, _, body = ROUTES["flat"]
        stores = {
            "plain": SQLiteStore(plain_home.ledger_path),
            "witnessed": SQLiteStore(wit_home.ledger_path),
            "witnessed_default_interval": SQLiteStore(slow_home.ledger_path),
        }

        def supplier(gateway: Server, fixture: Any) -> Any:
            terms = offered_terms(gateway, path)

            def paid(count: int) -> list[bytes]:
                headers = sign_payments(fixture.payers, terms, fixture.chain, count)
                return [
                    loadgen.build_request("POST", path, gateway.port, body, {PAYMENT_SIGNATURE_HEADER: h})
                    for h in headers
                ]

            return paid

        targets = [
            sidebyside.Target(
                "plain", plain, supplier(plain, plain_fixture), cycle=False, after=lambda: _wait_quiet(stores["plain"])
            ),
            sidebyside.Target(
                "witnessed",
                witnessed,
                supplier(witnessed, wit_fixture),
                cycle=False,
                after=lambda: _wait_quiet(stores["witnessed"]),
            ),
            sidebyside.Target(
                "witnessed_default_interval",
                slow,
                supplier(slow, slow_fixture),
                cycle=False,
                after=lambda: _wait_quiet(stores["witnessed_default_interval"]),
            ),
        ]
        pushes_before, slow_before = witness_pushes(witnessed), witness_pushes(slow)
        status_before = checkpoint_status(witnessed)
        raw = sidebyside.run_rounds(targets, servers, settings, log, "witnessed")
        pushes_after, slow_after = witness_pushes(witnessed), witness_pushes(slow)
        # The last checkpoint covers the head a tick or two after the load ends.
        deadline = time.monotonic() + 15
        while True:
            status_after = checkpoint_status(witnessed)
            done = status_after["checkpointSize"] == status_after["headSize"]
            if (done and len(status_after["cosignedBy"]) == len(WITNESS_NAMES)) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        for store in stores.values():
            store.close()
    finally:
        for server in reversed(list(servers.values())):
            with contextlib.suppress(Exception):
                server.stop()
    pooled = sidebyside.pooled(raw)
    ratio = sidebyside.ratio_of_rounds(raw, "witnessed", "plain")
    during = {
        k: pushes_after.get(k, 0) - pushes_before.get(k, 0) for k in sorted(set(pushes_after) | set(pushes_before))
    }
    cosigned = {name: during.get(f"{name} cosigned", 0) for name in WITNESS_NAMES}
    slow_cosigned = {
        name: slow_after.get(f"{name} cosigned", 0) - slow_before.get(f"{name} cosigned", 0) for name in WITNESS_NAMES
    }
    return {
        "settings": settings.__dict__,
        "interval_ms": INTERVAL_MS,
        "witnesses": list(WITNESS_NAMES),
        "scenarios": {name: sidebyside.brief(s) for name, s in pooled.items()},
        "rounds": {name: [{k: v for k, v in r.items() if k != "_latencies"} for r in rs] for name, rs in raw.items()},
        "witnessed_vs_plain_paid_throughput": ratio["median"],
        "per_round": ratio["per_round"],
        "witnessed_default_interval_vs_plain": sidebyside.ratio_of_rounds(raw, "witnessed_default_interval", "plain")[
            "median"
        ],
        "default_interval_ms": DEFAULT_INTERVAL_MS,
        "checkpoints_cosigned_during_rounds_default_interval": slow_cosigned,
        "witness_pushes_during_rounds": during,
        "checkpoints_cosigned_during_rounds": cosigned,
        "checkpoint_before": {k: status_before.get(k) for k in ("checkpointSize", "headSize", "cosignedBy")},
        "checkpoint_after": {k: status_after.get(k) for k in ("checkpointSize", "headSize", "cosignedBy")},
    }


if __name__ == "__main__":
    from bench.common import OUT

    print(json.dumps(run(OUT / "witnessed", sidebyside.QUICK), indent=2)[:6000])
