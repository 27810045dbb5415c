"""The cluster port names what a stranger sent (``_wire._judge``), for its log lines: a
multiprocessing client's MD5 answer is another handshake whatever its first byte (it
begins with 0x80, as a pickle does, once in 256 nonces)."""

from __future__ import annotations

import hashlib
import hmac
import pickle

from hypothesis import given
from hypothesis import strategies as st

from blockproc.executors._wire import _judge


def _framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload  # multiprocessing's send_bytes


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=1, max_size=32))
def test_a_multiprocessing_answer_is_another_handshake(key: bytes, nonce: bytes) -> None:
    digest = hmac.new(key, nonce, "md5").digest()
    assert _judge(_framed(digest)) == "version"
    assert _judge(_framed(b"\x80" + digest[1:])) == "version"  # the 1-in-256 case
    sha = hmac.new(key, nonce, hashlib.sha256).digest()
    assert _judge(_framed(b"{sha256}" + sha)) == "version"


@given(st.lists(st.integers(), max_size=20), st.integers(2, pickle.HIGHEST_PROTOCOL))
def test_pickles_raw_or_framed_are_pickles(value: list[int], protocol: int) -> None:
    data = pickle.dumps(("evil", value), protocol=protocol)
    assert _judge(data) == "pickle"
    if len(data) != 16:
        assert _judge(_framed(data)) == "pickle"


def test_a_raw_pickle_whose_fifth_byte_is_a_brace_is_a_pickle() -> None:
    data = pickle.dumps(b"x" * 0x7B00, protocol=4)  # frame length 0x7bxx: data[4] == "{"
    assert data[4:5] == b"{" and _judge(data) == "pickle"


def test_nothing_is_closed_and_text_is_garbage() -> None:
    assert _judge(b"") == "closed"
    assert _judge(b"GET / HTTP/1.1\r\n") == "garbage"
