"""The gateway-side detection signals, ready for the hot path: everything loaded beforehand.

:class:`Signals` is what the gateway asks about a request besides the decision: the content
label of its body (D10, :mod:`.content`) and the ASN, country and origin of its source address
(D11, :mod:`.ipintel`). It holds no file handles and does no I/O: :class:`SignalsLoader` builds
it when the config is loaded (at startup and on every config change, off the hot path), reading
the MMDB files into memory and importing the operator's classifier. A database that is missing or
corrupt, or a classifier that cannot be loaded, is a :class:`~bastion.errors.ConfigError` naming
it: at startup Bastion refuses to start; on a config change the last good config stays in force.

The client fingerprint (the caller's ``User-Agent``) is cleaned here too: printable characters
only, at most :data:`MAX_CLIENT` of them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from maxminddb.reader import Reader

from bastion.config.models import BastionConfig

from .content import ContentClassifier, ContentGate, KeywordClassifier, load_classifier
from .ipintel import NO_ORIGIN, IpIntel, Origin, open_database

log = logging.getLogger("bastion.detect")
MAX_CLIENT = 200


def client_fingerprint(value: bytes | str | None) -> str:
    """The caller's user agent as recorded: printable characters only, at most 200."""
    if not value:
        return ""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text[: MAX_CLIENT * 2]
    if not text.isprintable():
        text = "".join(char for char in text if char.isprintable())
    return text.strip()[:MAX_CLIENT]


@dataclass(frozen=True, slots=True)
class Signals:
    """Content labels and source origins, computed in memory."""

    content: ContentGate | None = None
    ip_intel: IpIntel | None = None

    def classify(self, compartment: str, payload: dict[str, Any]) -> tuple[str, float] | None:
        """The content (label, score) of a request to ``compartment``, or None."""
        return self.content.label(compartment, payload) if self.content is not None else None

    def origin(self, address: str) -> Origin:
        """ASN, country and origin of ``address`` (empty without databases)."""
        return self.ip_intel.lookup(address) if self.ip_intel is not None else NO_ORIGIN

    def stats(self) -> dict[str, Any]:
        """Counters: requests classified and labelled, classifier errors and malformed answers,
        time spent; IP lookups that failed on a damaged record."""
        return {
            "content": asdict(self.content.stats) if self.content is not None else None,
            "ip_intel": {"errors": self.ip_intel.errors} if self.ip_intel is not None else None,
        }


NO_SIGNALS = Signals()


class SignalsLoader:
    """Builds :class:`Signals` from a config. Database paths are relative to the config file's
    directory. Databases unchanged on disk (same size and modification time) and a classifier
    named the same are reused rather than read or imported again."""

    def __init__(self, config_file: Path) -> None:
        self._file = config_file
        self._readers: dict[tuple[str, int, int], Reader] = {}
        self._classifiers: dict[str, Any] = {}

    def load(self, config: BastionConfig) -> Signals:
        """Signals for ``config``; raises ConfigError naming a file or entry point that fails."""
        options = config.detection.ip_intel
        intel = None
        if options.asn_db or options.anonymizer_db:
            readers: dict[tuple[str, int, int], Reader] = {}
            intel = IpIntel(
                self._reader(options.asn_db, "detection.ip_intel.asn_db", readers),
                self._reader(options.anonymizer_db, "detection.ip_intel.anonymizer_db", readers),
            )
            self._readers = readers
        return Signals(content=self._content(config), ip_intel=intel)

    def _reader(
        self, value: str | None, key: str, readers: dict[tuple[str, int, int], Reader]
    ) -> Reader | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self._file.parent / path
        try:
            stat = path.stat()
            stamp = (str(path), stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = (str(path), -1, -1)  # open_database says why
        reader = self._readers.get(stamp) or readers.get(stamp)
        if reader is None:
            reader = open_database(path, key, str(self._file))
            log.info("IP intelligence database %s loaded (%s)", path, key)
        readers[stamp] = reader
        return reader

    def _content(self, config: BastionConfig) -> ContentGate | None:
        options = config.detection.content
        compartments = frozenset(
            name
            for name, compartment in config.compartments.items()
            if str(compartment.level) in options.levels or name in options.compartments
        )
        if not options.enabled or not compartments:
            return None
        classifier: ContentClassifier
        if options.classifier is None:
            classifier = KeywordClassifier(max_chars=options.max_chars)
        else:
            classifier = self._classifiers.get(options.classifier) or load_classifier(
                options.classifier, str(self._file), "detection.content.classifier"
            )
            self._classifiers = {options.classifier: classifier}
        return ContentGate(classifier, compartments)
