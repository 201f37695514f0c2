"""Which host names a server answers to: loopback addresses, the Host header's host part (the DNS rebinding
defence of `guards.HostCheck` and `detkit server web --allow-host`)."""
from __future__ import annotations

import ipaddress
from typing import Iterable, Optional

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the server is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """'localhost' of 'LOCALHOST:5000', '::1' of '[::1]:5000': the host part of a Host header, lowercased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value[1:]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def loopback_hosts(bound_host: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The names a loopback server answers to: the usual ones, the address it is bound to and `extra`."""
    return tuple(dict.fromkeys([*LOOPBACK_NAMES, host_name(bound_host), *(host_name(h) for h in extra)]))


def allowed_hosts(host: str, extra: tuple[str, ...]) -> Optional[tuple[str, ...]]:
    """Host names the server answers to: this machine's on loopback (plus `extra`), else `extra` or any."""
    if is_loopback(host):
        return loopback_hosts(host, extra)
    return tuple(host_name(h) for h in extra) or None
