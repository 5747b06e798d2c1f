"""LiteLLM's proxy as a peer: started here on 127.0.0.1, with a master key, in front of the
benchmark's upstream (``bench.upstream``) declared as an OpenAI-compatible model.

LiteLLM lives in a virtualenv of its own (``$LITELLM_VENV``, default bench/out/litellm-venv,
made by ``make bench-peers-install``, which ``make bench`` runs first): its pins (fastapi,
pydantic, openai, httpx...) must never mix with inferpay's. It is configured as its docs tell
an operator to: ``model_list`` with one ``openai/<name>`` model whose ``api_base`` is the
upstream, ``general_settings.master_key``, served by its own CLI (uvicorn) with as many worker
processes as the gateway has.

Per-key budgets need LiteLLM's database layer (Prisma over PostgreSQL). ``budgets_probe``
starts it with ``DATABASE_URL`` and reports whether it came up, and if not, the line of its log
that says why (offline, Prisma's query engine is a download from outside any package registry).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.servers import Server, free_port

LITELLM_VENV = Path(os.environ.get("LITELLM_VENV") or Path(__file__).resolve().parent / "out" / "litellm-venv")
MASTER_KEY = "sk-bench-master-key"
MODEL = "bench"  # the model name clients ask for; the same name the gateway's metered route sees
# Its quiet, offline settings: no telemetry, the bundled model-cost map instead of a fetch.
ENV = {"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def binary() -> Path:
    path = LITELLM_VENV / "bin" / "litellm"
    if not path.exists():
        raise RuntimeError(f"LiteLLM is not installed at {LITELLM_VENV}: run `make bench-peers-install`")
    return path


def version() -> str:
    for site in (LITELLM_VENV / "lib").glob("python*/site-packages"):
        for meta in site.glob("litellm-*.dist-info"):
            return meta.name.removeprefix("litellm-").removesuffix(".dist-info")
    return "?"


def write_config(out: Path, upstream_url: str) -> Path:
    """The proxy's config.yaml (JSON is YAML): one OpenAI-compatible model at the upstream."""
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {"model": f"openai/{MODEL}", "api_base": upstream_url + "/v1", "api_key": "unused"},
            }
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "litellm_settings": {"telemetry": False},
    }
    path = out / "litellm.yaml"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def start(
    out: Path, upstream_url: str, workers: int, *, name: str = "litellm", env: dict[str, str] | None = None
) -> Server:
    config = write_config(out, upstream_url)
    port = free_port()
    argv = [str(binary()), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", str(workers)]
    child_env = {**ENV, "PATH": f"{LITELLM_VENV / 'bin'}:{os.environ.get('PATH', '')}", **(env or {})}
    server = Server(name, argv, port, out / f"{name}.log", env=child_env)
    return server.wait_ready("/health/liveliness", timeout=180)


def budgets_probe(out: Path, upstream_url: str, database_url: str, timeout_s: float = 150.0) -> dict[str, Any]:
    """Can LiteLLM's per-key budgets run here? Start it with a database and try to make a key
    with a budget. Returns ``{"runs": bool, "reason": str, ...}``; the server is stopped."""
    config = write_config(out, upstream_url)
    port = free_port()
    argv = [str(binary()), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    child_env = {**ENV, "PATH": f"{LITELLM_VENV / 'bin'}:{os.environ.get('PATH', '')}", "DATABASE_URL": database_url}
    server = Server("litellm-budgets", argv, port, out / "litellm-budgets.log", env=child_env)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and server.process.poll() is None:
            try:
                with urllib.request.urlopen(server.url + "/health/liveliness", timeout=2) as answer:
                    if answer.status == 200:
                        return {"runs": True, **_budgeted_key(server)}
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1.0)
        return {"runs": False, "exit_code": server.process.poll(), "reason": _why(server.log_tail(20000))}
    finally:
        server.stop()


def _budgeted_key(server: Server) -> dict[str, Any]:
    request = urllib.request.Request(
        server.url + "/key/generate",
        data=json.dumps({"max_budget": 10.0, "models": [MODEL]}).encode(),
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = json.loads(answer.read())
        return {"reason": "a key with max_budget was made", "key_prefix": str(body.get("key", ""))[:8]}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"runs": False, "reason": f"started, but /key/generate failed: {exc}"}


def _why(log: str) -> str:
    """The log's own words for the failure (the first line naming an error), ANSI colours removed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", log)
    patterns = (
        r"Prisma error:\s*(Error: .*)",  # e.g. its query engine, fetched from binaries.prisma.sh
        r"Preparing the Prisma CLI toolchain failed: (.*)",
        r"(Database migration cannot proceed.*)",
    )
    for pattern in patterns:
        if found := re.search(pattern, text):
            return found.group(1).strip()[:500]
    lines = [line for line in text.splitlines() if re.search(r"error|failed|cannot", line, re.I)]
    return (lines[0] if lines else text.strip().splitlines()[-1:][0] if text.strip() else "no log").strip()[:500]
