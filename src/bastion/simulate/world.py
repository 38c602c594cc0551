"""The simulated world: networks, orgs, people and models, built from a seed.

Networks are /24s of 198.18.0.0/15 (set aside for benchmarking, RFC 2544), each with an ASN from
the private-use range (RFC 6996), a country and, for some, a kind (``hosting``, ``anonymizer``)
— written into a small MMDB for the gateway's IP intelligence (``files.py``). The lab is one
internal org; three vendor orgs (a US data-labelling shop with declared working hours, a Polish
security-evaluation firm with restricted access, an Indian evaluation contractor confined to its
office network whose contract ends during the run) each have a sponsor and about five people.
Behaviour (who calls what, when, from where) is in ``population.py``; attacks in
``scenarios.py``.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field, replace

SUBNETS = ipaddress.ip_network("198.18.0.0/15")
LAB, ACME, GLOBEX, INITECH = "lab", "acme", "globex", "initech"
VENDORS = (ACME, GLOBEX, INITECH)
ADMIN = "ops-admin"
BATCH = "svc-batch"
HONEYTOKEN = "svc-legacy-backup"

OPENAI_AGENTS = ("OpenAI/Python 1.54.3", "OpenAI/Python 1.51.0", "AsyncOpenAI/Python 1.54.3")
ANTHROPIC_AGENTS = ("Anthropic/Python 0.39.0", "AsyncAnthropic/Python 0.39.0")
UPGRADES = {"OpenAI/Python 1.51.0": "OpenAI/Python 1.55.0"}


@dataclass(frozen=True, slots=True)
class Net:
    """One /24 with what an IP intelligence database says about it."""

    name: str
    cidr: str
    asn: int
    owner: str  # the AS organisation
    country: str  # ISO 3166-1 alpha-2
    kind: str = ""  # "" | "hosting" | "anonymizer"

    def host(self, number: int) -> str:
        network = ipaddress.ip_network(self.cidr)
        return str(network.network_address + 1 + number % 250)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    compartment: str
    api: str  # openai | anthropic


MODELS = (
    ModelSpec("mini-chat", "sandbox", "openai"),
    ModelSpec("assist-chat", "general", "openai"),
    ModelSpec("assist-claude", "general", "anthropic"),
    ModelSpec("bulk-chat", "pipeline", "openai"),
    ModelSpec("research-chat", "research", "openai"),
    ModelSpec("research-claude", "research", "anthropic"),
    ModelSpec("cyber-frontier", "frontier", "openai"),
)
API_OF = {model.name: model.api for model in MODELS}


@dataclass(frozen=True, slots=True)
class Person:
    """A principal of the population and its habits. Hours are local to ``zone``."""

    name: str
    org: str
    role: str  # general | research | security | vendor | batch
    zone: str
    start_hour: float  # when the working day starts, local time
    hours: float  # how long it lasts
    office: str = ""  # office egress address ("" = never in an office)
    remote: tuple[str, ...] = ()  # addresses when not in the office (VPN egresses or home)
    agent: str = OPENAI_AGENTS[0]
    models: tuple[str, ...] = ("assist-chat",)
    requests: float = 12.0  # mean requests on a working day
    tokens: int = 400  # median output tokens per request
    kind: str = "user"
    joins: int = 0  # the day a new hire appears (0: there from the start)
    declared: bool = True  # in bastion.yaml (False: added through the admin service)


@dataclass(frozen=True, slots=True)
class OrgSpec:
    name: str
    kind: str  # internal | vendor
    zone: str
    sponsor: str = ""
    networks: tuple[str, ...] = ()  # allowed networks (CIDRs); empty = anywhere
    ceiling: str = "critical"
    working_hours: tuple[str, str] | None = None  # ("07:00", "20:00") Mon-Fri in ``zone``
    allowed_origins: tuple[str, ...] = ()


@dataclass
class World:
    nets: dict[str, Net] = field(default_factory=dict)
    orgs: dict[str, OrgSpec] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    special: dict[str, str] = field(default_factory=dict)  # role in the story -> principal

    def net(self, name: str) -> Net:
        return self.nets[name]

    def members(self, org: str, *, joined_by: int = 0) -> list[Person]:
        return [p for p in self.people.values() if p.org == org and p.joins <= joined_by]

    def grants(self, compartment: str) -> list[str]:
        """The principals (beyond whole orgs) given ``compartment``."""
        return sorted(p.name for p in self.people.values() if _uses(p, compartment))


def _uses(person: Person, compartment: str) -> bool:
    by_model = {model.name: model.compartment for model in MODELS}
    return person.org != LAB and any(by_model[m] == compartment for m in person.models)


# -- networks ------------------------------------------------------------------------------------

# name, count of /24s, ASN, AS organisation, country, kind
NETWORKS = (
    ("lab-office-us", 1, 64600, "Lab Corp", "US", ""),
    ("lab-office-uk", 1, 64600, "Lab Corp", "GB", ""),
    ("lab-vpn-us", 2, 64601, "Lab Corp VPN", "US", ""),
    ("lab-vpn-uk", 2, 64601, "Lab Corp VPN", "GB", ""),
    ("lab-cloud", 1, 64602, "Cumulus Compute", "US", "hosting"),
    ("isp-us", 6, 64700, "Coastline Cable", "US", ""),
    ("isp-us2", 4, 64705, "Prairie Fiber", "US", ""),
    ("isp-gb", 4, 64701, "Albion Broadband", "GB", ""),
    ("isp-de", 2, 64702, "Rheinnetz", "DE", ""),
    ("isp-pl", 4, 64703, "Wisla Telekom", "PL", ""),
    ("isp-in", 2, 64704, "Deccan Net", "IN", ""),
    ("initech-office", 1, 64712, "Initech Services", "IN", ""),
    ("hotel-us", 1, 64720, "Harbor Hotels WiFi", "US", ""),
    ("pl-business", 1, 64721, "Baltic Business Fiber", "PL", ""),
    ("bulletproof", 1, 64800, "Lowland Bulletproof Hosting", "NL", "hosting"),
    ("vps-ro", 1, 64801, "Carpathia VPS", "RO", "hosting"),
    ("tor-exit", 1, 64802, "Tor exit relays", "DE", "anonymizer"),
    ("vpn-service", 1, 64803, "Nordic Privacy VPN", "SE", "anonymizer"),
    ("isp-br", 1, 64804, "Serra Telecom", "BR", ""),
    ("isp-vn", 1, 64805, "Mekong Mobile", "VN", ""),
)


def _networks() -> dict[str, Net]:
    nets: dict[str, Net] = {}
    subnets = SUBNETS.subnets(new_prefix=24)
    for name, count, asn, owner, country, kind in NETWORKS:
        for index in range(count):
            key = name if count == 1 else f"{name}-{index}"
            nets[key] = Net(key, str(next(subnets)), asn, owner, country, kind)
    return nets


def _pool(nets: dict[str, Net], prefix: str) -> list[Net]:
    return [net for name, net in nets.items() if name == prefix or name.startswith(prefix + "-")]


# -- people --------------------------------------------------------------------------------------

FIRST = (
    "ada",
    "amara",
    "ben",
    "carla",
    "dev",
    "elif",
    "femi",
    "gus",
    "hana",
    "ivan",
    "jun",
    "kira",
    "leo",
    "maya",
    "noor",
    "omar",
    "pia",
    "quinn",
    "ravi",
    "sara",
    "tom",
    "uma",
    "vik",
    "wen",
    "xia",
    "yara",
    "zeb",
    "alba",
    "bo",
    "cruz",
    "dana",
    "eli",
    "faye",
    "gio",
    "hugo",
    "ines",
    "jade",
    "kai",
    "lena",
    "milo",
    "nia",
    "otto",
    "priya",
    "rosa",
    "sven",
    "tara",
    "ugo",
    "vera",
    "will",
    "yuki",
    "zara",
    "anil",
    "bruno",
    "chen",
    "dora",
)
LAST = (
    "okafor",
    "silva",
    "novak",
    "tanaka",
    "kowal",
    "singh",
    "moreau",
    "brandt",
    "costa",
    "haddad",
    "ito",
    "larsen",
    "mendes",
    "nagy",
    "olsen",
    "patel",
    "quist",
    "rossi",
    "sato",
    "ueda",
    "varga",
    "weber",
    "young",
    "zhou",
    "abbas",
    "becker",
    "duarte",
    "engel",
    "fischer",
    "garcia",
    "horvat",
    "iqbal",
    "jensen",
    "kaur",
    "lopez",
    "meyer",
    "nilsen",
    "ortiz",
    "park",
    "reyes",
    "schmidt",
)

LAB_ZONES = (
    ("America/New_York", "lab-office-us", "lab-vpn-us", 12),
    ("America/Los_Angeles", "", "lab-vpn-us", 6),
    ("Europe/London", "lab-office-uk", "lab-vpn-uk", 10),
    ("Europe/Berlin", "", "isp-de", 2),
)
LAB_ROLES = ("security",) * 4 + ("research",) * 10 + ("general",) * 16
ROLE_MODELS = {
    "general": ("assist-chat", "assist-claude", "mini-chat"),
    "research": ("research-chat", "research-claude", "assist-chat"),
    "security": ("cyber-frontier", "research-chat", "assist-chat"),
}


class Names:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[str] = set()

    def __call__(self) -> str:
        while True:
            name = f"{self._rng.choice(FIRST)}.{self._rng.choice(LAST)}"
            if name not in self._used:
                self._used.add(name)
                return name


def _agent(rng: random.Random, models: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """A user agent and the models of its API (people use one SDK)."""
    if API_OF[models[0]] == "anthropic" or (rng.random() < 0.3 and "assist-claude" in models):
        picked = tuple(m for m in models if API_OF[m] == "anthropic") or ("assist-claude",)
        return rng.choice(ANTHROPIC_AGENTS), picked
    return rng.choice(OPENAI_AGENTS), tuple(m for m in models if API_OF[m] == "openai")


def _lab(rng: random.Random, nets: dict[str, Net], names: Names) -> list[Person]:
    people: list[Person] = []
    roles = list(LAB_ROLES)
    rng.shuffle(roles)
    for zone, office, remote, count in LAB_ZONES:
        for _ in range(count):
            role = roles.pop()
            agent, models = _agent(rng, ROLE_MODELS[role])
            if remote.startswith("isp"):
                remote_addresses: tuple[str, ...] = (
                    rng.choice(_pool(nets, remote)).host(rng.randrange(250)),
                )
            else:
                host = rng.randrange(250)
                remote_addresses = tuple(net.host(host) for net in _pool(nets, remote))
            people.append(
                Person(
                    name=names(),
                    org=LAB,
                    role=role,
                    zone=zone,
                    start_hour=rng.uniform(8.0, 10.0),
                    hours=rng.uniform(7.5, 9.0),
                    office=nets[office].host(rng.randrange(250)) if office else "",
                    remote=remote_addresses,
                    agent=agent,
                    models=models,
                    requests=rng.uniform(6.0, 24.0),
                    tokens=int(rng.uniform(250, 900)),
                    declared=bool(people),  # the first one was added by the admin, not the file
                )
            )
    return people


VENDOR_PLANS = (
    # org, zone, home ISP pool or office net, role models, working hours
    (ACME, "America/Chicago", "isp-us2", ("assist-chat", "mini-chat")),
    (GLOBEX, "Europe/Warsaw", "isp-pl", ("research-chat", "research-claude", "assist-chat")),
    (INITECH, "Asia/Kolkata", "initech-office", ("assist-chat", "assist-claude")),
)


def _vendor(
    rng: random.Random, nets: dict[str, Net], names: Names, org: str, joins: int = 0
) -> list[Person]:
    plan = next(p for p in VENDOR_PLANS if p[0] == org)
    _, zone, where, models_of_org = plan
    people = []
    for _ in range(5 if joins == 0 else 1):
        agent, models = _agent(rng, models_of_org)
        office = nets[where].host(rng.randrange(250)) if where.endswith("office") else ""
        home = "" if office else rng.choice(_pool(nets, where)).host(rng.randrange(250))
        people.append(
            Person(
                name=names(),
                org=org,
                role="vendor",
                zone=zone,
                start_hour=rng.uniform(9.0, 10.5),
                hours=rng.uniform(7.0, 8.0),
                office=office,
                remote=(home,) if home else (),
                agent=agent,
                models=models,
                requests=rng.uniform(8.0, 20.0),
                tokens=int(rng.uniform(300, 800)),
                joins=joins,
                declared=joins == 0,
            )
        )
    return people


def build_world(rng: random.Random, days: int) -> World:
    """The orgs, networks and people for a run of ``days`` days (new hires join mid-run)."""
    nets = _networks()
    names = Names(rng)
    lab = _lab(rng, nets, names)
    vendors = [person for org in VENDORS for person in _vendor(rng, nets, names, org)]
    hires = []
    if days >= 3:
        hires += [
            replace(lab[rng.randrange(1, 12)], name=names(), joins=2, declared=False),
            *_vendor(rng, nets, names, ACME, joins=min(3, days - 1)),
        ]
    world = World(nets=nets, orgs=_orgs(nets, lab))
    for person in [*lab, *vendors, *hires, _batch(nets)]:
        world.people[person.name] = person
    world.special = {
        "traveller": next(p.name for p in lab if p.zone == "Europe/London"),
        "oncall": next(p.name for p in lab if p.zone == "America/New_York" and p.declared),
        "typo": _declared(lab, "general")[-1],
        "beyond": next(p.name for p in vendors if p.org == ACME),
        "laptop": _declared(lab, "research")[-1],
    }
    return world


def _declared(lab: list[Person], role: str) -> list[str]:
    return [p.name for p in lab if p.declared and p.role == role]


def _batch(nets: dict[str, Net]) -> Person:
    return Person(
        name=BATCH,
        org=LAB,
        role="batch",
        zone="UTC",
        start_hour=0.0,
        hours=24.0,
        remote=(nets["lab-cloud"].host(10),),
        agent="OpenAI/Python 1.40.6",
        models=("bulk-chat",),
        tokens=1200,
        kind="service",
    )


def _orgs(nets: dict[str, Net], lab: list[Person]) -> dict[str, OrgSpec]:
    """The lab and its vendors; sponsors are lab people declared in bastion.yaml."""
    return {
        LAB: OrgSpec(LAB, "internal", "UTC", allowed_origins=("hosting",)),
        ACME: OrgSpec(
            ACME,
            "vendor",
            "America/Chicago",
            _declared(lab, "general")[0],
            ceiling="internal",
            working_hours=("07:00", "20:00"),
        ),
        GLOBEX: OrgSpec(
            GLOBEX, "vendor", "Europe/Warsaw", _declared(lab, "security")[0], ceiling="restricted"
        ),
        INITECH: OrgSpec(
            INITECH,
            "vendor",
            "Asia/Kolkata",
            _declared(lab, "research")[0],
            ceiling="internal",
            networks=(nets["initech-office"].cidr,),
        ),
    }
