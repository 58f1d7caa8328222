"""Tests for connection limits and the client address (synchronous)."""

from __future__ import annotations

import ipaddress

import pytest

from tickcast.config import Config
from tickcast.fanout.limits import Limits

TEN = ipaddress.ip_network("10.0.0.0/8")


def limits(**kw: object) -> Limits:
    settings: dict[str, object] = {
        "max_connections": 2,
        "max_connections_per_ip": 1,
        "trusted_proxies": (TEN,),
    }
    settings.update(kw)
    return Limits(Config(**settings))  # type: ignore[arg-type]


# -- acquire / release ----------------------------------------------------------------


def test_starts_empty() -> None:
    lim = limits()
    assert (lim.total, lim.refused) == (0, 0)
    assert (lim.max_total, lim.max_per_ip) == (2, 1)


def test_acquire_counts_total_and_per_ip() -> None:
    lim = limits()
    assert lim.acquire("1.1.1.1") is None
    assert lim.acquire("2.2.2.2") is None
    assert lim.total == 2
    assert lim.refused == 0
    # Each address now holds its one slot (max_connections_per_ip=1).
    lim.release("2.2.2.2")
    assert "max_connections_per_ip" in (lim.acquire("1.1.1.1") or "")
    assert lim.acquire("2.2.2.2") is None


def test_per_ip_refusal_names_the_limit() -> None:
    lim = limits()
    assert lim.acquire("1.1.1.1") is None
    reason = lim.acquire("1.1.1.1")
    assert reason is not None
    assert "max_connections_per_ip" in reason
    assert "1.1.1.1" in reason
    assert lim.refused == 1
    # A refusal takes nothing: one release frees the address.
    assert lim.total == 1
    lim.release("1.1.1.1")
    assert lim.acquire("1.1.1.1") is None


def test_total_refusal_names_the_limit() -> None:
    lim = limits()
    assert lim.acquire("1.1.1.1") is None
    assert lim.acquire("2.2.2.2") is None
    reason = lim.acquire("3.3.3.3")
    assert reason is not None
    assert "max_connections" in reason
    assert "per_ip" not in reason
    assert "(2)" in reason
    assert lim.refused == 1
    assert lim.total == 2
    lim.release("1.1.1.1")  # 3.3.3.3 took nothing: it gets its one slot
    assert lim.acquire("3.3.3.3") is None


def test_refused_counts_every_refusal() -> None:
    lim = limits()
    lim.acquire("1.1.1.1")
    for _ in range(3):
        assert lim.acquire("1.1.1.1") is not None
    lim.acquire("2.2.2.2")
    assert lim.acquire("3.3.3.3") is not None
    assert lim.refused == 4


def test_release_frees_the_slot_at_once() -> None:
    lim = limits()
    assert lim.acquire("1.1.1.1") is None
    assert lim.acquire("1.1.1.1") is not None
    lim.release("1.1.1.1")
    assert lim.total == 0
    assert not lim._per_ip  # no entry is kept for an address without a slot
    assert lim.acquire("1.1.1.1") is None
    assert lim.total == 1


def test_release_frees_a_total_slot() -> None:
    lim = limits()
    lim.acquire("1.1.1.1")
    lim.acquire("2.2.2.2")
    assert lim.acquire("3.3.3.3") is not None
    lim.release("2.2.2.2")
    assert lim.acquire("3.3.3.3") is None
    assert lim.total == 2
    assert lim.acquire("1.1.1.1") is not None  # each address is at its limit
    assert lim.acquire("3.3.3.3") is not None


def test_per_ip_counts_several() -> None:
    lim = limits(max_connections=10, max_connections_per_ip=3)
    for _ in range(3):
        assert lim.acquire("1.1.1.1") is None
    assert lim.acquire("1.1.1.1") is not None
    lim.release("1.1.1.1")
    assert lim.total == 2
    assert lim.acquire("1.1.1.1") is None  # one slot free again, and only one
    assert lim.acquire("1.1.1.1") is not None


# -- client_ip ------------------------------------------------------------------------


def test_untrusted_peer_ignores_forwarded_for() -> None:
    lim = limits()
    assert lim.client_ip("203.0.113.9", "1.2.3.4") == "203.0.113.9"


def test_trusted_peer_uses_right_most_untrusted_hop() -> None:
    lim = limits()
    assert lim.client_ip("10.0.0.1", "1.2.3.4, 10.0.0.2") == "1.2.3.4"


def test_trusted_peer_does_not_believe_spoofed_left_hops() -> None:
    # The client can write anything on the left; only the hop the trusted proxy
    # appended (the right-most untrusted one) counts.
    lim = limits()
    assert lim.client_ip("10.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.2") == "1.2.3.4"
    assert lim.client_ip("10.0.0.1", "6.6.6.6,1.2.3.4") == "1.2.3.4"


def test_trusted_peer_without_header_is_the_peer() -> None:
    lim = limits()
    assert lim.client_ip("10.0.0.1", None) == "10.0.0.1"
    assert lim.client_ip("10.0.0.1", "") == "10.0.0.1"
    assert lim.client_ip("10.0.0.1", " , ") == "10.0.0.1"


def test_all_hops_trusted_gives_the_left_most() -> None:
    lim = limits()
    assert lim.client_ip("10.0.0.1", "10.0.0.3, 10.0.0.2") == "10.0.0.3"


@pytest.mark.parametrize("garbage", ["unknown", "not-an-ip", "10.0.0.0/8", "_hidden"])
def test_garbage_entries_are_not_trusted(garbage: str) -> None:
    lim = limits()
    # A garbage hop is not a trusted proxy, so the walk stops there.
    assert lim.client_ip("10.0.0.1", f"1.2.3.4, {garbage}, 10.0.0.2") == garbage
    # And a garbage peer is never trusted.
    assert lim.client_ip(garbage, "1.2.3.4") == garbage


def test_no_trusted_proxies_means_peer_always() -> None:
    lim = limits(trusted_proxies=())
    assert lim.client_ip("10.0.0.1", "1.2.3.4") == "10.0.0.1"
    assert lim.client_ip("127.0.0.1", "1.2.3.4, 10.0.0.2") == "127.0.0.1"
    assert lim.client_ip("1.1.1.1", None) == "1.1.1.1"


def test_ipv6_trusted_proxy() -> None:
    lim = limits(trusted_proxies=(ipaddress.ip_network("::1/128"),))
    assert lim.client_ip("::1", "2001:db8::7") == "2001:db8::7"
    assert lim.client_ip("::2", "2001:db8::7") == "::2"


def test_forwarded_address_is_what_limits_count() -> None:
    lim = limits(max_connections=10, max_connections_per_ip=1)
    a = lim.client_ip("10.0.0.1", "1.2.3.4")
    b = lim.client_ip("10.0.0.1", "5.6.7.8")
    assert lim.acquire(a) is None
    assert lim.acquire(b) is None  # same proxy, different clients
    assert lim.acquire(lim.client_ip("10.0.0.1", "1.2.3.4")) is not None
