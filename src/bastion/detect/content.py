"""D10 content signals: a label and a score for what a request asks, computed at the gateway.

Prompts are never stored. For compartments that ask for it (by default the restricted and
critical ones), the gateway hands the parsed request body to a :class:`ContentClassifier`, and
only its answer — a short label such as ``malware`` and a score in 0..1 — enters the
``request.decided`` event. The text scanned is bounded: the newest user messages (or the
``prompt`` / ``input`` of the other APIs), at most ``max_bytes`` characters in all.

Bastion ships :class:`KeywordClassifier`, precompiled pattern sets for offensive-cyber topics
(exploit development, malware, credential theft, command and control, evasion of defenses,
privilege escalation, lateral movement) and jailbreak phrasing. One pass of one regex finds the
topic terms; only a category with a hit is checked again for operational phrasing ("write a
keylogger that ..."), which weighs more than a mention. An operator can plug in a model-based
classifier instead: any object with ``classify(payload) -> (label, score) | None``, named in
``detection.content.classifier`` as ``"module:attr"``. :class:`ContentGate` runs it: it checks
every answer (a label must be a short lowercase name, the score a number in 0..1, so nothing
else can leak into the audit log), and catches and counts errors instead of failing a request.
"""

from __future__ import annotations

import importlib
import logging
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from bastion.errors import ConfigError

log = logging.getLogger("bastion.detect")

MAX_MESSAGES = 32  # messages (or list items) looked at, newest first
_LABEL = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")
_ENTRY_POINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")

TERM_WEIGHT = 0.35  # a topic term mentioned
PHRASE_WEIGHT = 0.7  # operational phrasing ("write ransomware", "ignore previous instructions")


@runtime_checkable
class ContentClassifier(Protocol):
    """What a content classifier does: label a request body (the parsed JSON object the caller
    sent), or say nothing. The label must match ``[a-z0-9][a-z0-9_.:-]{0,63}`` and the score be
    in 0..1; anything else is counted as an error and recorded as no label."""

    def classify(self, payload: dict[str, Any]) -> tuple[str, float] | None: ...


# -- the text a classifier looks at ----------------------------------------------------------------


def _parts(content: object) -> Iterator[str]:
    """The text of one message's content: a string, or text blocks (OpenAI and Anthropic)."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for block in content[:MAX_MESSAGES]:
            if isinstance(block, str):
                yield block
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                yield block["text"]


def _newest_user_texts(payload: Mapping[str, Any]) -> Iterator[str]:
    messages = payload.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages[-MAX_MESSAGES:]):
            if isinstance(message, dict) and message.get("role") == "user":
                yield from _parts(message.get("content"))
    for key in ("prompt", "input"):  # completions, embeddings
        value = payload.get(key)
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from (item for item in value[:MAX_MESSAGES] if isinstance(item, str))


def request_text(payload: Mapping[str, Any], limit: int) -> str:
    """The newest user text of a request body, at most ``limit`` characters, newest first."""
    pieces: list[str] = []
    left = limit
    for text in _newest_user_texts(payload):
        if left <= 0:
            break
        piece = text[:left]
        pieces.append(piece)
        left -= len(piece) + 1
    return "\n".join(pieces)


# -- the shipped keyword classifier ----------------------------------------------------------------

# Every ASCII character but letters and digits becomes a space: "zero-day," -> "zero day".
_SPACES = str.maketrans({chr(c): " " for c in range(128) if not chr(c).isalnum()})


@dataclass(frozen=True, slots=True)
class Category:
    """One topic. ``terms`` are word sequences whose mention counts (``"rop chain"``);
    ``phrases`` are ``(anchor words, regex)`` pairs of operational phrasing, searched only when
    one of the anchor words (``"a|b"``) is in the text (the regex runs over the text reduced to
    lowercase words separated by single spaces); ``objects`` are words that turn operational
    when one of the verbs ("write", "build", "deploy", "how do i", ...) comes shortly before
    them."""

    label: str
    terms: tuple[str, ...]
    phrases: tuple[tuple[str, str], ...] = ()
    objects: tuple[str, ...] = ()


def _words(listing: str) -> tuple[str, ...]:
    return tuple(listing.split("|"))


VERBS = frozenset(
    _words(
        "write|writing|build|building|create|creating|develop|developing|generate|generating|"
        "code|coding|make|craft|deploy|deploying|design|implement|weaponize|weaponise|"
        "obfuscate|hide|undetectable"
    )
)
VERB_PHRASES = ("give me ", "show me how", "how do i ", "how can i ", "how would i ", "help me ")
VERB_REACH = 80  # characters before an object word in which a verb makes it operational

_EVADE = "evade|evading|bypass|bypassing|disable|disabling|avoid|avoiding|kill|blind|defeat"
_DEFENSES = "edr|antivirus|av|defender|amsi|etw|sandbox|sandboxes|detection"
_TAKE = "dump|dumps|dumping|steal|steals|stealing|harvest|harvesting|extract|exfiltrate"

CATEGORIES: tuple[Category, ...] = (
    Category(
        "exploit_development",
        terms=_words(
            "zero day|zero days|0day|0 day|shellcode|rop chain|rop chains|rop gadget|"
            "rop gadgets|heap spray|heap spraying|use after free|buffer overflow|"
            "buffer overflows|remote code execution|msfvenom|metasploit|cve"
        ),
        phrases=(
            ("exploit|exploits", r" (?:working|weaponi[sz]ed|reliable|functional) exploits? "),
            ("exploit|exploits", r" exploits? (?:for|against|targeting) (?:cve|the|this|a) "),
            ("aslr|dep|nx|smep|cfg", r" bypass(?:ing)? (?:aslr|dep|nx|cfg|smep) "),
        ),
        objects=_words("exploit|exploits|shellcode|payload|payloads|0day"),
    ),
    Category(
        "malware",
        terms=_words(
            "ransomware|keylogger|keyloggers|rootkit|rootkits|trojan|trojans|botnet|"
            "botnets|infostealer|infostealers|malware|computer worm|polymorphic malware|"
            "polymorphic engine|ransom note|wiper malware"
        ),
        phrases=(
            (
                "encrypt|encrypts|encrypting",
                r" encrypt(?:s|ing)? (?:all )?(?:of )?(?:the )?(?:victim s |victims |user s )?"
                r"(?:files|disk|disks|drives?) (?:and|then) (?:demand|ask|leave)",
            ),
            ("self", r" self propagat(?:e|es|ing|ion) "),
        ),
        objects=_words(
            "ransomware|keylogger|rootkit|trojan|botnet|infostealer|malware|worm|dropper|"
            "wiper|virus"
        ),
    ),
    Category(
        "credential_theft",
        terms=_words(
            "mimikatz|lsass|ntds|kerberoast|kerberoasting|pass the hash|"
            "credential harvesting|credential harvester|credential dumping|"
            "credential stuffing|phishing kit|phishing page|hashcat|password hashes"
        ),
        phrases=(
            (
                _TAKE,
                rf" (?:{_TAKE}) (?:the |all )?(?:user s |users |their )?(?:saved )?"
                r"(?:credentials|passwords|password hashes|cookies|session tokens|lsass) ",
            ),
            ("crack|cracking", r" crack(?:ing)? (?:the |these )?(?:password )?hashes "),
        ),
        objects=_words("phishing|stealer"),
    ),
    Category(
        "command_and_control",
        terms=_words(
            "command and control|c2 server|c2 servers|c2 channel|c2 framework|"
            "c2 infrastructure|c2 beacon|cobalt strike|reverse shell|reverse shells|"
            "bind shell|implant|implants|dns tunneling|dns tunnelling"
        ),
        phrases=(
            ("exfiltrate", r" exfiltrate (?:the )?(?:data|files|documents|database|secrets) "),
            ("beacon|beacons|beaconing", r" beacon(?:s|ing)? (?:back|home) "),
        ),
        objects=_words("implant|backdoor|c2|beacon"),
    ),
    Category(
        "defense_evasion",
        terms=_words(
            "edr|amsi|etw|crypter|crypters|process hollowing|process injection|"
            "dll injection|dll sideloading|dll hijacking|timestomp|timestomping|unhooking"
        ),
        phrases=(
            (_DEFENSES, rf" (?:{_EVADE}) (?:the |windows )?(?:{_DEFENSES}) "),
            ("fud", r" fud (?:crypter|payload|malware|loader) "),
            ("logs", r" clear(?:ing)? (?:the )?(?:windows )?(?:event|security|audit) logs "),
        ),
        objects=_words("crypter|loader"),
    ),
    Category(
        "privilege_escalation",
        terms=_words(
            "privilege escalation|privesc|uac bypass|kernel exploit|kernel exploits|"
            "suid binary|suid binaries|juicy potato|rotten potato"
        ),
        phrases=(
            ("escalate|escalating", r" escalat(?:e|ing) (?:my |our )?privileges? "),
            ("uac", r" bypass(?:ing)? uac "),
            (
                "root|admin",
                r" (?:get|gain|obtain)(?:ing)? (?:root|domain admin|admin) "
                r"(?:access|privileges|rights|shell|on) ",
            ),
        ),
    ),
    Category(
        "lateral_movement",
        terms=_words(
            "lateral movement|psexec|wmiexec|smbexec|pass the ticket|golden ticket|"
            "silver ticket|bloodhound|rdp hijacking"
        ),
        phrases=(
            ("laterally", r" move laterally "),
            ("pivot|pivoting", r" pivot(?:ing)? (?:to|into|through) (?:other|the internal) "),
            ("spread", r" spread (?:to|across) (?:other )?(?:hosts|machines|the network) "),
        ),
    ),
    Category(
        "jailbreak",
        terms=_words("jailbreak|jailbreaking|dan mode|do anything now|developer mode"),
        phrases=(
            (
                "ignore",
                r" ignore (?:all )?(?:of )?(?:the |your |any )?(?:previous|prior|above|earlier"
                r"|preceding) (?:instructions|prompts|rules|directions) ",
            ),
            (
                "disregard",
                r" disregard (?:all )?(?:of )?(?:the |your |any )?(?:previous|prior|above"
                r"|safety) (?:instructions|guidelines|rules|policies) ",
            ),
            ("bound", r" no longer bound by "),
            ("restrictions", r" (?:without|with no) (?:any )?(?:ethical |safety )?restrictions "),
            ("filters", r" (?:without|with no) (?:any )?(?:safety |content )?filters "),
            ("prompt", r" (?:reveal|print|repeat|show) (?:me )?your (?:system|hidden) prompt "),
            ("bypass", r" bypass (?:your )?(?:safety|content) (?:filters|guidelines|policy) "),
        ),
    ),
)
LABELS = tuple(category.label for category in CATEGORIES)


def words_of(text: str) -> str:
    """Lowercase words of ``text`` separated by single spaces, with a space at both ends."""
    return " " + " ".join(text.lower().translate(_SPACES).split()) + " "


class KeywordClassifier:
    """The shipped classifier: offensive-cyber and jailbreak word lists and phrasings. Benign
    text costs one normalisation and one set intersection; only a category with a hit is looked
    at further. A category's score is ``1 - Π(1 - w)`` over its distinct hits (a term weighs
    0.35, operational phrasing 0.7): one mention 0.35, two 0.58, "write ransomware ..." 0.8."""

    def __init__(
        self, categories: Iterable[Category] = CATEGORIES, max_chars: int = 16 * 1024
    ) -> None:
        self.categories = tuple(categories)
        self.max_chars = max_chars
        self._terms: dict[str, list[tuple[int, str]]] = {}  # first word -> (category, term)
        self._phrases: dict[str, list[tuple[int, re.Pattern[str]]]] = {}
        self._objects: dict[str, list[int]] = {}
        for index, category in enumerate(self.categories):
            for term in category.terms:
                self._terms.setdefault(term.split()[0], []).append((index, f" {term} "))
            for anchors, pattern in category.phrases:
                compiled = re.compile(pattern)
                for anchor in anchors.split("|"):
                    self._phrases.setdefault(anchor, []).append((index, compiled))
            for word in category.objects:
                self._objects.setdefault(word, []).append(index)
        self._anchors = frozenset(self._terms) | frozenset(self._phrases)

    def classify(self, payload: dict[str, Any]) -> tuple[str, float] | None:
        return self.classify_text(request_text(payload, self.max_chars))

    def classify_text(self, text: str) -> tuple[str, float] | None:
        if not text:
            return None
        padded = words_of(text)
        words = set(padded.split())
        anchors = words & self._anchors
        if not anchors:
            return None
        hits: dict[int, dict[str, float]] = {}
        for word in anchors:
            for index, term in self._terms.get(word, ()):
                if len(term) == len(word) + 2 or term in padded:
                    hits.setdefault(index, {})[term] = TERM_WEIGHT
            for index, phrase in self._phrases.get(word, ()):
                if phrase.search(padded):
                    hits.setdefault(index, {})[phrase.pattern] = PHRASE_WEIGHT
        for word in words & self._objects.keys():
            for index in self._objects[word]:
                if index in hits and _operational(padded, word):
                    hits[index]["operational"] = PHRASE_WEIGHT
        return self._best(hits)

    def _best(self, hits: Mapping[int, Mapping[str, float]]) -> tuple[str, float] | None:
        best: tuple[str, float] | None = None
        for index, found in hits.items():
            score = round(1.0 - math.prod(1.0 - weight for weight in found.values()), 3)
            if best is None or score > best[1]:
                best = (self.categories[index].label, score)
        return best


def _operational(padded: str, word: str, occurrences: int = 8) -> bool:
    """Whether a verb comes within :data:`VERB_REACH` characters before ``word``."""
    needle = f" {word} "
    at = padded.find(needle)
    while at >= 0 and occurrences > 0:
        window = padded[max(0, at - VERB_REACH) : at + 1]
        if not VERBS.isdisjoint(window.split()) or any(v in window for v in VERB_PHRASES):
            return True
        at = padded.find(needle, at + 1)
        occurrences -= 1
    return False


# -- plugging in a classifier ---------------------------------------------------------------------


def load_classifier(entry_point: str, file: str, key: str) -> Any:
    """Import ``"module:attr"``: an object with ``classify``, or a class or factory that makes
    one when called without arguments. Anything else is a :class:`ConfigError` naming ``key``
    in ``file``."""
    if not _ENTRY_POINT.fullmatch(entry_point):
        raise ConfigError(file, [f"{key}: {entry_point[:80]!r} is not 'module:attribute'"])
    module_name, _, attr = entry_point.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
        makes_one = isinstance(found, type) or (callable(found) and not hasattr(found, "classify"))
        classifier = found() if makes_one else found
    except Exception as exc:  # the operator's code: any failure is a config problem
        raise ConfigError(
            file, [f"{key}: cannot load {entry_point!r}: {type(exc).__name__}: {str(exc)[:200]}"]
        ) from None
    if not callable(getattr(classifier, "classify", None)):
        raise ConfigError(
            file,
            [f"{key}: {entry_point!r} has no classify(payload) -> (label, score) | None method"],
        )
    return classifier


@dataclass
class ContentStats:
    classified: int = 0
    labelled: int = 0
    errors: int = 0  # the classifier raised
    invalid: int = 0  # it answered something that is not (label, score in 0..1)
    seconds: float = 0.0  # time spent classifying


class ContentGate:
    """Runs the classifier on requests to the compartments that ask for it. It never raises:
    errors and malformed answers are counted (``stats``) and recorded as no label."""

    def __init__(self, classifier: ContentClassifier, compartments: frozenset[str]) -> None:
        self.classifier = classifier
        self.compartments = compartments
        self.stats = ContentStats()

    def label(self, compartment: str, payload: dict[str, Any]) -> tuple[str, float] | None:
        """The classifier's (label, score) for a request to ``compartment``, or None."""
        if compartment not in self.compartments:
            return None
        stats = self.stats
        stats.classified += 1
        started = time.perf_counter()
        try:
            answer = self.classifier.classify(payload)
        except Exception as exc:  # an operator's classifier must never fail a request
            stats.errors += 1
            if math.log2(stats.errors).is_integer():  # 1st, 2nd, 4th, ... failure
                log.warning(
                    "content classifier failed: %s (%d failures so far)",
                    type(exc).__name__,
                    stats.errors,
                )
            return None
        finally:
            stats.seconds += time.perf_counter() - started
        return self._checked(answer)

    def _checked(self, answer: object) -> tuple[str, float] | None:
        if answer is None:
            return None
        if (
            isinstance(answer, tuple)
            and len(answer) == 2
            and isinstance(answer[0], str)
            and _LABEL.fullmatch(answer[0])
            and isinstance(answer[1], int | float)
            and not isinstance(answer[1], bool)
            and 0.0 <= answer[1] <= 1.0
        ):
            self.stats.labelled += 1
            return answer[0], round(float(answer[1]), 3)
        self.stats.invalid += 1
        return None
