"""Gateway configuration: a TOML file read once at start-up, checked strictly.

Unknown keys and bad values stop the gateway before it serves anything, with a message that
names the key (``ConfigError``). Prices are decimal token amounts in the file and integer base
units in memory. This module reads files; it never opens the ledger or the network.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.wire.errors import ConfigError
from ledger.amounts import parse_amount
from ledger.errors import InvalidAmount, MalformedNote
from ledger.tlog.cosignature import CosignatureVerifier
from wallets import default_home

_GATEWAY_KEYS = {
    "host",
    "port",
    "pay_to",
    "workers",
    "threads",
    "home",
    "hold_seconds",
    "upstream_timeout_seconds",
    "seal_interval_ms",
    "seal_max_txs",
    "max_body_bytes",
    "database",
}
_ROUTE_KEYS = {
    "path",
    "upstream",
    "price",
    "price_per_1k_input_tokens",
    "price_per_1k_output_tokens",
    "max_amount",
    "description",
    "free",
}
_POOL_ROUTE_KEYS = {"path", "pool", "description", "provider_path", "max_output_tokens"}
_POOL_KEYS = {
    "accept",
    "health_interval_ms",
    "probe_timeout_ms",
    "connect_timeout_ms",
    "failure_threshold",
    "recovery_interval_ms",
    "answer_timeout_ms",
    "max_answer_bytes",
}
POOL_ACCEPT = ("listed", "any")
DEFAULT_POOL_MAX_OUTPUT_TOKENS = 4096


@dataclass(frozen=True)
class Route:
    path: str
    upstream: str
    price: int  # base units per call
    price_per_1k_input_tokens: int = 0
    price_per_1k_output_tokens: int = 0
    max_amount: int = 0  # for metered routes: the hold, and the most one call may cost
    description: str = ""
    free: bool = False  # forwarded without payment: nothing held, charged or signed
    # ``pool = true``: served by the compute pool's providers (gateway.server.pool), priced by
    # their registrations; ``max_amount`` is then set per request (the hold the request needs).
    pool: bool = False
    provider_path: str = ""  # pool: appended to a provider's endpoint (its base URL, e.g. .../v1)
    max_output_tokens: int = 0  # pool: the output bound when the request names no max_tokens

    @property
    def metered(self) -> bool:
        return self.pool or bool(self.price_per_1k_input_tokens or self.price_per_1k_output_tokens)

    @property
    def authorized_amount(self) -> int:
        """What a client must authorize: the flat price, or the metered route's maximum."""
        return self.max_amount if self.metered else self.price

    def cost(self, input_tokens: int, output_tokens: int) -> int:
        """Flat price plus per-token prices, each rounded up to a whole base unit, never above max."""
        metered = -(-input_tokens * self.price_per_1k_input_tokens // 1000) + -(
            -output_tokens * self.price_per_1k_output_tokens // 1000
        )
        return min(self.price + metered, self.authorized_amount)


_RATE_LIMIT_KEYS = {"per", "route", "window_seconds", "max_requests", "max_spend"}
RATE_LIMIT_SCOPES = ("payer", "api_key", "route")


@dataclass(frozen=True)
class RateLimit:
    """``[[rate_limits]]``: at most ``max_requests`` calls and/or ``max_spend`` base units
    authorized per ``window_seconds`` (a fixed window), counted per payer, per API key or per
    route; on one route, or (``route`` None) on every paid route."""

    per: str  # one of RATE_LIMIT_SCOPES
    window_seconds: int
    max_requests: int | None = None
    max_spend: int | None = None  # base units that admitted calls may hold, per window
    route: str | None = None

    @property
    def name(self) -> str:
        """Identifies the limit's counters: a changed limit starts counting afresh."""
        return (
            f"{self.per}:{self.route or '*'}:{self.window_seconds}s:{self.max_requests or '-'}:{self.max_spend or '-'}"
        )


@dataclass(frozen=True)
class WitnessConfig:
    url: str  # the witness's base URL; checkpoints go to <url>/add-checkpoint
    vkey: str  # its cosignature/v1 verifier key, as `inferpay witness vkey` prints it


@dataclass(frozen=True)
class CheckpointConfig:
    interval_ms: int = 2000  # at most one new checkpoint this often (and only once the tree grew)
    witness_timeout_ms: int = 5000
    witnesses: tuple[WitnessConfig, ...] = ()


@dataclass(frozen=True)
class PoolConfig:
    """``[pool]``: whom the gateway routes pool calls to, and how it watches them."""

    accept: str = "listed"  # "listed": providers the operator approved on the ledger; "any": every active one
    health_interval_ms: int = 2000  # how often each routable provider is probed (and the directory reloaded)
    probe_timeout_ms: int = 500  # a probe's whole answer
    connect_timeout_ms: int = 1000  # connecting to a provider, on probes and on paid calls
    failure_threshold: int = 3  # consecutive failures (probes or calls) that open a provider's circuit
    recovery_interval_ms: int = 5000  # an open circuit is probed this often; one success closes it
    answer_timeout_ms: int = 120_000  # a provider's whole answer (a stream: up to its first event)
    max_answer_bytes: int = 32 * 1024 * 1024  # the largest answer read from a provider (decoded)


@dataclass(frozen=True)
class GatewayConfig:
    home: Path
    routes: tuple[Route, ...]
    host: str = "127.0.0.1"
    port: int = 8402
    pay_to: str = "operator"
    workers: int = 2
    threads: int = 8
    hold_seconds: int = 300
    upstream_timeout_seconds: float = 60.0
    seal_interval_ms: int = 200
    seal_max_txs: int = 1000
    max_body_bytes: int = 10 * 1024 * 1024
    database: str | None = None
    checkpoints: CheckpointConfig = CheckpointConfig()
    rate_limits: tuple[RateLimit, ...] = ()
    pool: PoolConfig = PoolConfig()
    extra: dict[str, Any] = field(default_factory=dict)

    def route_for(self, path: str) -> Route | None:
        for route in self.routes:
            if route.path == path:
                return route
        return None


def _amount(value: object, where: str, *, allow_zero: bool = False) -> int:
    if not isinstance(value, str):
        raise ConfigError(f'{where}: write amounts as decimal strings, e.g. "0.001" (got {value!r})')
    try:
        return parse_amount(value, allow_zero=allow_zero)
    except InvalidAmount as exc:
        raise ConfigError(f"{where}: {exc.message}") from exc


def _int(value: object, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{where}: expected an integer from {low} to {high}, got {value!r}")
    return value


def _route(data: object, index: int) -> Route:
    where = f"routes[{index}]"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    if data.get("pool", False) is not False:
        return _pool_route(data, where)
    if unknown := set(data) - _ROUTE_KEYS:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    free = data.get("free", False)
    if not isinstance(free, bool):
        raise ConfigError(f"{where}.free: expected true or false, got {free!r}")
    prices = {"price", "price_per_1k_input_tokens", "price_per_1k_output_tokens", "max_amount"}
    if free and (priced := sorted(set(data) & prices)):
        raise ConfigError(f"{where}: a free route has no prices (remove {', '.join(priced)})")
    for key in ("path", "upstream") if free else ("path", "upstream", "price"):
        if key not in data:
            raise ConfigError(f"{where}: missing {key!r}")
    path = data["path"]
    _check_path(path, where)
    upstream = data["upstream"]
    try:
        parts = urlsplit(upstream) if isinstance(upstream, str) else None
        _ = parts.port if parts is not None else None  # a bad port is only noticed when asked for
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where}.upstream: expected an http(s) URL, got {upstream!r}")
    route = Route(
        path=path,
        upstream=upstream,
        price=_amount(data.get("price", "0"), f"{where}.price", allow_zero=True),
        price_per_1k_input_tokens=_amount(
            data.get("price_per_1k_input_tokens", "0"), f"{where}.price_per_1k_input_tokens", allow_zero=True
        ),
        price_per_1k_output_tokens=_amount(
            data.get("price_per_1k_output_tokens", "0"),
            f"{where}.price_per_1k_output_tokens",
            allow_zero=True,
        ),
        max_amount=_amount(data["max_amount"], f"{where}.max_amount") if "max_amount" in data else 0,
        description=str(data.get("description", "")),
        free=free,
    )
    if route.free:
        return route
    if route.metered and not route.max_amount:
        raise ConfigError(f"{where}: a route priced per token needs max_amount (the most one call may cost)")
    if route.metered and route.max_amount < route.price:
        raise ConfigError(f"{where}: max_amount must be at least price")
    if not route.metered and route.price == 0:
        raise ConfigError(f"{where}: price must be positive on a flat-priced route")
    return route


def _check_path(path: object, where: str) -> None:
    reserved = ("/ledger", "/facilitator", "/explorer", "/metrics", "/health", "/pool")  # the gateway's own
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or path.startswith("/openapi")
        or any(path == r or path.startswith(r + "/") for r in reserved)
    ):
        raise ConfigError(
            f"{where}.path: must start with '/' and not shadow /ledger, /facilitator, /explorer, /metrics, /health,"
            f" /pool or /openapi.json, got {path!r}"
        )


def _pool_route(data: dict[str, Any], where: str) -> Route:
    """A ``pool = true`` route: no upstream and no prices of its own (the providers' registrations
    price it); ``provider_path`` defaults to the path without its leading ``/v1``."""
    if data["pool"] is not True:
        raise ConfigError(f"{where}.pool: expected true or false, got {data['pool']!r}")
    if unknown := set(data) - _POOL_ROUTE_KEYS:
        raise ConfigError(
            f"{where}: a pool route takes only {', '.join(sorted(_POOL_ROUTE_KEYS))};"
            f" remove {', '.join(sorted(unknown))} (providers' registrations give the endpoints and prices)"
        )
    if "path" not in data:
        raise ConfigError(f"{where}: missing 'path'")
    path = data["path"]
    _check_path(path, where)
    default_suffix = path[3:] if path.startswith("/v1/") else path
    provider_path = data.get("provider_path", default_suffix)
    if not isinstance(provider_path, str) or not provider_path.startswith("/") or "?" in provider_path:
        raise ConfigError(f"{where}.provider_path: expected a path starting with '/', got {provider_path!r}")
    max_output = data.get("max_output_tokens", DEFAULT_POOL_MAX_OUTPUT_TOKENS)
    return Route(
        path=path,
        upstream="",
        price=0,
        description=str(data.get("description", "")),
        pool=True,
        provider_path=provider_path,
        max_output_tokens=_int(max_output, f"{where}.max_output_tokens", 0, 10**9),
    )


def _pool(data: object) -> PoolConfig:
    if not isinstance(data, dict):
        raise ConfigError("[pool] must be a table")
    if unknown := set(data) - _POOL_KEYS:
        raise ConfigError(f"[pool]: unknown key(s) {', '.join(sorted(unknown))}")
    accept = data.get("accept", "listed")
    if accept not in POOL_ACCEPT:
        raise ConfigError(f'[pool].accept: expected "listed" or "any", got {accept!r}')
    return PoolConfig(
        accept=accept,
        health_interval_ms=_int(data.get("health_interval_ms", 2000), "[pool].health_interval_ms", 50, 3_600_000),
        probe_timeout_ms=_int(data.get("probe_timeout_ms", 500), "[pool].probe_timeout_ms", 10, 60_000),
        connect_timeout_ms=_int(data.get("connect_timeout_ms", 1000), "[pool].connect_timeout_ms", 10, 60_000),
        failure_threshold=_int(data.get("failure_threshold", 3), "[pool].failure_threshold", 1, 1000),
        recovery_interval_ms=_int(data.get("recovery_interval_ms", 5000), "[pool].recovery_interval_ms", 50, 3_600_000),
        answer_timeout_ms=_int(data.get("answer_timeout_ms", 120_000), "[pool].answer_timeout_ms", 100, 3_600_000),
        max_answer_bytes=_int(
            data.get("max_answer_bytes", 32 * 1024 * 1024), "[pool].max_answer_bytes", 1024, 1024 * 1024 * 1024
        ),
    )


def _witness(data: object, index: int) -> WitnessConfig:
    where = f"[[checkpoints.witnesses]][{index}]"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    if unknown := set(data) - {"url", "vkey"}:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    url, vkey = data.get("url"), data.get("vkey")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise ConfigError(f"{where}.url: expected an http(s) URL, got {url!r}")
    if not isinstance(vkey, str):
        raise ConfigError(f"{where}.vkey: expected the witness's verifier key (`inferpay witness vkey`)")
    try:
        CosignatureVerifier.from_vkey(vkey)
    except MalformedNote as exc:
        raise ConfigError(f"{where}.vkey: {exc.message}") from exc
    return WitnessConfig(url=url.rstrip("/"), vkey=vkey)


def _checkpoints(data: object) -> CheckpointConfig:
    if not isinstance(data, dict):
        raise ConfigError("[checkpoints] must be a table")
    if unknown := set(data) - {"interval_ms", "witness_timeout_ms", "witnesses"}:
        raise ConfigError(f"[checkpoints]: unknown key(s) {', '.join(sorted(unknown))}")
    witnesses = data.get("witnesses", [])
    if not isinstance(witnesses, list):
        raise ConfigError("[checkpoints].witnesses: expected [[checkpoints.witnesses]] tables")
    return CheckpointConfig(
        interval_ms=_int(data.get("interval_ms", 2000), "[checkpoints].interval_ms", 100, 3_600_000),
        witness_timeout_ms=_int(data.get("witness_timeout_ms", 5000), "[checkpoints].witness_timeout_ms", 100, 600_000),
        witnesses=tuple(_witness(w, i) for i, w in enumerate(witnesses)),
    )


def _rate_limit(data: object, index: int, routes: tuple[Route, ...]) -> RateLimit:
    where = f"rate_limits[{index}]"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    if unknown := set(data) - _RATE_LIMIT_KEYS:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    per = data.get("per")
    if per not in RATE_LIMIT_SCOPES:
        raise ConfigError(f"{where}.per: expected one of {', '.join(RATE_LIMIT_SCOPES)}, got {per!r}")
    if "window_seconds" not in data:
        raise ConfigError(f"{where}: missing 'window_seconds'")
    window = _int(data["window_seconds"], f"{where}.window_seconds", 1, 30 * 86400)
    if "max_requests" not in data and "max_spend" not in data:
        raise ConfigError(f"{where}: give max_requests, max_spend or both")
    max_requests = _int(data["max_requests"], f"{where}.max_requests", 1, 10**9) if "max_requests" in data else None
    max_spend = _amount(data["max_spend"], f"{where}.max_spend") if "max_spend" in data else None
    route_path = data.get("route")
    paid = [r for r in routes if not r.free]
    if route_path is not None:
        found = next((r for r in routes if r.path == route_path), None)
        if found is None or found.free:
            raise ConfigError(f"{where}.route: {route_path!r} is not a paid route of this gateway")
        paid = [found]
    if max_spend is not None and (too_dear := [r.path for r in paid if r.price > max_spend]):
        raise ConfigError(f"{where}.max_spend: below the price of one call to {', '.join(too_dear)}")
    return RateLimit(per, window, max_requests, max_spend, route_path)


def config_home(value: Any, where: str, fallback: Path | None) -> Path:
    """A config's ``home``: the file's value, else the caller's (``--home``), else the default
    home (``$INFERPAY_HOME`` or ``~/.inferpay``, the one rule in ``wallets.default_home``)."""
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a directory path")
    if value:
        return Path(value).expanduser()
    return fallback if fallback is not None else default_home()


def parse_config(data: dict[str, Any], *, home: Path | None = None) -> GatewayConfig:
    if unknown := set(data) - {"gateway", "routes", "checkpoints", "rate_limits", "pool"}:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))}")
    gateway = data.get("gateway", {})
    if not isinstance(gateway, dict):
        raise ConfigError("[gateway] must be a table")
    if unknown := set(gateway) - _GATEWAY_KEYS:
        raise ConfigError(f"[gateway]: unknown key(s) {', '.join(sorted(unknown))}")
    routes_data = data.get("routes")
    if not isinstance(routes_data, list) or not routes_data:
        raise ConfigError("at least one [[routes]] entry is required")
    routes = tuple(_route(r, i) for i, r in enumerate(routes_data))
    paths = [r.path for r in routes]
    if len(set(paths)) != len(paths):
        raise ConfigError("two routes have the same path")
    limits_data = data.get("rate_limits", [])
    if not isinstance(limits_data, list):
        raise ConfigError("rate_limits must be an array of tables: [[rate_limits]]")
    rate_limits = tuple(_rate_limit(d, i, routes) for i, d in enumerate(limits_data))
    resolved_home = config_home(gateway.get("home"), "[gateway].home", home)
    host = gateway.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise ConfigError("[gateway].host: expected a host name or address")
    pay_to = gateway.get("pay_to", "operator")
    if not isinstance(pay_to, str):
        raise ConfigError("[gateway].pay_to: expected a wallet name or address")
    database = gateway.get("database")
    if database is not None and not isinstance(database, str):
        raise ConfigError("[gateway].database: expected a URL string")
    timeout = gateway.get("upstream_timeout_seconds", 60)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 3600:
        raise ConfigError("[gateway].upstream_timeout_seconds: expected a number of seconds from 0 to 3600")
    return GatewayConfig(
        home=resolved_home,
        routes=routes,
        host=host,
        port=_int(gateway.get("port", 8402), "[gateway].port", 0, 65535),
        pay_to=pay_to,
        workers=_int(gateway.get("workers", 2), "[gateway].workers", 1, 64),
        threads=_int(gateway.get("threads", 8), "[gateway].threads", 1, 256),
        hold_seconds=_int(gateway.get("hold_seconds", 300), "[gateway].hold_seconds", 5, 86400),
        upstream_timeout_seconds=float(timeout),
        seal_interval_ms=_int(gateway.get("seal_interval_ms", 200), "[gateway].seal_interval_ms", 1, 3_600_000),
        seal_max_txs=_int(gateway.get("seal_max_txs", 1000), "[gateway].seal_max_txs", 1, 100_000),
        max_body_bytes=_int(gateway.get("max_body_bytes", 10 * 1024 * 1024), "[gateway].max_body_bytes", 1, 2**31),
        database=database,
        checkpoints=_checkpoints(data.get("checkpoints", {})),
        rate_limits=rate_limits,
        pool=_pool(data.get("pool", {})),
    )


def read_toml(path: str | Path) -> dict[str, Any]:
    """A config file's tables; a missing or malformed file is a one-line ``ConfigError``."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"no config file at {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def load_config(path: str | Path, *, home: Path | None = None) -> GatewayConfig:
    return parse_config(read_toml(path), home=home)
