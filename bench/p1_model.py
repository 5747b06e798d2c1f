"""P1 with the real model as upstream: the bundled embedding server (``inferpay model-server``,
all-MiniLM-L6-v2 on the CPU, offline: ``HF_HUB_OFFLINE=1``, weights from the model extra's
package) behind the paid gateway and behind its pass-through, on the metered route.

The figure an operator of a real model sees: ``paid_vs_passthrough_throughput_model``. The
model is the bottleneck here (one worker, calls serialized on it), so the payment step's cost
shows only as far as it takes CPU from the model on the machine's two cores.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench import loadgen, sidebyside
from bench.common import new_ledger
from bench.p1_gateway import THREADS, WORKERS, _payment_of, _wait_quiet, gateway_config, offered_terms, sign_payments
from bench.servers import Server, free_port, start_gateway, start_passthrough
from gateway.server.home import Home
from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER
from ledger.storage.sqlite import SQLiteStore

MODEL = "all-MiniLM-L6-v2"
PATH = "/v1/embeddings"
BODY = json.dumps({"model": MODEL, "input": "the quick brown fox jumps over the lazy dog"}).encode()
ROUTES = {"metered": (PATH, PATH, BODY)}
PAYERS = 16


def start_model_server(out: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "inferpay_cli", "model-server", "--port", str(port)]
    server = Server("model", argv, port, out / "model.log", env={"HF_HUB_OFFLINE": "1"}).wait_ready(timeout=180)
    # /health answers before the weights are loaded: wait for a first embedding.
    deadline = time.monotonic() + 180
    request = urllib.request.Request(
        server.url + PATH, data=BODY, method="POST", headers={"Content-Type": "application/json"}
    )
    while True:
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                if answer.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"the model server never answered an embedding:\n{server.log_tail()}") from None
            time.sleep(1.0)


def run(out: Path, settings: sidebyside.Settings, log: Any = print) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    home = Home(out / "home")
    home.ensure()
    home.create_sealer_key()
    fixture = new_ledger(home.ledger_path, PAYERS, sealer_key=bytes.fromhex(home.sealer_path.read_text()))
    fixture.ledger.store.close()
    servers: dict[str, Server] = {}
    try:
        log("  starting the model server (loading all-MiniLM-L6-v2) ...")
        model = servers["model"] = start_model_server(out)
        servers["passthrough"] = start_passthrough(
            out, lambda pay_to: gateway_config(pay_to, WORKERS, THREADS, model.url, free=True, routes=ROUTES)
        )
        gateway = servers["gateway"] = start_gateway(
            out, home.path, gateway_config(fixture.operator.address, WORKERS, THREADS, model.url, routes=ROUTES)
        )
        terms = offered_terms(gateway, PATH)
        store = SQLiteStore(home.ledger_path)

        def paid(count: int) -> list[bytes]:
            headers = sign_payments(fixture.payers, terms, fixture.chain, count)
            return [
                loadgen.build_request("POST", PATH, gateway.port, BODY, {PAYMENT_SIGNATURE_HEADER: h}) for h in headers
            ]

        # The pass-through gets the same bytes, a payment header included (it ignores it).
        sample = {PAYMENT_SIGNATURE_HEADER: _payment_of(paid(1)[0])}
        passthrough = servers["passthrough"]
        pass_request = loadgen.build_request("POST", PATH, passthrough.port, BODY, sample)
        direct_request = loadgen.build_request("POST", PATH, model.port, BODY, sample)
        targets = [
            sidebyside.Target("direct", model, sidebyside.cycled(direct_request), cycle=True),
            sidebyside.Target("passthrough", passthrough, sidebyside.cycled(pass_request), cycle=True),
            sidebyside.Target("paid", gateway, paid, cycle=False, after=lambda: _wait_quiet(store)),
        ]
        raw = sidebyside.run_rounds(targets, servers, settings, log, "model")
        single = sidebyside.single_client(targets, servers, settings, log, "model")
        store.close()
    finally:
        for server in reversed(list(servers.values())):
            with contextlib.suppress(Exception):
                server.stop()
    pooled = sidebyside.pooled(raw)
    ratio = sidebyside.ratio_of_rounds(raw, "paid", "passthrough")
    return {
        "settings": settings.__dict__,
        "servers": {
            "model": f"inferpay model-server ({MODEL}, CPU, 1 gunicorn worker x 4 threads, calls serialized)",
            "gateway": f"inferpay gateway, gunicorn {WORKERS}x{THREADS}; pass-through: the same, free = true",
        },
        "scenarios": {name: sidebyside.brief(s) for name, s in pooled.items()},
        "rounds": {name: [{k: v for k, v in r.items() if k != "_latencies"} for r in rs] for name, rs in raw.items()},
        "single_client": {name: sidebyside.brief(s) for name, s in single.items()},
        "paid_vs_passthrough_throughput_model": ratio["median"],
        "per_round": ratio["per_round"],
        "passthrough_vs_direct_throughput_model": sidebyside.ratio_of_rounds(raw, "passthrough", "direct")["median"],
        "single_client_added_latency_p50_ms": round(
            single["paid"]["latency"]["p50_ms"] - single["passthrough"]["latency"]["p50_ms"], 3
        ),
    }


if __name__ == "__main__":
    from bench.common import OUT

    print(json.dumps(run(OUT / "model", sidebyside.QUICK), indent=2)[:6000])
