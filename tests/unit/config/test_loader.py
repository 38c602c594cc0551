"""The loader: every way a config file can be wrong gives ``file:line: key.path: what`` problems."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.config import load_config, parse_config
from bastion.config.loader import MAX_DEPTH, MAX_FILE_BYTES, MAX_PROBLEMS, MAX_VALUES
from bastion.errors import ConfigError

HEAD = """\
version: 1
orgs:
  lab: {kind: internal}
"""


def problems(text: str, file: str = "bastion.yaml") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, file)
    assert caught.value.file == file
    assert caught.value.code == "config_invalid"
    return caught.value.problems


def test_a_minimal_config_loads() -> None:
    config = parse_config(HEAD)
    assert config.version == 1
    assert list(config.orgs) == ["lab"]
    assert config.models == ()
    assert config.gateway.max_body_bytes == 4 * 1024 * 1024


def test_the_shared_test_config_loads(config_text: str) -> None:
    config = parse_config(config_text)
    assert [m.name for m in config.models] == [
        "demo-chat",
        "demo-claude",
        "demo-embed",
        "cyber-frontier",
    ]


# -- files ---------------------------------------------------------------------------------------


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(HEAD, encoding="utf-8")
    assert load_config(path).orgs["lab"].kind == "internal"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.file == str(path)
    assert caught.value.problems == [f"{path}: no such file (`bastion init` writes an example)"]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.problems == [f"{tmp_path}: is a directory, not a config file"]


def test_unreadable_path(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(not_a_dir / "bastion.yaml")
    assert caught.value.problems == [f"{not_a_dir / 'bastion.yaml'}: cannot read: Not a directory"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_read_permission(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(HEAD, encoding="utf-8")
    path.chmod(0)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [f"{path}: cannot read: Permission denied"]


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_bytes(HEAD.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    offset = len(HEAD) + 5
    assert caught.value.problems == [f"{path}:4: not valid UTF-8 (byte 0xe9 at offset {offset})"]


def test_oversized_file(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_bytes(HEAD.encode() + b"#" * MAX_FILE_BYTES)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [f"{path}: too large (over {MAX_FILE_BYTES} bytes, the limit)"]


def test_oversized_text() -> None:
    assert problems("#" * (MAX_FILE_BYTES + 1)) == [
        f"bastion.yaml: too large (over {MAX_FILE_BYTES} bytes, the limit)"
    ]


def test_error_message_starts_with_the_file() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("version: 2\n", "conf/prod.yaml")
    message = str(caught.value)
    assert message.startswith("conf/prod.yaml:1: version: unsupported version 2")
    assert message.count("conf/prod.yaml") == 1  # the file is named once, not twice


# -- YAML itself ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    assert problems(text) == [
        "bastion.yaml:1: the file is empty (`bastion init` writes an example)"
    ]


@pytest.mark.parametrize(
    ("text", "got"),
    [("- version: 1\n", "a list"), ("\n\nhello\n", "a single value")],
)
def test_top_level_must_be_a_mapping(text: str, got: str) -> None:
    line = 1 if text.startswith("-") else 3
    assert problems(text) == [
        f"bastion.yaml:{line}: the top level must be a mapping (version: 1, upstreams: ...), "
        f"got {got}"
    ]


def test_syntax_error_names_its_line() -> None:
    text = HEAD + "upstreams:\n  local: {base_url: http://h\n  api: openai\n"
    assert problems(text) == [
        "bastion.yaml:6: YAML syntax error: while parsing a flow mapping, "
        "expected ',' or '}', but got ':'"
    ]


def test_tab_indentation() -> None:
    [problem] = problems(HEAD + "upstreams:\n\tlocal: {}\n")
    assert problem.startswith("bastion.yaml:5: YAML syntax error:")
    assert "'\\t'" in problem


def test_two_documents() -> None:
    assert problems(HEAD + "---\nversion: 1\n") == [
        "bastion.yaml:4: YAML syntax error: expected a single document in the stream, "
        "but found another document"
    ]


def test_control_character() -> None:
    assert problems(HEAD + "# bell \x07\n") == [
        "bastion.yaml:4: character #x0007 is not allowed in YAML"
    ]


def test_duplicate_keys_name_both_lines() -> None:
    text = HEAD + "  acme: {kind: vendor}\n  lab: {kind: vendor}\n"
    assert problems(text) == ["bastion.yaml:5: orgs: duplicate key 'lab' (first on line 3)"]


def test_duplicate_top_level_keys() -> None:
    assert problems(HEAD + "version: 1\n") == [
        "bastion.yaml:4: duplicate key 'version' (first on line 1)"
    ]


def test_collection_as_key() -> None:
    assert problems(HEAD + "? [a, b]\n: 1\n") == [
        "bastion.yaml:4: a key must be a plain name, not a collection"
    ]


def test_unreadable_scalars_are_located() -> None:
    text = HEAD + "principals:\n  alice: {kind: user, org: lab, disabled: !!int x}\n"
    assert problems(text) == ["bastion.yaml:5: principals.alice.disabled: cannot be read as int"]


def test_impossible_date_is_located() -> None:
    text = HEAD.replace("{kind: internal}", "{kind: internal, description: 2024-02-30}")
    assert problems(text) == [
        "bastion.yaml:3: orgs.lab.description: not a valid date (day is out of range for "
        "month); quote it if it is meant as text"
    ]


def test_unknown_tag() -> None:
    assert problems(HEAD + "gateway: !custom {}\n") == [
        "bastion.yaml:4: gateway: could not determine a constructor for the tag '!custom'"
    ]


def test_python_tags_are_refused() -> None:
    [problem] = problems(HEAD + "gateway: !!python/object/apply:os.system [id]\n")
    assert problem.startswith("bastion.yaml:4: ")
    assert "could not determine a constructor" in problem


def test_recursive_alias() -> None:
    assert problems(HEAD + "models: &m [*m]\n") == [
        "bastion.yaml:4: models[0]: an alias refers to a value that contains it"
    ]


def test_alias_bomb_is_stopped() -> None:
    lines = ["a: &a [" + ", ".join(["x"] * 10) + "]"]
    for level in "bcdefg":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 10) + "]")
    [problem] = problems("\n".join(lines) + "\n")
    assert problem.startswith("bastion.yaml:")
    assert f"more than {MAX_VALUES} values (after expanding aliases)" in problem


@pytest.mark.parametrize("brackets", ["[]", "{a: }"])
def test_deep_nesting(brackets: str) -> None:
    opening, closing = brackets[:-1], brackets[-1]
    text = "version: " + opening * 1000 + closing * 1000 + "\n"
    assert problems(text) == [f"bastion.yaml:1: nested deeper than {MAX_DEPTH} levels"]


def test_merge_keys_are_followed_and_explicit_keys_win() -> None:
    text = HEAD + (
        "upstreams:\n"
        "  a: &defaults\n"
        "    base_url: http://h/v1\n"
        "    api: openai\n"
        "    timeout_seconds: 30\n"
        "  b:\n"
        "    <<: *defaults\n"
        "    timeout_seconds: 0\n"
        "  c:\n"
        "    <<: *defaults\n"
        "    api: grpc\n"
    )
    assert problems(text) == [
        "bastion.yaml:11: upstreams.b.timeout_seconds: must be greater than 0 (got 0)",
        "bastion.yaml:14: upstreams.c.api: must be one of openai, anthropic (got 'grpc')",
    ]


def test_merged_values_keep_the_line_they_are_written_on() -> None:
    text = HEAD + (
        "upstreams:\n"
        "  a: &defaults\n"
        "    base_url: http://h/v1\n"
        "    api: openai\n"
        "    connect_timeout_seconds: 9999\n"
        "  b:\n"
        "    <<: *defaults\n"
    )
    assert problems(text) == [
        "bastion.yaml:8: upstreams.a.connect_timeout_seconds: must be at most 3600 (got 9999)",
        "bastion.yaml:8: upstreams.b.connect_timeout_seconds: must be at most 3600 (got 9999)",
    ]


def test_problems_are_capped() -> None:
    text = HEAD + "principals:\n" + "".join(f"  p{i}: {{kind: x, org: lab}}\n" for i in range(80))
    found = problems(text)
    assert len(found) == MAX_PROBLEMS + 1
    assert found[0] == "bastion.yaml:5: principals.p0.kind: must be one of user, service (got 'x')"
    assert found[-1] == f"bastion.yaml: … and {80 - MAX_PROBLEMS} more problems"
