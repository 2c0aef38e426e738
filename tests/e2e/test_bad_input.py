"""Bad and unusual input against the real server: the right status, a message naming the
problem, and the server keeps serving. The fixture server limits text to 200 characters."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.gen.nlu.v1 import nlu_pb2


@pytest.mark.parametrize(
    "text",
    [
        "show flights\x00 from boston to denver",  # NUL
        "list\x07 airlines\x1b[31m please",  # BEL, an ANSI escape
        "flights to denver ✈️🛫 tomorrow 😀",  # emoji, a variation selector
        "رحلات من بوسطن إلى دنفر",  # right-to-left
        "\u202eflights to denver\u202c",  # a bidi override around the text
        "从波士顿到丹佛的航班",  # CJK, no spaces
        "a\u0301\u0302 ﬁ ǅ",  # combining marks, a ligature, a titlecase digraph
    ],
)
def test_unusual_scripts_and_control_characters_are_answered(client, text):
    response = client.parse(text)
    assert response.intent
    for slot in response.slots:
        assert text[slot.start : slot.end] == slot.value


def test_a_message_over_the_receive_limit_is_refused_and_the_server_keeps_serving(client):
    with pytest.raises(grpc.RpcError) as err:
        client.parse("x" * (4 * 1024 * 1024 + 10))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "message larger than max" in err.value.details().lower()
    assert client.parse("list airlines").intent


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x0a\x05ab", "not a valid protobuf message"),  # truncated: 5 bytes announced, 2 sent
        (b"\xff\xff\xff", "not a valid protobuf message"),  # not protobuf at all
        (  # another message type: decodes (unknown fields), but holds no text
            nlu_pb2.ModelInfo(intents=["x"] * 3, max_seq_len=7).SerializeToString(),
            "text is empty",
        ),
    ],
)
def test_generic_calls_with_bytes_that_are_no_parse_request_are_refused(client, payload, message):
    with pytest.raises(grpc.RpcError) as err:
        client.channel.unary_unary("/nlu.v1.NluService/Parse")(payload, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert client.parse("list airlines").intent


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(min_size=1, max_size=200))
def test_any_unicode_is_answered_or_refused_cleanly_never_internal(client, text):
    try:
        response = client.parse(text)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
        assert "text is empty or has no visible character" in e.details()
        return
    for slot in response.slots:
        assert 0 <= slot.start < slot.end <= len(text)
        assert text[slot.start : slot.end] == slot.value
