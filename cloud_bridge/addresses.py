"""Client addresses as the per-address limits count them (login throttle, opt-out links).

Shared by the web layer and the enrolment service, so it sits below both.
"""

from __future__ import annotations

import ipaddress

__all__ = ["address_key"]


def address_key(ip: str | None) -> str:
    """What the per-address login limits count: an IPv4 address (also written IPv4-mapped),
    an IPv6 /64 (one subscriber's network: a guesser can rotate inside it), or the host as
    given when it is not an IP address."""
    if not ip:
        return "-"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)
