"""Shared pytest setup: the real-server lab plugins (when present) and a loopback-only network guard."""

from __future__ import annotations

import importlib.util
import ipaddress
import socket

import pytest

pytest_plugins = [p for p in ("tests.lab.fixtures",) if importlib.util.find_spec(p) is not None]

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_sendto = socket.socket.sendto


def _check(sock: socket.socket, address: object) -> None:
    """Tests may only talk to loopback: anything else is a bug that would leak traffic off the machine."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
        return
    host = address[0]
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise OSError(f"test network guard: unresolved host {host!r} passed to connect") from None
    if not ip.is_loopback:
        raise PermissionError(f"test network guard: traffic to {host} blocked (tests talk to loopback only)")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check(self, address)
    return _real_connect_ex(self, address)


def _guarded_sendto(self: socket.socket, data: bytes, *args: object) -> int:
    _check(self, args[-1])
    return _real_sendto(self, data, *args)  # type: ignore[arg-type]


@pytest.fixture(autouse=True, scope="session")
def loopback_only() -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = _guarded_sendto  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = _real_sendto  # type: ignore[method-assign]
