"""Token usage read from upstream responses as they stream past, whatever the chunking."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.gateway.usage import MAX_JSON_BODY, MAX_LINE, UsageMeter

FUZZ = settings(max_examples=300, deadline=None, database=None)


def _sse(*events: object, crlf: bool = False) -> bytes:
    newline = b"\r\n" if crlf else b"\n"
    lines = []
    for event in events:
        data = event if isinstance(event, bytes) else orjson.dumps(event)
        lines.append(b"data: " + data + newline + newline)
    return b"".join(lines)


OPENAI_STREAM = _sse(
    {"id": "c1", "object": "chat.completion.chunk", "choices": [{"delta": {"role": "assistant"}}]},
    {"id": "c1", "choices": [{"delta": {"content": "Hel"}}], "usage": None},
    {"id": "c1", "choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}]},
    {
        "id": "c1",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46},
    },
    b"[DONE]",
)

ANTHROPIC_STREAM = b"".join(
    b"event: " + name.encode() + b"\n" + b"data: " + orjson.dumps(data) + b"\n\n"
    for name, data in [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "usage": {"input_tokens": 25, "output_tokens": 1},
                },
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"text": "Hi"}},
        ),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 15},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
)

OPENAI_JSON = orjson.dumps(
    {
        "id": "c2",
        "object": "chat.completion",
        "choices": [{"message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
)

ANTHROPIC_JSON = orjson.dumps(
    {
        "id": "msg_2",
        "type": "message",
        "content": [{"type": "text", "text": "hi"}],
        "usage": {"input_tokens": 9, "output_tokens": 4},
    }
)

CASES = [
    ("openai", True, OPENAI_STREAM, (12, 34)),
    ("anthropic", True, ANTHROPIC_STREAM, (25, 15)),
    ("openai", False, OPENAI_JSON, (7, 3)),
    ("anthropic", False, ANTHROPIC_JSON, (9, 4)),
]
CASE_IDS = ["openai-sse", "anthropic-sse", "openai-json", "anthropic-json"]


def _meter(api: str, event_stream: bool, chunks: list[bytes]) -> tuple[int | None, int | None]:
    meter = UsageMeter(api, event_stream)
    for chunk in chunks:
        meter.feed(chunk)
    meter.finish()
    return meter.tokens_in, meter.tokens_out


@pytest.mark.parametrize(("api", "sse", "body", "expected"), CASES, ids=CASE_IDS)
def test_usage_is_read_from_a_whole_response(
    api: str, sse: bool, body: bytes, expected: tuple[int, int]
) -> None:
    assert _meter(api, sse, [body]) == expected


@pytest.mark.parametrize(("api", "sse", "body", "expected"), CASES, ids=CASE_IDS)
def test_usage_survives_a_split_at_every_byte_position(
    api: str, sse: bool, body: bytes, expected: tuple[int, int]
) -> None:
    for cut in range(len(body) + 1):
        assert _meter(api, sse, [body[:cut], body[cut:]]) == expected, f"split at byte {cut}"


@pytest.mark.parametrize(("api", "sse", "body", "expected"), CASES, ids=CASE_IDS)
def test_usage_survives_one_byte_at_a_time(
    api: str, sse: bool, body: bytes, expected: tuple[int, int]
) -> None:
    assert _meter(api, sse, [body[i : i + 1] for i in range(len(body))]) == expected


@FUZZ
@given(case=st.sampled_from(CASES), cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_usage_survives_any_chunking(
    case: tuple[str, bool, bytes, tuple[int, int]], cuts: list[int]
) -> None:
    api, sse, body, expected = case
    points = sorted({cut % (len(body) + 1) for cut in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert b"".join(chunks) == body
    assert _meter(api, sse, chunks) == expected


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_crlf_line_endings_are_understood(api: str) -> None:
    body = OPENAI_STREAM if api == "openai" else ANTHROPIC_STREAM
    expected = (12, 34) if api == "openai" else (25, 15)
    assert _meter(api, True, [body.replace(b"\n", b"\r\n")]) == expected


def test_data_lines_without_a_space_after_the_colon_are_read() -> None:
    line = b'data:{"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
    assert _meter("openai", True, [line]) == (1, 2)


def test_an_unterminated_last_event_is_not_counted() -> None:
    # An SSE event is only complete at its line end; a stream cut mid-line carries no usage.
    line = b'data: {"usage":{"prompt_tokens":1,"completion_tokens":2}}'
    assert _meter("openai", True, [line]) == (None, None)


def test_a_later_usage_event_updates_the_counts() -> None:
    body = _sse(
        {"usage": {"prompt_tokens": 5, "completion_tokens": 1}},
        {"usage": {"prompt_tokens": 5, "completion_tokens": 9}},
    )
    assert _meter("openai", True, [body]) == (5, 9)


def test_a_usage_event_missing_a_count_keeps_the_earlier_one() -> None:
    body = _sse(
        {"usage": {"prompt_tokens": 5, "completion_tokens": 1}},
        {"usage": {"completion_tokens": 9}},
    )
    assert _meter("openai", True, [body]) == (5, 9)


def test_openai_zero_completion_tokens_are_reported_as_zero() -> None:
    # A response that produced no tokens used 0 of them; "unknown" (None) would be wrong.
    body = orjson.dumps({"usage": {"prompt_tokens": 5, "completion_tokens": 0}})
    assert _meter("openai", False, [body]) == (5, 0)


def test_anthropic_zero_output_tokens_are_reported_as_zero() -> None:
    body = orjson.dumps({"usage": {"input_tokens": 5, "output_tokens": 0}})
    assert _meter("anthropic", False, [body]) == (5, 0)


def test_responses_without_usage_give_none() -> None:
    assert _meter("openai", False, [b'{"choices": []}']) == (None, None)
    assert _meter("anthropic", False, [b'{"content": []}']) == (None, None)
    assert _meter("openai", True, [_sse({"choices": []}, b"[DONE]")]) == (None, None)
    assert _meter("openai", False, []) == (None, None)


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "12", "completion_tokens": "3"},
        {"prompt_tokens": True, "completion_tokens": False},
        {"prompt_tokens": 1.5, "completion_tokens": None},
        {"prompt_tokens": [1], "completion_tokens": {"n": 1}},
    ],
)
def test_counts_that_are_not_whole_numbers_are_ignored(usage: dict[str, object]) -> None:
    assert _meter("openai", False, [orjson.dumps({"usage": usage})]) == (None, None)
    renamed = {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]}
    assert _meter("anthropic", False, [orjson.dumps({"usage": renamed})]) == (None, None)


@pytest.mark.parametrize(
    "body",
    [
        b'{"usage": [1, 2]}',
        b'{"usage": "lots"}',
        b'{"message": "hi", "usage": 3}',
        b'{"message": {"usage": null}}',
        b'["usage"]',
        b'"usage"',
        b"null",
        b"{",
        b"",
    ],
)
@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_odd_shapes_give_no_usage(api: str, body: bytes) -> None:
    assert _meter(api, False, [body]) == (None, None)
    assert _meter(api, True, [b"data: " + body + b"\n"]) == (None, None)


def test_only_data_lines_are_read() -> None:
    body = b'event: {"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
    body += b': comment {"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
    assert _meter("openai", True, [body]) == (None, None)


def test_a_json_body_over_the_cap_is_not_parsed() -> None:
    usage = b'{"usage":{"prompt_tokens":1,"completion_tokens":2},"pad":"'
    body = usage + b"x" * MAX_JSON_BODY + b'"}'
    assert _meter("openai", False, [body[:1000], body[1000:]]) == (None, None)


def test_an_overlong_sse_line_is_dropped_and_the_stream_still_read() -> None:
    huge = b"data: " + b"x" * (MAX_LINE + 10)  # no newline yet: buffered, then dropped
    usage = _sse({"usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    meter = UsageMeter("openai", event_stream=True)
    meter.feed(huge)
    meter.feed(b"tail-of-the-long-line\n\n")
    meter.feed(usage)
    meter.finish()
    assert (meter.tokens_in, meter.tokens_out) == (3, 4)


def test_an_sse_meter_does_not_keep_the_stream() -> None:
    meter = UsageMeter("openai", event_stream=True)
    for _ in range(1000):
        meter.feed(_sse({"choices": [{"delta": {"content": "x" * 100}}]}))
    assert len(meter._buffer) == 0  # only an unfinished line is ever held


@FUZZ
@given(
    api=st.sampled_from(["openai", "anthropic", "something-else"]),
    sse=st.booleans(),
    chunks=st.lists(st.binary(max_size=200), max_size=8),
)
def test_garbage_bytes_never_raise(api: str, sse: bool, chunks: list[bytes]) -> None:
    tokens = _meter(api, sse, chunks)
    assert all(t is None or isinstance(t, int) for t in tokens)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "usage",
                    "message",
                    "prompt_tokens",
                    "completion_tokens",
                    "input_tokens",
                    "output_tokens",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@FUZZ
@given(api=st.sampled_from(["openai", "anthropic"]), sse=st.booleans(), value=JSON)
def test_any_json_never_raises_and_counts_are_ints(api: str, sse: bool, value: object) -> None:
    payload = json.dumps(value).encode()  # json, not orjson: integers beyond 64 bits too
    body = b"data: " + payload + b"\n\n" if sse else payload
    tokens = _meter(api, sse, [body])
    assert all(t is None or (isinstance(t, int) and not isinstance(t, bool)) for t in tokens)


def test_usage_chunk_filter_hides_only_the_usage_chunk_at_any_split() -> None:
    from bastion.gateway.usage import UsageChunkFilter

    stream = (
        b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}\n\n'
        b'data: {"choices":[{"delta":{"content":"b"}}],"usage":null}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
        b"data: [DONE]\n\n"
    )
    expected = stream.replace(
        b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n', b""
    )
    for cut in range(len(stream) + 1):
        hide = UsageChunkFilter()
        out = hide.feed(stream[:cut]) + hide.feed(stream[cut:]) + hide.finish()
        assert out == expected, cut


# -- refusals (a D10 signal) ----------------------------------------------------------------------


def _metered(api: str, body: bytes, event_stream: bool) -> UsageMeter:
    meter = UsageMeter(api, event_stream)
    for start in range(0, len(body), 7):  # in awkward pieces
        meter.feed(body[start : start + 7])
    meter.finish()
    return meter


REFUSALS = [
    ("openai", _sse({"choices": [{"delta": {}, "finish_reason": "content_filter"}]}), True),
    ("openai", _sse({"choices": [{"delta": {"refusal": "I can't help with that."}}]}), True),
    (
        "openai",
        orjson.dumps({"choices": [{"message": {"content": None, "refusal": "No."}}]}),
        False,
    ),
    (
        "anthropic",
        _sse({"type": "message_delta", "delta": {"stop_reason": "refusal"}, "usage": {}}),
        True,
    ),
    ("anthropic", orjson.dumps({"type": "message", "stop_reason": "refusal"}), False),
]


@pytest.mark.parametrize(("api", "body", "sse"), REFUSALS)
def test_a_refusal_is_noticed(api: str, body: bytes, sse: bool) -> None:
    assert _metered(api, body, sse).refused


@pytest.mark.parametrize(
    ("api", "body", "sse"),
    [
        ("openai", OPENAI_STREAM, True),
        ("anthropic", ANTHROPIC_STREAM, True),
        (
            "openai",
            _sse({"choices": [{"delta": {"content": "I refuse to be late", "refusal": None}}]}),
            True,
        ),
        ("anthropic", orjson.dumps({"type": "message", "stop_reason": "end_turn"}), False),
    ],
)
def test_an_answer_is_not_a_refusal(api: str, body: bytes, sse: bool) -> None:
    assert not _metered(api, body, sse).refused
