"""Shared test configuration: no display, and no network.

Every test runs with the network cut off: a connection to anything but this
machine fails the test (so no test can depend on a download), and a name
lookup of anything but a local name fails as it does offline.
"""

import ipaddress
import socket

import matplotlib
import pytest

matplotlib.use("Agg")  # no display in CI

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _is_local(host: object) -> bool:
  if not isinstance(host, str):
    return False
  if host in _LOCAL_NAMES:
    return True
  try:
    return ipaddress.ip_address(host.split("%")[0]).is_loopback
  except ValueError:
    return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  """Fail any test that opens a non-loopback connection; fail name lookups as offline."""
  connect, connect_ex, getaddrinfo = (
      socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)

  def guard(address):
    if isinstance(address, tuple) and not _is_local(address[0]):
      pytest.fail(f"a test tried to reach the network ({address!r}); tests must run offline")

  def guarded_connect(self, address):
    guard(address)
    return connect(self, address)

  def guarded_connect_ex(self, address):
    guard(address)
    return connect_ex(self, address)

  def guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_local(host if not isinstance(host, bytes) else host.decode()):
      raise socket.gaierror(socket.EAI_NONAME, f"{host}: no network in tests")
    return getaddrinfo(host, *args, **kwargs)

  monkeypatch.setattr(socket.socket, "connect", guarded_connect)
  monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
  monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
