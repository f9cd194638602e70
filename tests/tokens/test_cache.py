"""The verified-token cache: one signature check per token, never past expiry, bounded; brief negative caching."""

from __future__ import annotations

from typing import Any

import pytest

from oca.tokens import KeySet, TokenRejected, public_jwk
from oca.tokens import verify as verify_module
from tests.clock import FakeClock
from tests.tokens.helpers import CLIENT, EC_KEY, NOW, PATH, claims, flip, sign, verifier


class CountingJWS:
    """Wraps the module's PyJWS so a test counts the real signature verifications."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def get_unverified_header(self, token: str) -> Any:
        return self.inner.get_unverified_header(token)

    def decode_complete(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.decode_complete(*args, **kwargs)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingJWS:
    wrapper = CountingJWS(verify_module._JWS)
    monkeypatch.setattr(verify_module, "_JWS", wrapper)
    return wrapper


def test_signature_is_checked_once_per_token(counting: CountingJWS) -> None:
    v = verifier()
    token = sign()
    for index in range(100):
        v.verify(token, f"/titles/81239481/720p/seg{index:05}.m4s", CLIENT)
    assert counting.calls == 1
    assert v.signature_checks == 1


def test_cached_token_is_still_checked_for_path_and_ip(counting: CountingJWS) -> None:
    v = verifier()
    token = sign(claims(cdniip="10.0.0.0/8"))
    v.verify(token, PATH, "10.0.0.1")
    for path, client, reason in [("/titles/1/a.m4s", "10.0.0.1", "out-of-scope"), (PATH, "11.0.0.1", "wrong-ip"),
                                 ("/titles/81239481/../1/a.m4s", "10.0.0.1", "out-of-scope")]:
        with pytest.raises(TokenRejected) as caught:
            v.verify(token, path, client)
        assert caught.value.reason == reason
    v.verify(token, PATH, "10.0.0.2")
    v.verify(token, PATH, "10.0.0.1")
    assert counting.calls == 1


def test_replay_after_expiry_is_rejected_while_cached() -> None:
    clock = FakeClock(NOW)
    v = verifier(clock)
    token = sign(claims(exp=int(NOW) + 60))
    v.verify(token, PATH, CLIENT)
    clock.now = NOW + 60 + 30 - 0.001  # the last instant inside the leeway
    v.verify(token, PATH, CLIENT)
    assert v.signature_checks == 1
    clock.now = NOW + 60 + 30
    for _ in range(3):
        with pytest.raises(TokenRejected) as caught:
            v.verify(token, PATH, CLIENT)
        assert caught.value.reason == "expired"
    assert len(v) == 0
    assert v.signature_checks == 1  # the refusal is remembered, not re-verified


def test_not_yet_valid_token_becomes_valid_without_a_second_check() -> None:
    clock = FakeClock(NOW)
    v = verifier(clock)
    token = sign(claims(nbf=int(NOW) + 120))
    with pytest.raises(TokenRejected, match="not-yet-valid"):
        v.verify(token, PATH, CLIENT)
    clock.now = NOW + 120 - 30
    v.verify(token, PATH, CLIENT)
    assert v.signature_checks == 1


def test_expired_token_never_enters_the_cache() -> None:
    v = verifier()
    with pytest.raises(TokenRejected, match="expired"):
        v.verify(sign(claims(exp=int(NOW) - 100)), PATH, CLIENT)
    assert len(v) == 0


def test_cache_is_bounded_and_evicts_the_oldest() -> None:
    v = verifier(cache_size=2)
    tokens = [sign(claims(jti=str(index))) for index in range(3)]
    for token in tokens:
        v.verify(token, PATH, CLIENT)
    assert len(v) == 2 and v.signature_checks == 3
    v.verify(tokens[2], PATH, CLIENT)  # newest: still cached
    assert v.signature_checks == 3
    v.verify(tokens[0], PATH, CLIENT)  # oldest: was evicted
    assert v.signature_checks == 4 and len(v) == 2


def test_cache_size_zero_checks_every_time() -> None:
    v = verifier(cache_size=0)
    token = sign()
    for _ in range(3):
        v.verify(token, PATH, CLIENT)
    assert v.signature_checks == 3 and len(v) == 0


def test_bad_signature_is_remembered_briefly() -> None:
    clock = FakeClock(NOW)
    v = verifier(clock, negative_ttl=10)
    token = flip(sign(), 2)
    for _ in range(5):
        with pytest.raises(TokenRejected, match="bad-signature"):
            v.verify(token, PATH, CLIENT)
    assert v.signature_checks == 1
    clock.now += 10
    with pytest.raises(TokenRejected, match="bad-signature"):
        v.verify(token, PATH, CLIENT)
    assert v.signature_checks == 2


def test_cheap_refusals_are_not_cached() -> None:
    v = verifier()
    for token in ["garbage", sign(kid="nobody"), sign(key=EC_KEY, kid="ed-1")]:
        with pytest.raises(TokenRejected):
            v.verify(token, PATH, CLIENT)
    assert v.signature_checks == 0 and len(v._rejected) == 0


def test_negative_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_module, "NEGATIVE_CACHE_SIZE", 3)
    v = verifier()
    for index in range(10):
        with pytest.raises(TokenRejected):
            v.verify(sign(claims(cdniv=2, jti=str(index))), PATH, CLIENT)
    assert len(v._rejected) == 3


def test_two_keys_at_once_rotation() -> None:
    v = verifier()
    old, new = sign(), sign(key=EC_KEY, kid="ec-1")
    assert v.verify(old, PATH, CLIENT).kid == "ed-1"
    assert v.verify(new, PATH, CLIENT).kid == "ec-1"


def test_update_keys_drops_tokens_of_retired_keys() -> None:
    v = verifier()
    old, new = sign(), sign(key=EC_KEY, kid="ec-1")
    v.verify(old, PATH, CLIENT)
    v.verify(new, PATH, CLIENT)
    v.update_keys(KeySet.from_jwks({"keys": [public_jwk(EC_KEY, "ec-1")]}))
    with pytest.raises(TokenRejected, match="unknown-kid"):
        v.verify(old, PATH, CLIENT)
    v.verify(new, PATH, CLIENT)
    assert v.signature_checks == 2  # the token of the kept key stayed cached
    assert "ed-1" not in v.keys and len(v.keys) == 1


def test_update_keys_with_a_changed_key_under_the_same_kid() -> None:
    v = verifier()
    token = sign()
    v.verify(token, PATH, CLIENT)
    v.update_keys(KeySet.of({"ed-1": EC_KEY}))
    with pytest.raises(TokenRejected, match="bad-alg"):
        v.verify(token, PATH, CLIENT)


def test_constructor_refuses_negative_settings() -> None:
    with pytest.raises(ValueError):
        verifier(leeway=-1)
    with pytest.raises(ValueError):
        verifier(cache_size=-1)
