"""Console authentication, sans-I/O: password hashing and policy, roles, session and CSRF tokens, login throttling."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Mapping
from enum import StrEnum
from typing import Final, NamedTuple

from gateway.core.ratelimit import RateLimiter

#: scrypt cost: 2**15 with r=8 is OWASP's minimum recommendation, about 0.1 s and 32 MiB per hash here.
SCRYPT_N: Final = 2**15
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
#: 256-bit key, 128-bit random salt: collisions and precomputation are out of reach.
SCRYPT_DKLEN: Final = 32
SALT_BYTES: Final = 16
#: Largest parameters accepted from a stored hash: a corrupt or hostile row must not exhaust memory (1 GiB).
MAX_SCRYPT_N: Final = 2**20
MAX_SCRYPT_R: Final = 16
MAX_SCRYPT_P: Final = 16
#: NIST SP 800-63B: at least 8, we ask 12 (a passphrase), and cap the length so hashing stays bounded.
MIN_PASSWORD_CHARS: Final = 12
MAX_PASSWORD_CHARS: Final = 256
#: A stored hash the console verifies against when the account does not exist, so that a missing name takes as
#: long as a wrong password (its password is random and was thrown away).
DUMMY_HASH: Final = "scrypt$32768$8$1$9U5FmgPGFwCOvHp9tnMHMA==$Zvx7LLOdoqRHd5JGqXhk7DZTzonHxRVCZXjyEDuXtgg="
#: Sign-in names: lower case so that "Ana" and "ana" cannot both exist, and safe in URLs and logs.
OPERATOR_NAME: Final = re.compile(r"[a-z0-9._-]{1,64}", re.ASCII)
#: 32 random bytes (256 bits) per session token: guessing one is hopeless.
SESSION_TOKEN_BYTES: Final = 32
#: Sign-in attempts: 5 a minute per account stops online guessing of one password, 20 a minute per address
#: stops one client spraying many accounts while a shared NAT of operators still fits.
ACCOUNT_ATTEMPTS_PER_MIN: Final = 5
ACCOUNT_BURST: Final = 5
ADDRESS_ATTEMPTS_PER_MIN: Final = 20
ADDRESS_BURST: Final = 20

_ENCODED: Final = re.compile(r"scrypt\$([0-9]{1,8})\$([0-9]{1,3})\$([0-9]{1,3})\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")


class PasswordProblem(StrEnum):
    """Why a new password is refused (the value is the message shown)."""

    TOO_SHORT = f"password is shorter than {MIN_PASSWORD_CHARS} characters"
    TOO_LONG = f"password is longer than {MAX_PASSWORD_CHARS} characters"
    ONE_CHARACTER = "password repeats a single character"


class Role(StrEnum):
    """What an operator is trusted with, from least to most."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class Action(StrEnum):
    """Things a console user can do, each allowed to some roles."""

    VIEW = "view"
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    REVOKE_DEVICE = "revoke_device"
    MANAGE_USERS = "manage_users"


_HANDLE_ALERTS: Final = frozenset({Action.VIEW, Action.ACKNOWLEDGE, Action.RESOLVE})
#: Operators and supervisors handle alerts, only admins change who may do so and which devices are trusted.
PERMISSIONS: Final[Mapping[Role, frozenset[Action]]] = {
    Role.VIEWER: frozenset({Action.VIEW}),
    Role.OPERATOR: _HANDLE_ALERTS,
    Role.SUPERVISOR: _HANDLE_ALERTS,
    Role.ADMIN: frozenset(Action),
}


def can(role: Role, action: Action) -> bool:
    """Whether `role` may perform `action`."""
    return action in PERMISSIONS.get(role, frozenset())


class ScryptParams(NamedTuple):
    """The parameters of one stored hash."""

    n: int
    """CPU and memory cost, a power of two."""
    r: int
    """Block size."""
    p: int
    """Parallelism."""


DEFAULT_PARAMS: Final = ScryptParams(SCRYPT_N, SCRYPT_R, SCRYPT_P)


def check_password(password: str) -> tuple[PasswordProblem, ...]:
    """Every reason `password` may not be chosen (empty when it is acceptable)."""
    length = len(_normalize(password))
    problems: list[PasswordProblem] = []
    if length < MIN_PASSWORD_CHARS:
        problems.append(PasswordProblem.TOO_SHORT)
    elif length > MAX_PASSWORD_CHARS:
        problems.append(PasswordProblem.TOO_LONG)
    if length > 0 and len(set(password)) == 1:
        problems.append(PasswordProblem.ONE_CHARACTER)
    return tuple(problems)


def check_operator_name(name: str) -> str | None:
    """Why `name` cannot be a sign-in name, or None."""
    if OPERATOR_NAME.fullmatch(name) is None:
        return f"operator name {name!r} must be 1 to 64 characters of a-z, 0-9, '.', '_' or '-'"
    return None


def hash_password(password: str, params: ScryptParams = DEFAULT_PARAMS) -> str:
    """scrypt with a fresh random salt, encoded as scrypt$n$r$p$salt_b64$hash_b64 (policy is not checked here)."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, params, SCRYPT_DKLEN)
    b64 = base64.b64encode
    return f"scrypt${params.n}${params.r}${params.p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches `encoded`; False for anything malformed (never raises)."""
    parsed = _parse(encoded)
    if parsed is None:
        return False
    params, salt, expected = parsed
    try:
        digest = _scrypt(password, salt, params, len(expected))
    except (ValueError, MemoryError):  # an unencodable password, or parameters OpenSSL refuses
        return False
    return hmac.compare_digest(digest, expected)


def needs_rehash(encoded: str, params: ScryptParams = DEFAULT_PARAMS) -> bool:
    """Whether a stored hash should be replaced at the next successful sign-in (other parameters, or malformed)."""
    parsed = _parse(encoded)
    if parsed is None:
        return True
    stored, salt, digest = parsed
    return stored != params or len(salt) != SALT_BYTES or len(digest) != SCRYPT_DKLEN


def _normalize(password: str) -> str:
    # The same passphrase typed on two keyboards may arrive composed or decomposed.
    return unicodedata.normalize("NFC", password)


def _scrypt(password: str, salt: bytes, params: ScryptParams, dklen: int) -> bytes:
    # OpenSSL needs 128 * r * (n + p + 2) bytes, its default limit (32 MiB) is just short of n=2**15, r=8.
    maxmem = 128 * params.r * (params.n + params.p + 2) + 2**20
    secret = _normalize(password).encode("utf-8")
    return hashlib.scrypt(secret, salt=salt, n=params.n, r=params.r, p=params.p, dklen=dklen, maxmem=maxmem)


def _parse(encoded: object) -> tuple[ScryptParams, bytes, bytes] | None:
    if not isinstance(encoded, str):
        return None
    match = _ENCODED.fullmatch(encoded)
    if match is None:
        return None
    n, r, p = (int(g) for g in match.group(1, 2, 3))
    if not (1 < n <= MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= MAX_SCRYPT_R and 1 <= p <= MAX_SCRYPT_P):
        return None
    try:
        salt = base64.b64decode(match.group(4), validate=True)
        digest = base64.b64decode(match.group(5), validate=True)
    except binascii.Error:
        return None
    if len(salt) < 8 or not 16 <= len(digest) <= 64:
        return None
    return ScryptParams(n, r, p), salt, digest


def new_session_token() -> str:
    """A fresh session token for the browser's cookie (only its digest is stored)."""
    return secrets.token_urlsafe(SESSION_TOKEN_BYTES)


def token_digest(token: str) -> str:
    """SHA-256 of a session or API token, hex: what the database keeps, so a leaked table opens no session."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def csrf_token(session_token: str, secret: bytes) -> str:
    """The CSRF token of a session: HMAC-SHA256 of the session token under the server's secret, hex."""
    return hmac.new(secret, session_token.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def csrf_ok(session_token: str, given: str, secret: bytes) -> bool:
    """Whether `given` is the session's CSRF token (constant time)."""
    expected = csrf_token(session_token, secret).encode("ascii")
    return hmac.compare_digest(expected, given.encode("utf-8", "surrogatepass"))


class LoginThrottle:
    """Limits sign-in attempts per account name and per client address (`now`: a monotonic clock, seconds)."""

    __slots__ = ("_accounts", "_addresses")

    def __init__(
        self,
        *,
        account_per_min: float = ACCOUNT_ATTEMPTS_PER_MIN,
        account_burst: int = ACCOUNT_BURST,
        address_per_min: float = ADDRESS_ATTEMPTS_PER_MIN,
        address_burst: int = ADDRESS_BURST,
    ) -> None:
        self._accounts = RateLimiter(account_per_min / 60.0, account_burst)
        self._addresses = RateLimiter(address_per_min / 60.0, address_burst)

    def check(self, name: str, address: str, now: float) -> float:
        """Count one attempt. Returns 0.0 when it may go ahead, else the seconds to wait."""
        account_wait = self._accounts.acquire(name.strip().casefold(), now)
        address_wait = self._addresses.acquire(address, now)
        return max(account_wait, address_wait)


__all__ = [
    "DEFAULT_PARAMS",
    "DUMMY_HASH",
    "Action",
    "LoginThrottle",
    "PasswordProblem",
    "Role",
    "ScryptParams",
    "can",
    "check_operator_name",
    "check_password",
    "csrf_ok",
    "csrf_token",
    "hash_password",
    "needs_rehash",
    "new_session_token",
    "token_digest",
    "verify_password",
]
