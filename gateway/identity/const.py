"""Constants of the device PKI and certificate trust, each with the reason for its value."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Final

from gateway.protocol.const import MAX_DEVICE_ID_LEN

#: The device id rule of the wire protocol (gateway/protocol/frame.py `_DEVICE_ID`), as text: a certificate's
#: CN becomes the frame's device id, so a CA must never sign an id that no frame could carry.
DEVICE_ID_PATTERN: Final = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_DEVICE_ID_LEN}}}")

#: SAN URI prefix of a device certificate (RFC 9039 "urn:dev" namespace): the id survives tools that ignore CN.
DEVICE_URI_PREFIX: Final = "urn:dev:"

#: The root signs only the two issuing CAs; kept offline, so a long life avoids a fleet-wide re-enrolment.
ROOT_CA_DAYS: Final = 20 * 365

#: Issuing CAs outlive every certificate they sign by years, yet can be rotated without touching the root.
INTERMEDIATE_CA_DAYS: Final = 10 * 365

#: Server certificates: 397 days is the longest TLS clients (browsers, Apple platforms) accept.
SERVER_CERT_DAYS: Final = 397

#: Device certificates: the service life of a wearable's battery; renewal over the air is not in protocol v1.
DEVICE_CERT_DAYS: Final = 3 * 365

#: No certificate or CRL period beyond a century: a larger number is a typo, and would overflow datetime.
MAX_VALID_DAYS: Final = 100 * 365

#: A fresh certificate is dated this far back so that a verifier whose clock lags the issuer's accepts it at once.
CERT_BACKDATE: Final = timedelta(minutes=5)

#: A CRL is re-signed at least this often: revoke-serial rewrites it, and the gateway refuses nothing when it
#: goes stale (a panic must not be lost to an expired CRL), so operators re-run it from a timer well before.
CRL_NEXT_UPDATE_DAYS: Final = 30

#: Verified device identities kept by fingerprint: above any one site's fleet, so steady state never re-walks a
#: chain, and bounded so that a stream of distinct valid certificates cannot grow memory without end.
TRUST_CACHE_MAX: Final = 65_536

#: Where `panic-gateway pki` writes when --dir is not given; the same as PkiSettings.directory's default.
DEFAULT_PKI_DIR: Final = Path("certs/dev")

#: Private keys are readable by their owner only, from the moment the file exists.
KEY_FILE_MODE: Final = 0o600

#: Certificates and CRLs are public documents; other services (the broker, a proxy) may read them.
PUBLIC_FILE_MODE: Final = 0o644

#: Format version of revoked.json, so a later layout can be told apart and migrated.
REVOKED_FILE_VERSION: Final = 1
