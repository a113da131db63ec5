"""Per-client limits of one ingress replica: a request rate (token bucket) and a number of open WebSocket streams.

A client is its API key when the service has one (`key:` + the first 16 hex digits of the key's SHA-256: the key
itself is never kept), else its IP address. Each ingress replica counts on its own (nothing is shared between
replicas): with R ingress replicas a client may get up to R x the limits. Refusals are 429: for HTTP a JSON
`{error, field, detail}` body with a `Retry-After` header; for a stream an error message, then a close with code
1008 (policy violation). The tables are bounded (MAX_CLIENTS, least recently seen dropped first), so a crowd of
addresses cannot grow them without bound.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

MAX_CLIENTS = 10_000  # clients whose buckets one replica remembers (a forgotten client starts with a full bucket)


@dataclass(frozen=True)
class LimitSettings:
    """What `reconfigure` takes (ServeConfig's fields of the same names). 0 switches a limit off."""

    rate_limit_rps: float = 200.0  # requests per second per client, sustained
    rate_limit_burst: int = 400  # requests a client may send at once (the bucket's size)
    max_streams_per_client: int = 8  # open WebSocket streams per client
    stream_idle_timeout_s: float = 300.0  # a stream that sends nothing for this long is closed


def client_id(token: str | None, keyed: bool, host: str | None) -> str:
    """Who is counted: the key's digest prefix when the service has a key, else the client's address."""
    if keyed and token:
        return "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return "ip:" + (host or "unknown")


class ClientLimits:
    """The counters of one replica. Not thread-safe: used from the replica's event loop only."""

    def __init__(self, settings: LimitSettings | None = None, clock=time.monotonic):
        self.settings = settings or LimitSettings()
        self.clock = clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, last refill)
        self.streams: dict[str, int] = {}

    def update(self, settings: LimitSettings) -> None:
        self.settings = settings
        self.buckets.clear()  # new sizes: every client starts with a full bucket

    def take(self, client: str) -> float | None:
        """One request of `client`: None when allowed, else the seconds after which one token is back."""
        rate, burst = self.settings.rate_limit_rps, self.settings.rate_limit_burst
        if rate <= 0:
            return None
        burst = max(burst, 1)
        now = self.clock()
        tokens, last = self.buckets.pop(client, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self.buckets[client] = (tokens, now)  # most recently seen last
        while len(self.buckets) > MAX_CLIENTS:
            self.buckets.popitem(last=False)
        return None if allowed else (1.0 - tokens) / rate

    def open_stream(self, client: str) -> bool:
        """Count a new stream of `client`; False (nothing counted) when it already has its maximum open."""
        limit = self.settings.max_streams_per_client
        n = self.streams.get(client, 0)
        if limit > 0 and n >= limit:
            return False
        self.streams[client] = n + 1
        return True

    def close_stream(self, client: str) -> None:
        n = self.streams.get(client, 0) - 1
        if n > 0:
            self.streams[client] = n
        else:
            self.streams.pop(client, None)


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
