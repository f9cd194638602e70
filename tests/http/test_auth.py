"""bearer_token: the token of an Authorization header, the scheme matched case-insensitively (RFC 9110 §11.1)."""

from __future__ import annotations

import pytest

from oca.http.auth import bearer_token


@pytest.mark.parametrize("header, token", [
    ("Bearer abc", "abc"),
    ("bearer abc", "abc"),
    ("BEARER abc", "abc"),
    ("bEaReR abc", "abc"),
    ("Bearer   abc", "abc"),  # §11.4: 1*SP between scheme and token
    ("Bearer", None),
    ("Bearer ", None),
    ("Basic abc", None),
    ("Bearerabc", None),
    ("Bearer-x abc", None),
    ("", None),
    (None, None),
])
def test_the_bearer_scheme_is_case_insensitive(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token
