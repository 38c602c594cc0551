"""D11 IP intelligence: reading MMDB files (built here with mmdb_writer), the record shapes
accepted, failures as config errors, and the inline ``undeclared_origin`` fact and policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import maxminddb
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from bastion.config import parse_config
from bastion.detect.ipintel import (
    NO_ORIGIN,
    IpIntel,
    Origin,
    open_database,
    read_record,
    undeclared,
)
from bastion.detect.signals import Signals, SignalsLoader
from bastion.errors import ConfigError
from bastion.policy.authorize import Caller
from bastion.policy.decide import decide
from bastion.policy.decision import Reason
from bastion.policy.snapshot import Snapshot, build_snapshot

NOW = 1_750_000_000.0
HOSTING_NET = "198.51.100.0/24"
VPN_NET = "203.0.113.0/24"


def mmdb(path: Path, networks: dict[str, dict[str, Any]], ip_version: int = 6) -> Path:
    writer = MMDBWriter(
        ip_version=ip_version, ipv4_compatible=ip_version == 6, database_type="Test-DB"
    )
    for network, record in networks.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


def asn_db(tmp: Path) -> Path:
    return mmdb(
        tmp / "asn.mmdb",
        {
            HOSTING_NET: {"autonomous_system_number": 64500, "country": {"iso_code": "NL"}},
            VPN_NET: {"autonomous_system_number": 64501},
            "2001:db8:1::/48": {"autonomous_system_number": 64502},
        },
    )


def anonymizer_db(tmp: Path) -> Path:
    return mmdb(
        tmp / "anon.mmdb",
        {
            HOSTING_NET: {"is_anonymous": True, "is_hosting_provider": True},
            VPN_NET: {"is_anonymous": True, "is_anonymous_vpn": True},
        },
    )


def intel(tmp: Path) -> IpIntel:
    return IpIntel(
        open_database(asn_db(tmp), "asn_db", "bastion.yaml"),
        open_database(anonymizer_db(tmp), "anonymizer_db", "bastion.yaml"),
    )


# -- record shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "origin"),
    [
        ({"autonomous_system_number": 64500}, Origin(asn=64500)),
        ({"asn": "AS15169", "country": "US"}, Origin(asn=15169, country="US")),  # ipinfo
        ({"asn": 64512, "country_code": "DE"}, Origin(asn=64512, country="DE")),
        ({"country": {"iso_code": "FR"}}, Origin(country="FR")),
        ({"is_hosting_provider": True}, Origin(origin="hosting")),
        ({"is_anonymous": True, "is_hosting_provider": True}, Origin(origin="hosting")),
        ({"is_anonymous": True, "is_public_proxy": True}, Origin(origin="anonymizer")),
        ({"is_tor_exit_node": True, "is_hosting_provider": True}, Origin(origin="anonymizer")),
        ({"is_anonymous": True}, Origin(origin="anonymizer")),
        ({"vpn": True}, Origin(origin="anonymizer")),
        ({"hosting": True}, Origin(origin="hosting")),
        # values of the wrong type or shape say nothing
        ({"is_hosting_provider": "true", "vpn": 1}, NO_ORIGIN),
        ({"autonomous_system_number": -5, "country": "usa"}, NO_ORIGIN),
        ({"autonomous_system_number": True, "asn": "ASN-x"}, NO_ORIGIN),
        ({"autonomous_system_number": 2**40}, NO_ORIGIN),
        ({"country": {"iso_code": "<script>"}}, NO_ORIGIN),
        ("a string record", NO_ORIGIN),
        (None, NO_ORIGIN),
    ],
)
def test_record_shapes(record: object, origin: Origin) -> None:
    assert read_record(record) == origin


# -- lookups --------------------------------------------------------------------------------------


def test_the_asn_and_anonymizer_databases_are_merged(tmp_path: Path) -> None:
    found = intel(tmp_path)
    assert found.lookup("198.51.100.7") == Origin(asn=64500, country="NL", origin="hosting")
    assert found.lookup("203.0.113.9") == Origin(asn=64501, origin="anonymizer")
    assert found.lookup("2001:db8:1::5") == Origin(asn=64502)
    assert found.lookup("192.0.2.1") == NO_ORIGIN
    assert found.lookup("::ffff:198.51.100.7").origin == "hosting"  # dual-stack peer


@pytest.mark.parametrize("address", ["", "testclient", "999.1.1.1", "198.51.100.7/24"])
def test_addresses_that_are_not_addresses_have_no_origin(tmp_path: Path, address: str) -> None:
    assert intel(tmp_path).lookup(address) == NO_ORIGIN


def test_an_ipv4_database_says_nothing_about_ipv6(tmp_path: Path) -> None:
    path = mmdb(tmp_path / "v4.mmdb", {HOSTING_NET: {"is_hosting_provider": True}}, ip_version=4)
    found = IpIntel(anonymizer=open_database(path, "anonymizer_db", "bastion.yaml"))
    assert found.lookup("198.51.100.1").origin == "hosting"
    assert found.lookup("2001:db8::1") == NO_ORIGIN
    assert found.errors == 0


def test_a_damaged_record_is_counted_and_gives_no_origin(tmp_path: Path) -> None:
    path = asn_db(tmp_path)
    data = bytearray(path.read_bytes())
    meta = maxminddb.open_database(str(path), maxminddb.MODE_MEMORY).metadata()
    start = meta.node_count * meta.record_size // 4 + 16  # the data section
    end = data.find(b"\xab\xcd\xefMaxMind.com")
    data[start:end] = b" " * (end - start)
    path.write_bytes(data)
    found = IpIntel(open_database(path, "asn_db", "bastion.yaml"))
    assert found.lookup("198.51.100.7") == NO_ORIGIN
    assert found.errors == 1


def test_lookups_are_memoized(tmp_path: Path) -> None:
    found = intel(tmp_path)
    assert found.lookup("198.51.100.7") is found.lookup("198.51.100.7")


# -- opening databases ----------------------------------------------------------------------------


def corrupt_tree(path: Path) -> None:
    data = path.read_bytes()
    marker = data.find(b"\xab\xcd\xefMaxMind.com")
    path.write_bytes(b"\xff" * marker + data[marker:])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"not an mmdb file at all"), "not a MaxMind DB (MMDB) file"),
        (lambda p: p.mkdir(), "cannot read (Is a directory)"),
        (lambda p: corrupt_tree(asn_db(p.parent).rename(p)), "the database is corrupt"),
    ],
)
def test_an_unusable_database_is_a_config_error_naming_it(
    tmp_path: Path, make: Any, message: str
) -> None:
    path = tmp_path / "GeoLite2-ASN.mmdb"
    make(path)
    with pytest.raises(ConfigError) as raised:
        open_database(path, "detection.ip_intel.asn_db", "/etc/bastion.yaml")
    assert raised.value.message == (
        f"/etc/bastion.yaml: detection.ip_intel.asn_db: {path}: {message}"
    )


def intel_config(asn: str | None = None, anonymizer: str | None = None) -> str:
    lines = [f"    asn_db: {asn}"] if asn else []
    lines += [f"    anonymizer_db: {anonymizer}"] if anonymizer else []
    return CONFIG + "detection:\n  ip_intel:\n" + "\n".join(lines) + "\n"


def test_paths_are_relative_to_the_config_file_and_unchanged_files_are_reused(
    tmp_path: Path,
) -> None:
    (tmp_path / "intel").mkdir()
    asn_db(tmp_path / "intel")
    loader = SignalsLoader(tmp_path / "bastion.yaml")
    config = parse_config(intel_config(asn="intel/asn.mmdb"))
    first = loader.load(config)
    assert first.origin("198.51.100.7").asn == 64500
    again = loader.load(config)
    assert again.ip_intel is not None
    assert first.ip_intel is not None
    assert again.ip_intel._readers == first.ip_intel._readers  # the same reader, not re-read
    mmdb(tmp_path / "intel" / "asn.mmdb", {HOSTING_NET: {"autonomous_system_number": 65001}})
    assert loader.load(config).origin("198.51.100.7").asn == 65001  # replaced on disk: re-read


def test_a_missing_database_stops_loading(tmp_path: Path) -> None:
    config = parse_config(intel_config(anonymizer="missing.mmdb"))
    with pytest.raises(ConfigError) as raised:
        SignalsLoader(tmp_path / "bastion.yaml").load(config)
    assert "detection.ip_intel.anonymizer_db" in raised.value.message
    assert str(tmp_path / "missing.mmdb") in raised.value.message


def test_without_databases_there_is_no_origin(tmp_path: Path) -> None:
    signals = SignalsLoader(tmp_path / "bastion.yaml").load(parse_config(CONFIG))
    assert signals.ip_intel is None
    assert signals.origin("198.51.100.7") == NO_ORIGIN


@pytest.mark.parametrize(
    ("origin", "allowed", "result"),
    [
        ("hosting", (), True),
        ("anonymizer", ("hosting",), True),
        ("hosting", ("hosting",), False),
        ("anonymizer", ("anonymizer", "hosting"), False),
        ("", (), False),
    ],
)
def test_undeclared(origin: str, allowed: tuple[str, ...], result: bool) -> None:
    assert undeclared(origin, allowed) is result


# -- the inline fact and policy -------------------------------------------------------------------

CONFIG = """\
version: 1
upstreams:
  up: {base_url: "http://upstream.test/v1", api: openai}
models:
  - {name: chat, upstream: up, compartment: general}
  - {name: secret-chat, upstream: up, compartment: secret}
compartments:
  general: {level: internal, grants: {orgs: [lab, acme, cloudco]}}
  secret: {level: restricted, grants: {orgs: [lab, acme, cloudco]}}
orgs:
  lab: {kind: internal}
  acme:
    kind: vendor
    sponsor: bob
    contract: {start: "2020-01-01T00:00:00Z", end: "2099-01-01T00:00:00Z"}
  cloudco:
    kind: vendor
    sponsor: bob
    contract: {start: "2020-01-01T00:00:00Z", end: "2099-01-01T00:00:00Z"}
    allowed_origins: [hosting]
principals:
  bob: {kind: user, org: lab}
  v1: {kind: user, org: acme}
  c1: {kind: user, org: cloudco}
"""


def snapshot(tmp: Path) -> Snapshot:
    return build_snapshot(
        epoch=1,
        config=parse_config(CONFIG),
        principals=(),
        device_keys=(),
        locks=(),
        env={},
        signals=Signals(ip_intel=intel(tmp)),
    )


def call(snap: Snapshot, principal: str, org: str, model: str, source: str) -> list[str]:
    caller = Caller(principal=principal, org=org, jkt="j" * 43, family="fam_1")
    compartment = snap.models[model].compartment
    decision = decide(snap, caller, model, compartment, source, "openai", NOW)
    return [] if decision.allowed else list(decision.reasons)


MATRIX = [
    # principal, org, model, source, reasons
    ("v1", "acme", "secret-chat", "198.51.100.7", ["undeclared_origin"]),  # hosting
    ("v1", "acme", "secret-chat", "203.0.113.9", ["undeclared_origin"]),  # anonymizer
    ("v1", "acme", "chat", "198.51.100.7", []),  # internal compartments stay reachable
    ("v1", "acme", "secret-chat", "192.0.2.1", []),  # no origin known
    ("c1", "cloudco", "secret-chat", "198.51.100.7", []),  # declared hosting
    ("c1", "cloudco", "secret-chat", "203.0.113.9", ["undeclared_origin"]),  # but not a VPN
    ("bob", "lab", "secret-chat", "203.0.113.9", ["undeclared_origin"]),  # internal orgs too
]


def test_undeclared_origins_are_forbidden_for_restricted_compartments(tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    results = [(p, o, m, s, call(snap, p, o, m, s)) for p, o, m, s, _ in MATRIX]
    assert results == MATRIX
    assert Reason.UNDECLARED_ORIGIN in Reason
    assert snap.origin("198.51.100.7").asn == 64500


def test_allowed_origins_are_validated() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(CONFIG.replace("allowed_origins: [hosting]", "allowed_origins: [cloud]"))
    assert "orgs.cloudco.allowed_origins[0]" in raised.value.message
