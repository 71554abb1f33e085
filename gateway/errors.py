"""Errors of the gateway.

GatewayError                 base of everything the gateway raises on purpose
 +-- ConfigError             settings file or environment invalid (.problems: list of "field: message")
 +-- PkiError                a CA, key, certificate, CSR or CRL cannot be created, read or trusted
 +-- RegistryError           device registry operation refused (.device_id)
 +-- StoreUnavailable        the database cannot be reached now; callers answer 503 and the device retries
 +-- CarrierError            the phone network (Twilio) refused or failed a send (.permanent, .status, .code)
 +-- DirectoryError          an escalation directory file is invalid (.problems)   [gateway.escalation.directory]
 +-- SiteMapError            a site map (GeoJSON) is invalid (.problems)            [gateway.location.sites]
 +-- CellImportError         a cell database file is not in OpenCellID's format     [gateway.location.cells]
 +-- ConsoleError            an operator account operation was refused              [gateway.console.store]

Bad input on the hot path is not an exception: it is a gateway.rejection.Rejection value.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of all gateway errors."""


class ConfigError(GatewayError):
    """Settings invalid; `problems` lists each as 'field: message'."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


class PkiError(GatewayError):
    """A PKI object cannot be created, read or trusted."""


class RegistryError(GatewayError):
    """A device registry operation was refused."""

    def __init__(self, message: str, device_id: str) -> None:
        super().__init__(message)
        self.device_id = device_id


class StoreUnavailable(GatewayError):
    """The database is unreachable; the signal was not accepted and the device must retry."""


class CarrierError(GatewayError):
    """An SMS or call was not accepted by the phone network provider.

    permanent: retrying cannot help (an invalid number); otherwise retry with backoff (429, 5xx, network).
    status / code: the provider's HTTP status and error code, when it answered.
    """

    def __init__(self, message: str, *, permanent: bool, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status
        self.code = code
