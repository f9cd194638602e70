"""`/t/<jwt>/...` request paths, and property tests: garbage in never raises anything but TokenRejected."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oca.tokens import TokenRejected, split_token_path, token_path
from tests.tokens.helpers import CLIENT, PATH, claims, sign, verifier

JWT = "aaa.bbb.ccc"


@pytest.mark.parametrize("target, expected", [
    (f"/t/{JWT}/titles/1/720p/a.m4s", (JWT, "/titles/1/720p/a.m4s")),
    (f"/t/{JWT}/", (JWT, "/")),
    ("/titles/1/720p/a.m4s", (None, "/titles/1/720p/a.m4s")),
    ("/t", (None, "/t")),
    ("/tt/x/titles/1", (None, "/tt/x/titles/1")),
    ("/healthz", (None, "/healthz")),
    ("", (None, "")),
    ("/t/", ("", "")),
    ("/t//titles/1/a.m4s", ("", "/titles/1/a.m4s")),
    (f"/t/{JWT}", ("", "")),
    (f"/t/{JWT}/t/other/titles/1", (JWT, "/t/other/titles/1")),
])
def test_split_token_path(target: str, expected: tuple[str | None, str]) -> None:
    assert split_token_path(target) == expected


def test_token_path_is_the_inverse() -> None:
    assert token_path(JWT, "/titles/1/a.m4s") == f"/t/{JWT}/titles/1/a.m4s"
    assert token_path(JWT, "titles/1/a.m4s") == f"/t/{JWT}/titles/1/a.m4s"
    for bad in ("", "a/b"):
        with pytest.raises(ValueError):
            token_path(bad, "/titles/1")


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1),
       st.text().map(lambda rest: "/" + rest))
def test_split_inverts_token_path(jwt: str, content: str) -> None:
    assert split_token_path(token_path(jwt, content)) == (jwt, content)


def test_a_broken_token_path_is_malformed_not_missing() -> None:
    token, content = split_token_path("/t//titles/81239481/a.m4s")
    with pytest.raises(TokenRejected) as caught:
        verifier().verify(token, content, CLIENT)
    assert caught.value.reason == "malformed"


def test_end_to_end_through_a_token_path() -> None:
    token, content = split_token_path(token_path(sign(), PATH))
    assert verifier().verify(token, content, CLIENT).kid == "ed-1"


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_segment = st.text(alphabet=_B64URL, max_size=120)
_GOOD = sign(claims(cdniip="10.0.0.0/8"))
_VERIFIER = verifier()


def _mutate(data: st.DataObject) -> str:
    chars = list(_GOOD)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(chars) - 1))
        chars[index] = data.draw(st.sampled_from(_B64URL + ".=/ %"))
    return "".join(chars)


_any_text = st.text(alphabet=st.characters(blacklist_categories=()))  # surrogates and control characters too


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    _any_text,
    st.lists(_segment, min_size=1, max_size=5).map(".".join),
    st.builds(lambda h, p, s: f"{h}.{p}.{s}", _segment, _segment, _segment),
), _any_text, _any_text)
def test_garbage_tokens_only_ever_raise_token_rejected(token: str, path: str, client: str) -> None:
    with pytest.raises(TokenRejected):
        verifier().verify(token, path, client)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_tokens_only_ever_raise_token_rejected(data: st.DataObject) -> None:
    token = _mutate(data)
    try:
        _VERIFIER.verify(token, PATH, "10.1.1.1")
    except TokenRejected:
        pass
    else:  # only a change the signature does not cover (none exist in a canonical JWS) could pass
        assert token == _GOOD


@settings(max_examples=300, deadline=None)
@given(_any_text, _any_text)
def test_any_path_and_client_with_a_good_token_only_raise_token_rejected(path: str, client: str) -> None:
    try:
        _VERIFIER.verify(_GOOD, "/titles/81239481/" + path, client)
    except TokenRejected as exc:
        assert exc.reason in ("out-of-scope", "wrong-ip")
