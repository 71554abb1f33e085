"""Console authentication without I/O: scrypt hashes, the password policy, roles, CSRF and login throttling."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.console.auth import (
    DEFAULT_PARAMS,
    DUMMY_HASH,
    Action,
    LoginThrottle,
    PasswordProblem,
    Role,
    ScryptParams,
    can,
    check_operator_name,
    check_password,
    csrf_ok,
    csrf_token,
    hash_password,
    needs_rehash,
    new_session_token,
    token_digest,
    verify_password,
)

#: Cheap parameters so that property tests stay fast (production hashes use DEFAULT_PARAMS).
CHEAP = ScryptParams(n=2**4, r=8, p=1)
SECRET = b"server-secret-for-tests-0123456789"


def test_default_hash_round_trips_and_is_salted() -> None:
    encoded = hash_password("correct horse battery staple")
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**15, 8, 1)
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert verify_password("correct horse battery staple", encoded)
    assert not verify_password("correct horse battery stapler", encoded)
    assert not needs_rehash(encoded)
    assert hash_password("correct horse battery staple", CHEAP) != hash_password("correct horse battery staple", CHEAP)


def test_cheaper_or_odd_hashes_need_a_rehash() -> None:
    cheap = hash_password("correct horse battery staple", CHEAP)
    assert verify_password("correct horse battery staple", cheap)
    assert needs_rehash(cheap)
    assert not needs_rehash(cheap, CHEAP)
    assert needs_rehash("not a hash")
    assert not needs_rehash(DUMMY_HASH, DEFAULT_PARAMS)


def test_composed_and_decomposed_passwords_are_the_same() -> None:
    encoded = hash_password("caf\u00e9 au lait, s'il vous plait", CHEAP)
    assert verify_password("cafe\u0301 au lait, s'il vous plait", encoded)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "scrypt",
        "bcrypt$16$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$16$8$1$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$15$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # n not a power of 2
        "scrypt$1$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$1073741824$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # 1 TiB
        "scrypt$16$0$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$16$8$99$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$16$8$1$AAAAAAAAAAAAAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # bad padding
        "scrypt$16$8$1$AA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # salt too short
        "scrypt$16$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",  # digest too short
        "scrypt$\u0661\u0666$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # not ASCII
        "scrypt$16$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    ],
)
def test_malformed_encodings_are_false_not_errors(encoded: str) -> None:
    assert verify_password("correct horse battery staple", encoded) is False
    assert needs_rehash(encoded) is True


@given(st.text(max_size=120), st.text(max_size=40))
def test_garbage_never_raises(encoded: str, password: str) -> None:
    assert verify_password(password, encoded) is False
    assert verify_password(password, "scrypt$16$8$1$" + encoded) is False


def test_an_unencodable_password_is_false_not_an_error() -> None:
    assert verify_password("\ud800 lone surrogate", hash_password("correct horse battery staple", CHEAP)) is False


@pytest.mark.parametrize(
    ("password", "problems"),
    [
        ("", (PasswordProblem.TOO_SHORT,)),
        ("short pass", (PasswordProblem.TOO_SHORT,)),
        ("x" * 12, (PasswordProblem.ONE_CHARACTER,)),
        ("aaaa", (PasswordProblem.TOO_SHORT, PasswordProblem.ONE_CHARACTER)),
        ("y" * 257, (PasswordProblem.TOO_LONG, PasswordProblem.ONE_CHARACTER)),
        ("ab" * 129, (PasswordProblem.TOO_LONG,)),
        ("twelve chars", ()),
        ("z" + "y" * 255, ()),
    ],
)
def test_password_policy(password: str, problems: tuple[PasswordProblem, ...]) -> None:
    assert check_password(password) == problems


def test_policy_messages_read_as_sentences() -> None:
    assert PasswordProblem.TOO_SHORT == "password is shorter than 12 characters"
    assert PasswordProblem.TOO_LONG == "password is longer than 256 characters"
    assert PasswordProblem.ONE_CHARACTER == "password repeats a single character"


@pytest.mark.parametrize("name", ["ana", "a", "ana.guard_2-x", "0" * 64])
def test_good_operator_names(name: str) -> None:
    assert check_operator_name(name) is None


@pytest.mark.parametrize("name", ["", "Ana", "ana guard", "a" * 65, "ana\n", "\u00e1na", "ana/.."])
def test_bad_operator_names(name: str) -> None:
    assert "must be 1 to 64 characters" in (check_operator_name(name) or "")


def test_roles_matrix() -> None:
    allowed = {role: {a for a in Action if can(role, a)} for role in Role}
    handle = {Action.VIEW, Action.ACKNOWLEDGE, Action.RESOLVE}
    assert allowed == {
        Role.VIEWER: {Action.VIEW},
        Role.OPERATOR: handle,
        Role.SUPERVISOR: handle,
        Role.ADMIN: set(Action),
    }
    assert [r.value for r in Role] == ["viewer", "operator", "supervisor", "admin"]


def test_session_tokens_are_random_and_stored_as_digests() -> None:
    a, b = new_session_token(), new_session_token()
    assert a != b and len(a) >= 43
    assert token_digest(a) == token_digest(a) != token_digest(b)
    assert len(token_digest(a)) == 64 and a not in token_digest(a)


def test_csrf_token_is_bound_to_the_session_and_the_secret() -> None:
    session = new_session_token()
    token = csrf_token(session, SECRET)
    assert csrf_ok(session, token, SECRET)
    assert not csrf_ok(new_session_token(), token, SECRET)
    assert not csrf_ok(session, token, b"another-secret")
    assert not csrf_ok(session, token[:-1], SECRET)
    assert not csrf_ok(session, "", SECRET)
    assert not csrf_ok(session, "\u00e9" * 64, SECRET)  # non-ASCII: False, not TypeError


def test_throttle_per_account() -> None:
    throttle = LoginThrottle()
    assert all(throttle.check("ana", f"10.0.0.{i}", 0.0) == 0.0 for i in range(5))
    wait = throttle.check("Ana", "10.0.0.9", 0.0)  # the same account, whatever the case or address
    assert wait == pytest.approx(12.0)
    assert throttle.check("bo", "10.0.0.9", 0.0) == 0.0
    assert throttle.check("ana", "10.0.0.9", 12.0) == 0.0


def test_throttle_per_address() -> None:
    throttle = LoginThrottle()
    assert all(throttle.check(f"user{i}", "203.0.113.7", 0.0) == 0.0 for i in range(20))
    assert throttle.check("someone-else", "203.0.113.7", 0.0) == pytest.approx(3.0)
    assert throttle.check("someone-else", "203.0.113.8", 0.0) == 0.0
    assert throttle.check("another", "203.0.113.7", 3.0) == 0.0
