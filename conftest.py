"""Fixtures for every test, doctests of sktransfer/ and README.md included."""

import ipaddress
import socket

import pytest
from _pytest.doctest import DoctestItem

_connect = socket.socket.connect


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _local_only_connect(sock, address):
    """No test may reach the network. Local sockets are fine: Unix ones (DataLoader workers) and loopback
    ones (the scheduler and workers of a local Dask cluster)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        raise OSError(f"network access is disabled in tests (tried {address!r})")
    return _connect(sock, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _local_only_connect)


@pytest.fixture(autouse=True)
def _private_torch_home(tmp_path_factory, monkeypatch):
    """An empty torch cache per test, so nothing depends on what this machine downloaded before."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))


@pytest.fixture(autouse=True)
def _doctests_write_into_a_temporary_folder(request, tmp_path, monkeypatch):
    if isinstance(request.node, DoctestItem):
        monkeypatch.chdir(tmp_path)
