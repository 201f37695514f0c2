"""What keeps one server usable by everyone: read deadlines, early refusal when busy, and a Host check.

- `ReadDeadline`: a request's body must arrive within `read_timeout` seconds of its head, or 408; a client
  trickling bytes cannot hold a connection (and a place under uvicorn's `limit_concurrency`) for longer.
- `QueueGate`: an upload to the predict route is refused with 503 before a byte of its body is read when
  the model's queue is already full.
- `HostCheck`: on a server bound to loopback, requests whose `Host` (or `Origin`) is not this machine are
  refused with 403, so a web page elsewhere cannot reach the model through DNS rebinding.
- `timed_h11_protocol`: uvicorn's HTTP/1.1 protocol closing connections whose request head (the request
  line and headers, before the app sees anything) does not arrive within the same deadline.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Iterable, Optional
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from detkit.server.hosts import host_name

# Lazy imports: uvicorn, part of the optional web extra, is imported only when a server is built.

class ReadDeadline:
    """Answer 408 (and close the connection) when a request body is not complete `timeout` s after its head."""

    def __init__(self, app: ASGIApp, timeout: float):
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        complete = False

        async def timed() -> Message:
            nonlocal complete
            if complete:
                return await receive()  # only http.disconnect remains to wait for
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                # Raised inside FastAPI's body parsing, it reaches the JSON error handler untouched.
                raise HTTPException(408, f"request body not received within {self.timeout:g} s (--read-timeout)",
                                    headers={"Connection": "close"}) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed, send)


class QueueGate:
    """Refuse uploads to `paths` with 503 before reading them while `is_full()` says the queue is full."""

    def __init__(self, app: ASGIApp, paths: Iterable[str], is_full: Callable[[], bool]):
        self.app = app
        self.paths = frozenset(paths)
        self.is_full = is_full

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths and self.is_full():
            response = JSONResponse({"error": "server busy: the model's queue is full; retry in a moment"},
                                    status_code=503, headers={"Retry-After": "1", "Connection": "close"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class HostCheck:
    """403 for requests whose Host or Origin names a host outside `allowed` (DNS rebinding defence)."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]):
        self.app = app
        self.allowed = frozenset(host_name(h) for h in allowed)

    def refusal(self, scope: Scope) -> Optional[str]:
        """Why this request is refused, or None."""
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if host_name(host) not in self.allowed:
            return (f"Host {host!r} is not allowed: this server answers requests for "
                    f"{', '.join(sorted(self.allowed))} (add a name with --allow-host)")
        origin = headers.get(b"origin")
        if origin is not None:
            origin_text = origin.decode("latin-1")
            if (urlsplit(origin_text).hostname or "") not in self.allowed:
                return f"Origin {origin_text!r} is not allowed (add its host with --allow-host)"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            reason = self.refusal(scope)
            if reason is not None:
                await JSONResponse({"error": reason}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def timed_h11_protocol(read_timeout: float) -> type:
    """uvicorn's h11 protocol class closing a connection whose next request head is late by `read_timeout` s."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
            super().connection_made(transport)
            self._arm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()

        def connection_lost(self, exc: Optional[Exception]) -> None:
            timer = getattr(self, "_head_timer", None)
            if timer is not None:
                timer.cancel()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            previous = getattr(self, "_head_timer", None)
            if previous is not None:
                previous.cancel()
            waiting_after = self.cycle  # a new request replaces self.cycle: its head arrived in time
            self._head_timer = self.loop.call_later(read_timeout, self._head_late, waiting_after)

        def _head_late(self, waiting_after: object) -> None:
            if self.cycle is waiting_after and not self.transport.is_closing():
                self.transport.close()

    return TimedH11Protocol
