"""Signed notes: Go's published example byte for byte, strict keys, every malformed note refused.

The PeterNeumann and EnochRoot keys, the note about cryptography and its signatures are those of
golang.org/x/mod ``sumdb/note/note_test.go`` (``TestNewVerifier``, ``TestNewSigner``, ``TestSign``,
``TestOpen``) and the package documentation's example; the Log/Known/KnownAgain/Unknown key pairs
are from transparency-dev/formats ``log/note_test.go``.
"""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.audit.note import (
    NoteError,
    Verifier,
    generate_key,
    key_id,
    open_note,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
    signer_key,
    verifier_key,
)

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
PETER_SIG = f"— PeterNeumann {PETER_B64}\n"
ENOCH_SIG = (
    "— EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)
NOTE = TEXT + "\n" + PETER_SIG

PETER = parse_verifier_key(PETER_VKEY)
ENOCH = parse_verifier_key(ENOCH_VKEY)

FORMATS_PAIRS = [  # transparency-dev/formats log/note_test.go
    (
        "Log+2271c621+AemuH5ooBpEPcr+W8onrjA1NfuzBVHdezakU81Ekarvs",
        "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ",
    ),
    (
        "Known+451c786d+AXAQ0T7lbwuY4ABJ9/MYY9bWV3hmSyOGVt2x42NkmdUH",
        "PRIVATE+KEY+Known+451c786d+AQPRoE2+Z+Ed1HaHBA9F/FfracvcZ2rDU39kCecMEoci",
    ),
    (
        "KnownAgain+4893b26c+AQ+LR7BFF/F/dkpIBjBpSvT0crkteizuUkavAoGeaYMj",
        "PRIVATE+KEY+KnownAgain+4893b26c+ARhZda/l25zjGZswYLDZsLNRzNpmv5wYTN9IoTr1OJ2+",
    ),
    (
        "Unknown+fdbb2e08+AWgRIYZ+8x1Vl+1Q+sR8zciNHiYI1SdlBjNw+RV0rots",
        "PRIVATE+KEY+Unknown+fdbb2e08+Aav2knTC6orbhXX8pMWuNiWgO+Wwk2DB+h1eU2Q1W1nU",
    ),
    (PETER_VKEY, PETER_SKEY),
]


def sig_line(name: str, raw: bytes) -> str:
    return f"— {name} {base64.b64encode(raw).decode()}\n"


PETER_RAW = base64.b64decode(PETER_B64)


# -- keys ---------------------------------------------------------------------------------------
def test_the_go_example_keys() -> None:
    signer = parse_signer_key(PETER_SKEY)
    assert PETER.name == signer.name == "PeterNeumann"
    assert PETER.key_id == signer.key_id == bytes.fromhex("c74f20a3")
    assert signer.verifier == PETER
    assert key_id("PeterNeumann", PETER.public_key) == bytes.fromhex("c74f20a3")
    assert verifier_key("PeterNeumann", PETER.public_key) == PETER_VKEY == PETER.text
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]  # the base64 may hold "+" too
    assert signer_key("PeterNeumann", seed) == PETER_SKEY
    assert ENOCH.key_id == bytes.fromhex("af0cfe78")


@pytest.mark.parametrize(("vkey", "skey"), FORMATS_PAIRS)
def test_key_pairs_written_by_go_parse_and_match(vkey: str, skey: str) -> None:
    signer, verifier = parse_signer_key(skey), parse_verifier_key(vkey)
    assert signer.verifier == verifier
    assert verifier.text == vkey


def test_a_signer_never_shows_its_seed() -> None:
    assert repr(parse_signer_key(PETER_SKEY)) == "Signer(PeterNeumann+c74f20a3)"
    assert repr(PETER) == "Verifier(PeterNeumann+c74f20a3)"


def test_every_mangling_of_the_go_keys_is_refused() -> None:
    # Go's TestNewVerifier and TestNewSigner: every proper substring and every one-byte change.
    for key, parse in ((PETER_VKEY, parse_verifier_key), (PETER_SKEY, parse_signer_key)):
        manglings = [key[i:j] for i in range(len(key)) for j in range(i + 1, len(key) + 1)]
        manglings += [key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))]
        for mangled in manglings:
            if mangled != key:
                with pytest.raises(NoteError):
                    parse(mangled)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Go's two extra bad keys: wrong length, and an unknown algorithm (hash adjusted to match).
        (
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "malformed verifier key",
        ),
        (
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "signature type 0x65 is not Ed25519",
        ),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "lowercase hex"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "base64"),
        ("PeterNeumann+c74f20a3+AVpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "invalid key name"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "invalid key name"),
        ("Peter\u00a0Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "invalid key"),
        ("Peter\u3000Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "invalid key"),
        ("Peter\u2028Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "invalid key"),
        ("Peter\x01Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "invalid key"),
        ("PeterNeumann", "lowercase hex"),
    ],
)
def test_bad_verifier_keys_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        parse_verifier_key(text)


def test_bad_signer_keys_say_what_is_wrong() -> None:
    with pytest.raises(NoteError, match="PRIVATE"):
        parse_signer_key(PETER_SKEY.removeprefix("PRIVATE+KEY+"))
    wrong_id = PETER_SKEY.replace("c74f20a3", "c74f20a4")
    with pytest.raises(NoteError, match="does not match signer key"):
        parse_signer_key(wrong_id)


@pytest.mark.parametrize("name", ["", "a+b", "a b", "tab\there", "nb\u00a0sp", "\udcff"])
def test_keys_cannot_be_made_for_invalid_names(name: str) -> None:
    with pytest.raises(NoteError, match="invalid key name"):
        verifier_key(name, PETER.public_key)


def test_keys_are_ed25519_sized() -> None:
    with pytest.raises(NoteError, match="32 bytes"):
        key_id("x", bytes(31))
    with pytest.raises(NoteError, match="32 bytes"):
        signer_key("x", bytes(33))
    with pytest.raises(NoteError, match="does not match"):
        Verifier("PeterNeumann", bytes(4), PETER.public_key)


# The encodings of the points of order dividing 8 (libsodium's ge25519_has_small_order blocklist).
SMALL_ORDER = [
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
]


@pytest.mark.parametrize("key", SMALL_ORDER + [k[:31] + bytes([k[31] | 0x80]) for k in SMALL_ORDER])
def test_small_order_keys_are_refused_because_anyone_can_sign_for_them(key: bytes) -> None:
    with pytest.raises(NoteError, match="small-order point"):
        parse_verifier_key(verifier_key("placeholder", key))


@pytest.mark.parametrize("y", [2**255 - 19, 2**255 - 18, 2**255 - 1])
def test_non_canonical_keys_are_refused(y: int) -> None:
    with pytest.raises(NoteError, match="not canonically encoded"):
        parse_verifier_key(verifier_key("twice", y.to_bytes(32, "little")))


def test_generated_keys_work_together() -> None:
    skey, vkey = generate_key("bastion.example/audit")
    signer, verifier = parse_signer_key(skey), parse_verifier_key(vkey)
    assert signer.verifier == verifier
    assert open_note(sign_note("hello\n", signer), [verifier]) == ("hello\n", [verifier.name])


# -- signing and opening ------------------------------------------------------------------------
def test_signing_reproduces_the_go_note_byte_for_byte() -> None:
    assert sign_note(TEXT, parse_signer_key(PETER_SKEY)) == NOTE  # Ed25519 is deterministic


def test_the_go_note_opens() -> None:
    assert open_note(NOTE, [PETER]) == (TEXT, ["PeterNeumann"])
    assert open_note(NOTE.encode(), [ENOCH, PETER]) == (TEXT, ["PeterNeumann"])


def test_unknown_signatures_are_ignored_and_known_ones_all_count() -> None:
    both = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_note(both, [PETER]) == (TEXT, ["PeterNeumann"])
    assert open_note(both, [ENOCH]) == (TEXT, ["EnochRoot"])
    assert open_note(both, [ENOCH, PETER]) == (TEXT, ["PeterNeumann", "EnochRoot"])
    assert open_note(TEXT + "\n" + PETER_SIG + PETER_SIG, [PETER, PETER]) == (
        TEXT,
        ["PeterNeumann"],
    )
    with pytest.raises(NoteError, match=r"^no known verifier signed this note$"):
        open_note(both, [])


def test_same_name_or_same_key_id_alone_is_an_unknown_key() -> None:
    other_id = sig_line("PeterNeumann", b"\x00\x00\x00\x00" + PETER_RAW[4:])
    other_name = sig_line("PaulNeumann", PETER_RAW)
    with pytest.raises(NoteError, match="no known verifier"):
        open_note(TEXT + "\n" + other_id + other_name, [PETER])
    assert open_note(TEXT + "\n" + other_id + other_name + PETER_SIG, [PETER])[1] == [
        "PeterNeumann"
    ]


def test_a_bad_signature_by_a_known_key_rejects_the_note() -> None:
    forged = sig_line("PeterNeumann", PETER_RAW[:10] + bytes([PETER_RAW[10] ^ 1]) + PETER_RAW[11:])
    with pytest.raises(NoteError, match=r"invalid signature by known key PeterNeumann\+c74f20a3"):
        open_note(TEXT + "\n" + forged, [PETER])
    with pytest.raises(NoteError, match="invalid signature by known key"):
        open_note(NOTE.replace("cryptography", "cryptographY"), [PETER])
    with pytest.raises(NoteError, match="invalid signature by known key"):  # even after a good one
        open_note(TEXT + "\n" + PETER_SIG + forged + ENOCH_SIG, [PETER, ENOCH])


def test_a_known_key_that_two_verifiers_claim_is_refused() -> None:
    impostor = Verifier("EnochRoot", ENOCH.key_id, ENOCH.public_key)
    object.__setattr__(impostor, "public_key", PETER.public_key)  # a key ID collision, forged
    with pytest.raises(NoteError, match=r"ambiguous key EnochRoot\+af0cfe78"):
        open_note(TEXT + "\n" + ENOCH_SIG, [ENOCH, impostor])
    assert open_note(NOTE, [ENOCH, impostor, PETER])[1] == ["PeterNeumann"]  # unused: harmless


@pytest.mark.parametrize(
    ("note", "message"),
    [  # Go's badMsgs first, then ours
        (TEXT, "no blank line before the signatures"),
        (TEXT + "\n", "no signature lines"),
        (TEXT + "\n" + PETER_SIG[:-1], "does not end in a newline"),
        ("\x01" + NOTE, "control character"),
        (b"\xff" + NOTE.encode(), "not valid UTF-8"),
        ("\udcff" + NOTE, "not valid UTF-8"),
        (TEXT + "\n" + f"— Bad Name {PETER_B64}", "does not end in a newline"),
        (TEXT + "\n" + f"— Bad Name {PETER_B64}\n", "the signature by Bad is not canonical base64"),
        (NOTE + "Unexpected line.\n", "does not start with '— '"),
        (TEXT + "\n" + PETER_SIG.replace("— ", "-- "), "does not start with '— '"),
        (TEXT + "\n" + f"—  PeterNeumann {PETER_B64}\n", "invalid key name"),
        (TEXT + "\n" + PETER_SIG.replace("x08go", "x08g!"), "not canonical base64"),
        (TEXT + "\n" + PETER_SIG.replace("AM=", "AN="), "not canonical base64"),  # Go accepts
        (TEXT + "\n" + PETER_SIG.replace("AM=", "AM"), "not canonical base64"),
        (TEXT + "\n" + PETER_SIG[:61] + "\n", "not canonical base64"),
        (TEXT + "\n" + sig_line("PeterNeumann", PETER_RAW[:-1]), "has the wrong length"),
        (TEXT + "\n" + sig_line("PeterNeumann", PETER_RAW + b"!"), "has the wrong length"),
        (TEXT + "\n" + "— PeterNeumann AAAA\n", "too short"),
        (TEXT + "\n" + PETER_SIG * 101, "more than 100 signatures"),
        (TEXT + "\n" + ENOCH_SIG * 101, "more than 100 signatures"),  # before any is looked at
        (NOTE + "\n", "no signature lines"),  # the last blank line is the separator
    ],
)
def test_malformed_notes_say_what_is_wrong(note: str | bytes, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        open_note(note, [PETER])


def test_a_hundred_signatures_are_accepted() -> None:
    assert open_note(TEXT + "\n" + PETER_SIG * 100, [PETER]) == (TEXT, ["PeterNeumann"])


def test_every_single_bit_flip_of_the_go_note_is_caught() -> None:
    raw = NOTE.encode()
    for i in range(len(raw)):
        for bit in range(8):
            mangled = raw[:i] + bytes([raw[i] ^ (1 << bit)]) + raw[i + 1 :]
            with pytest.raises(NoteError):
                open_note(mangled, [PETER])


@pytest.mark.parametrize(
    ("text", "message"),
    [("no newline", "end in a newline"), ("", "end in a newline"), ("tab\t\n", "control")],
)
def test_text_that_cannot_be_a_note_is_not_signed(text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        sign_note(text, parse_signer_key(PETER_SKEY))


SIGNER = parse_signer_key(PETER_SKEY)
note_text = st.text(
    st.characters(
        codec="utf-8", exclude_categories=["Cs"], exclude_characters="\r\t\x0b\x0c"
    ).filter(lambda c: c == "\n" or c >= " "),
    max_size=200,
).map(lambda t: t + "\n")


@settings(max_examples=200, deadline=None)
@given(text=note_text)
def test_any_text_round_trips_even_with_blank_lines(text: str) -> None:
    assert open_note(sign_note(text, SIGNER), [PETER]) == (text, ["PeterNeumann"])


@settings(max_examples=300, deadline=None)
@given(
    junk=st.binary(max_size=300)
    | st.text(max_size=300)
    | st.text(string.printable + "—\n", max_size=300).map(lambda t: TEXT + "\n" + t)
)
def test_opening_anything_raises_only_note_errors(junk: str | bytes) -> None:
    try:
        open_note(junk, [PETER, ENOCH])
    except NoteError:
        pass
    else:
        pytest.fail("junk opened")  # could only happen with a forged signature
