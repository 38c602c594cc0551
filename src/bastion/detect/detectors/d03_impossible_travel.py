"""D3: impossible travel between successive uses (T1078).

Per principal (the holder of the device key), the country of the last use (``obs.country``, when
the IP database gives one). When the next use comes from another country, the distance between
the two countries over the time between the uses must be travelable: above ``max_speed_kmh``
(1,000 km/h: faster than an airliner) it is a finding. Distances are between built-in country
centroids (no lookups), less each country's radius so that large countries and border regions
never make a short trip look long; under ``min_distance_km`` after that, nothing fires. Uses
without a country (no IP database, or an address it does not know) and countries missing from
the table are ignored, never guessed.

Severity is MEDIUM; HIGH when both uses were made with the same token family (one login cannot
be in two places). A flight (two countries ten hours apart) stays quiet; so does a VPN exit in a
neighbouring country. A VPN that exits on another continent does fire: declare it as a
suppression (``detection.suppressions``), not a rule change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft, Severity
from ..observation import Observation
from ..state import Table

EARTH_RADIUS_KM = 6371.0

# ISO 3166-1 alpha-2 → (latitude, longitude, radius in km): rough centroids and a radius that
# covers most of the country's population, so distances err on the short side.
CENTROIDS: Mapping[str, tuple[float, float, float]] = {
    "AE": (23.4, 53.8, 250), "AR": (-38.4, -63.6, 1200), "AT": (47.5, 14.6, 250),
    "AU": (-25.3, 133.8, 2000), "BD": (23.7, 90.4, 300), "BE": (50.5, 4.5, 150),
    "BG": (42.7, 25.5, 200), "BR": (-14.2, -51.9, 1500), "BY": (53.7, 28.0, 300),
    "CA": (56.1, -106.3, 2000), "CH": (46.8, 8.2, 150), "CL": (-35.7, -71.5, 1200),
    "CN": (35.9, 104.2, 2000), "CO": (4.6, -74.3, 600), "CY": (35.1, 33.4, 100),
    "CZ": (49.8, 15.5, 200), "DE": (51.2, 10.5, 400), "DK": (56.3, 9.5, 200),
    "EE": (58.6, 25.0, 150), "EG": (26.8, 30.8, 600), "ES": (40.5, -3.7, 500),
    "FI": (61.9, 25.7, 500), "FR": (46.2, 2.2, 500), "GB": (54.0, -2.0, 500),
    "GR": (39.1, 21.8, 350), "HK": (22.3, 114.2, 50), "HR": (45.1, 15.2, 250),
    "HU": (47.2, 19.5, 200), "ID": (-0.8, 113.9, 2000), "IE": (53.4, -8.2, 200),
    "IL": (31.0, 34.9, 200), "IN": (20.6, 79.0, 1500), "IR": (32.4, 53.7, 900),
    "IS": (64.9, -19.0, 250), "IT": (41.9, 12.6, 600), "JP": (36.2, 138.3, 900),
    "KE": (0.0, 37.9, 500), "KR": (35.9, 127.8, 300), "KZ": (48.0, 66.9, 1200),
    "LK": (7.9, 80.8, 200), "LT": (55.2, 23.9, 150), "LU": (49.8, 6.1, 50),
    "LV": (56.9, 24.6, 150), "MA": (31.8, -7.1, 500), "MT": (35.9, 14.4, 30),
    "MX": (23.6, -102.6, 1000), "MY": (4.2, 102.0, 800), "NG": (9.1, 8.7, 600),
    "NL": (52.1, 5.3, 150), "NO": (60.5, 8.5, 800), "NZ": (-40.9, 174.9, 700),
    "PE": (-9.2, -75.0, 700), "PH": (12.9, 121.8, 800), "PK": (30.4, 69.3, 700),
    "PL": (51.9, 19.1, 350), "PT": (39.4, -8.2, 300), "QA": (25.4, 51.2, 100),
    "RO": (45.9, 24.9, 300), "RS": (44.0, 21.0, 200), "RU": (61.5, 105.3, 3500),
    "SA": (23.9, 45.1, 900), "SE": (60.1, 18.6, 700), "SG": (1.35, 103.8, 50),
    "SI": (46.15, 14.99, 100), "SK": (48.7, 19.7, 200), "TH": (15.9, 101.0, 600),
    "TR": (39.0, 35.2, 700), "TW": (23.7, 121.0, 200), "UA": (48.4, 31.2, 600),
    "US": (39.8, -98.6, 2000), "VE": (6.4, -66.6, 600), "VN": (14.1, 108.3, 800),
    "ZA": (-30.6, 22.9, 800),
}  # fmt: skip


def distance_km(a: str, b: str) -> float | None:
    """The shortest plausible distance between two countries (centroids less radii), or
    None when either is not in :data:`CENTROIDS`."""
    first, second = CENTROIDS.get(a), CENTROIDS.get(b)
    if first is None or second is None:
        return None
    lat1, lon1, lat2, lon2 = map(math.radians, (first[0], first[1], second[0], second[1]))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    centre = 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
    return max(0.0, centre - first[2] - second[2])


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _is_record(record: Any) -> bool:
    return (
        isinstance(record, list)
        and len(record) == 4
        and isinstance(record[0], int | float)
        and all(isinstance(x, str) for x in record[1:])
    )


class ImpossibleTravel(StatefulDetector):
    id: ClassVar[str] = "D3"
    title: ClassVar[str] = "Impossible travel between successive uses"
    techniques: ClassVar[tuple[str, ...]] = ("T1078",)
    window: ClassVar[float] = 6 * 3600.0

    def __init__(
        self,
        *,
        max_speed_kmh: float = 1000.0,
        min_distance_km: float = 500.0,
        cap_principals: int = 20_000,
    ) -> None:
        self.max_speed_kmh = max_speed_kmh
        self.min_distance_km = min_distance_km
        # principal → [time, country, event id, token family] of the last use with a country
        self.last: Table[list[str | float]] = Table(cap_principals, shape=_is_record)

    def structures(self) -> Mapping[str, Structure]:
        return {"last": self.last}

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        holder = obs.holder
        if not obs.country or not holder or not obs.is_use:
            return []
        country = obs.country.upper()
        previous = self.last.get(holder)
        if previous is None or obs.time >= float(previous[0]):  # a late event keeps the newest
            self.last.put(holder, [obs.time, country, obs.id, obs.family])
        if previous is None or previous[1] == country:
            return []
        then, was, evidence, family = previous
        distance = distance_km(str(was), country)
        if distance is None or distance < self.min_distance_km:
            return []
        elapsed = abs(obs.time - float(then))
        speed = distance / (max(elapsed, 1.0) / 3600.0)
        if speed <= self.max_speed_kmh:
            return []
        same_family = bool(obs.family) and obs.family == family
        via = f" with token family {obs.family}" if same_family else ""
        return [
            Draft(
                detection=self.id,
                severity=Severity.HIGH if same_family else Severity.MEDIUM,
                confidence=0.8 if same_family else 0.6,
                entity_type="principal",
                entity=holder,
                explanation=(
                    f"{holder} used Bastion from {was} then {country}{via} within "
                    f"{_duration(elapsed)}: at least {distance:,.0f} km, "
                    f"{min(speed, 99_999):,.0f} km/h (limit {self.max_speed_kmh:,.0f} km/h)"
                ),
                evidence=(str(evidence), obs.id),
                techniques=self.techniques,
                principal=holder,
                org=obs.org or ctx.org_of(holder),
            )
        ]
