"""BLE ingest: bleak's public API over a project backend on the bumble host stack (any HCI: USB, UART, TCP)."""

from gateway.ingest.ble.bumble_backend import (
    BumbleClient,
    BumbleConnectTimeoutError,
    BumbleRadio,
    BumbleScanner,
    BumbleTransportLostError,
    ParsedAdvertisingData,
    parse_advertising_data,
)

__all__ = [
    "BumbleClient",
    "BumbleConnectTimeoutError",
    "BumbleRadio",
    "BumbleScanner",
    "BumbleTransportLostError",
    "ParsedAdvertisingData",
    "parse_advertising_data",
]
