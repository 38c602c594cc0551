"""The caller's source address: the socket peer, unless trusted proxies name the client."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import ConfigError
from bastion.gateway.net import parse_networks, source_ip

PROXIES = parse_networks(["10.0.0.0/8", "fd00::/8"])
PROXY = "10.0.0.1"
CLIENT = "203.0.113.9"


def test_parse_networks_accepts_hosts_ranges_and_spaces() -> None:
    assert parse_networks([" 10.1.2.3/8 ", "192.0.2.1", "2001:db8::/32"]) == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
        ipaddress.ip_network("2001:db8::/32"),
    )


def test_parse_networks_rejects_garbage() -> None:
    with pytest.raises(ConfigError, match="BASTION_TRUSTED_PROXIES: 'not-a-network' is not"):
        parse_networks(["not-a-network"])


def test_without_trusted_proxies_the_peer_is_the_source() -> None:
    assert source_ip(CLIENT, "198.51.100.1", ()) == CLIENT


def test_a_spoofed_header_from_an_untrusted_peer_is_ignored() -> None:
    assert source_ip(CLIENT, "198.51.100.1", PROXIES) == CLIENT
    assert source_ip(CLIENT, "10.0.0.5", PROXIES) == CLIENT


def test_a_trusted_proxy_names_the_client() -> None:
    assert source_ip(PROXY, CLIENT, PROXIES) == CLIENT


def test_without_a_header_a_trusted_proxy_is_the_source() -> None:
    assert source_ip(PROXY, None, PROXIES) == PROXY
    assert source_ip(PROXY, "", PROXIES) == PROXY


def test_the_client_controlled_left_part_is_ignored() -> None:
    # The client sent "X-Forwarded-For: 1.1.1.1"; the proxy appended the address it saw.
    assert source_ip(PROXY, f"1.1.1.1, {CLIENT}", PROXIES) == CLIENT


def test_a_chain_of_trusted_proxies_is_walked_from_the_right() -> None:
    assert source_ip(PROXY, f"1.1.1.1, {CLIENT}, 10.0.0.7, 10.9.9.9", PROXIES) == CLIENT


def test_a_header_of_trusted_proxies_only_gives_the_peer() -> None:
    assert source_ip(PROXY, "10.0.0.2, 10.0.0.3", PROXIES) == PROXY


def test_spaces_around_hops_do_not_matter() -> None:
    assert source_ip(PROXY, f"  1.1.1.1 ,{CLIENT}  ", PROXIES) == CLIENT


@pytest.mark.parametrize(
    "header",
    [
        "not-an-ip",
        f"1.1.1.1, {CLIENT}, garbage",
        f"{CLIENT},",
        f"{CLIENT}, , 10.0.0.2",
        f"{CLIENT}:4711",  # a port is not part of X-Forwarded-For
        "[2001:db8::1]",
        "unknown",
        "999.1.1.1",
    ],
)
def test_a_garbled_hop_before_the_client_keeps_the_peer(header: str) -> None:
    assert source_ip(PROXY, header, PROXIES) == PROXY


def test_garbage_left_of_the_client_does_not_matter() -> None:
    assert source_ip(PROXY, f"garbage, {CLIENT}", PROXIES) == CLIENT


def test_ipv6_peers_and_clients() -> None:
    assert source_ip("fd00::1", "2001:db8::5", PROXIES) == "2001:db8::5"
    assert source_ip("fd00::1", "2001:db8::5, fd12::9", PROXIES) == "2001:db8::5"
    assert source_ip("2001:db8::7", "2001:db8::5", PROXIES) == "2001:db8::7"  # untrusted peer
    assert source_ip(PROXY, f"2001:db8::5, {CLIENT}", PROXIES) == CLIENT
    assert source_ip(PROXY, "2001:db8::5", PROXIES) == "2001:db8::5"


def test_an_ipv6_peer_is_not_trusted_by_an_ipv4_range() -> None:
    assert source_ip("2001:db8::7", CLIENT, parse_networks(["0.0.0.0/0"])) == "2001:db8::7"


def test_a_garbled_peer_is_never_trusted() -> None:
    assert source_ip("not-an-ip", CLIENT, PROXIES) == "not-an-ip"


def test_a_long_spoofed_header_cannot_hide_the_real_client() -> None:
    # The client sends 40 fake hops; the trusted proxy appends the address it really saw. Only
    # the right-most hops were written by trusted parties, so those are the ones to read.
    spoofed = ", ".join(["198.51.100.66"] * 40)
    assert source_ip(PROXY, f"{spoofed}, {CLIENT}", PROXIES) == CLIENT


HOP = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["10.0.0.3", "10.200.0.1", "fd00::9", "garbage", "", " ", "1.2.3.4:80"]),
)


@settings(max_examples=300, deadline=None, database=None)
@given(peer=st.ip_addresses().map(str), hops=st.lists(HOP, max_size=8))
def test_the_source_is_the_peer_or_an_untrusted_hop_named_in_the_header(
    peer: str, hops: list[str]
) -> None:
    header = ", ".join(hops)
    result = source_ip(peer, header, PROXIES)
    if result == peer:
        return
    address = ipaddress.ip_address(result)
    assert result in [hop.strip() for hop in hops]
    assert not any(address in net for net in PROXIES)  # never a trusted proxy's own address
    assert any(ipaddress.ip_address(peer) in net for net in PROXIES)  # and only via a proxy
