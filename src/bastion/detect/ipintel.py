"""D11 IP intelligence: the network, country and kind of origin of a source address.

When ``detection.ip_intel`` names MaxMind-format (MMDB) databases, every source address is
looked up — in memory, no I/O on the hot path — and the ``request.decided`` event records its
ASN, country and origin category; the Cedar context gets ``undeclared_origin``, true when the
origin is an anonymizer or a hosting provider that the caller's org has not declared in its
``allowed_origins``. The default policy forbids that for restricted and critical compartments.

Record shapes read (any database may hold any of them; the ASN database is read first for the
network and country, the anonymizer database first for the origin):

- ASN: ``autonomous_system_number`` (int, GeoLite2-ASN / GeoIP2-ISP) or ``asn`` (``"AS64500"``
  or an int, ipinfo).
- Country: ``country.iso_code`` (GeoLite2-Country / City) or ``country`` / ``country_code``
  (a two-letter string, ipinfo).
- Origin ``anonymizer``: any of ``is_anonymous_vpn``, ``is_public_proxy``, ``is_tor_exit_node``,
  ``is_residential_proxy``, ``vpn``, ``proxy``, ``tor``, ``relay`` true (GeoIP2-Anonymous-IP,
  ipinfo privacy); origin ``hosting``: ``is_hosting_provider`` or ``hosting`` true (and none of
  the former); ``is_anonymous`` alone counts as ``anonymizer``.

Databases are read whole into memory (``MODE_MEMORY``) when the config is loaded, so replacing a
file on disk can never corrupt a lookup in flight; a missing, unreadable or corrupt file is a
config error naming it. A lookup that still fails (a damaged record) counts in ``errors`` and
gives no origin; it never fails the request.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb
from maxminddb.reader import Reader

from bastion.errors import ConfigError

ANONYMIZER = "anonymizer"
HOSTING = "hosting"
ORIGINS = (ANONYMIZER, HOSTING)
ANONYMIZER_KEYS = (
    "is_anonymous_vpn",
    "is_public_proxy",
    "is_tor_exit_node",
    "is_residential_proxy",
    "vpn",
    "proxy",
    "tor",
    "relay",
)
HOSTING_KEYS = ("is_hosting_provider", "hosting")
CACHE_SIZE = 65536
_COUNTRY = re.compile(r"[A-Z]{2}")
_ASN = re.compile(r"(?:AS)?([0-9]{1,10})")
_PROBES = ("192.0.2.1", "2001:db8::1")  # a lookup at open time catches a damaged search tree


@dataclass(frozen=True, slots=True)
class Origin:
    """What the databases say about one address (empty when they say nothing)."""

    asn: int = 0
    country: str = ""
    origin: str = ""  # "anonymizer" | "hosting" | ""


NO_ORIGIN = Origin()


def _asn(record: Mapping[str, Any]) -> int:
    value = record.get("autonomous_system_number", record.get("asn"))
    if isinstance(value, str) and (match := _ASN.fullmatch(value.strip().upper())):
        value = int(match.group(1))
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**32:
        return value
    return 0


def _country(record: Mapping[str, Any]) -> str:
    value = record.get("country")
    if isinstance(value, Mapping):
        value = value.get("iso_code")
    if not isinstance(value, str):
        value = record.get("country_code")
    return value if isinstance(value, str) and _COUNTRY.fullmatch(value) else ""


def _category(record: Mapping[str, Any]) -> str:
    if any(record.get(key) is True for key in ANONYMIZER_KEYS):
        return ANONYMIZER
    if any(record.get(key) is True for key in HOSTING_KEYS):
        return HOSTING
    return ANONYMIZER if record.get("is_anonymous") is True else ""


def read_record(record: object) -> Origin:
    """The origin a database record describes; a record of another shape says nothing."""
    if not isinstance(record, Mapping):
        return NO_ORIGIN
    return Origin(asn=_asn(record), country=_country(record), origin=_category(record))


def open_database(path: Path, key: str, file: str) -> Reader:
    """Read an MMDB file into memory; any problem is a :class:`ConfigError` naming ``key`` in
    ``file`` and the database's path."""
    try:
        reader = maxminddb.open_database(str(path), maxminddb.MODE_MEMORY)
    except FileNotFoundError:
        raise ConfigError(file, [f"{key}: {path}: no such file"]) from None
    except OSError as exc:
        raise ConfigError(file, [f"{key}: {path}: cannot read ({exc.strerror})"]) from None
    except Exception:  # a file that is not an MMDB database
        raise ConfigError(file, [f"{key}: {path}: not a MaxMind DB (MMDB) file"]) from None
    assert isinstance(reader, Reader)
    try:
        for probe in _PROBES[: 1 if reader.metadata().ip_version == 4 else 2]:
            reader.get(probe)
    except Exception:
        raise ConfigError(file, [f"{key}: {path}: the database is corrupt"]) from None
    return reader


class IpIntel:
    """Lookups over the open databases, memoized per address (bounded)."""

    def __init__(self, asn: Reader | None = None, anonymizer: Reader | None = None) -> None:
        # (reader, whether it holds IPv6), the ASN database first
        self._readers = tuple(
            (reader, reader.metadata().ip_version == 6)
            for reader in (asn, anonymizer)
            if reader is not None
        )
        self._cache: dict[str, Origin] = {}
        self.errors = 0  # lookups that failed on a damaged record (counted, never raised)

    def lookup(self, address: str) -> Origin:
        """ASN, country and origin of ``address`` (empty fields when unknown)."""
        found = self._cache.get(address)
        if found is None:
            found = self._lookup(address)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[address] = found
        return found

    def _lookup(self, address: str) -> Origin:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return NO_ORIGIN
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        origins = []
        for reader, v6 in self._readers:
            if ip.version == 6 and not v6:
                continue
            try:
                origins.append(read_record(reader.get(ip)))
            except Exception:
                self.errors += 1
        return _merge(origins)


def _merge(origins: list[Origin]) -> Origin:
    """Network and country from the first database that has them (the ASN one); the origin
    from the last one that has it (the anonymizer one)."""
    if len(origins) <= 1:
        return origins[0] if origins else NO_ORIGIN
    return Origin(
        asn=next((o.asn for o in origins if o.asn), 0),
        country=next((o.country for o in origins if o.country), ""),
        origin=next((o.origin for o in reversed(origins) if o.origin), ""),
    )


def undeclared(origin: str, allowed: Collection[str]) -> bool:
    """Whether ``origin`` is an anonymizer or hosting origin the org has not declared."""
    return origin in ORIGINS and origin not in allowed
