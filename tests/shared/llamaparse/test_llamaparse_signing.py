from __future__ import annotations

import hashlib
import hmac

import pytest

from ingestd.shared.llamaparse import is_fresh, sign, verify
from tests.emulators.llamaparse_api import sign as emulator_sign

BODY = b'{"event_type":"parse.success","data":{"job_id":"j1"}}'
SECRET = "whsec-test-secret"


def test_sign_matches_the_documented_scheme_and_the_emulator() -> None:
    digest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET) == "sha256=" + digest
    assert sign(BODY, SECRET) == emulator_sign(BODY, SECRET)


def test_verify_accepts_only_a_valid_signature() -> None:
    header = sign(BODY, SECRET)
    assert verify(BODY, header, SECRET)
    assert verify(BODY, header.upper().replace("SHA256=", "sha256="), SECRET)
    assert verify(BODY, "  " + header + " ", SECRET)
    assert not verify(BODY + b" ", header, SECRET)  # body tampered
    assert not verify(BODY, header, "another-secret")
    assert not verify(BODY, None, SECRET)  # missing header: refused, not skipped
    assert not verify(BODY, "", SECRET)
    assert not verify(BODY, header[len("sha256=") :], SECRET)  # no scheme
    assert not verify(BODY, "sha1=" + header[len("sha256=") :], SECRET)
    assert not verify(BODY, "sha256=zz", SECRET)
    assert not verify(BODY, "sha256=é", SECRET)


def test_verify_accepts_any_of_several_signatures() -> None:
    rotated = f"sha256={'0' * 64}, {sign(BODY, SECRET)}"
    assert verify(BODY, rotated, SECRET)
    assert not verify(BODY, f"sha256={'0' * 64}, sha256={'1' * 64}", SECRET)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        sign(BODY, "")
    with pytest.raises(ValueError):
        verify(BODY, "sha256=00", "")


@pytest.mark.parametrize(
    ("timestamp", "fresh"),
    [
        (1000.0, True),
        (1000, True),
        ("1000", True),
        (1000 - 300, True),
        (1000 - 301, False),
        (1000 + 60, True),
        (1000 + 61, False),
        (None, False),
        ("yesterday", False),
        (float("nan"), False),
        (True, False),
    ],
)
def test_is_fresh(timestamp: object, fresh: bool) -> None:
    assert is_fresh(timestamp, now=1000.0, max_age_s=300.0) is fresh  # type: ignore[arg-type]
