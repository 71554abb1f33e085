"""Constants of the BLE ingest adapter (bleak over the bumble host stack), each with the reason for its value."""

from __future__ import annotations

from typing import Final

#: The bleak kwarg that carries a bumble transport spec (`tcp-client:127.0.0.1:PORT`, `usb:0`, `serial:...`,
#: `hci-socket:0`): the backend then opens and owns its own radio.
TRANSPORT_KWARG: Final = "bumble_transport"
#: The bleak kwarg that carries an already started, shared `BumbleRadio` (scanner and clients on one controller,
#: which a USB dongle requires: only one host may own its HCI). The backend does not close it.
RADIO_KWARG: Final = "bumble_radio"

#: The bleak kwarg that carries a `Callable[[bytes], bool]` on an advert's raw AD bytes: adverts it rejects are
#: dropped before bleak objects are built (and, scanning passively, before bumble parses the HCI report). A site's
#: air is mostly foreign beacons, and building objects for each costs the gateway ~0.1-0.2 ms of CPU per report.
PREFILTER_KWARG: Final = "bumble_prefilter"

#: Scan interval and window in ms. Equal values mean a 100 % duty cycle: a gateway is mains powered and must not
#: miss a panic advert that is repeated only a few times.
SCAN_INTERVAL_MS: Final = 60.0
SCAN_WINDOW_MS: Final = 60.0

#: Bound on each HCI command round trip at start-up (reset, read address). A controller that does not answer in
#: this time is absent or wedged; failing fast lets the supervisor restart the radio instead of hanging.
POWER_ON_TIMEOUT_S: Final = 10.0
#: Bound on one GATT operation (read, write, discovery step) on top of the transport. bumble's own ATT timeout
#: is 30 s (the spec's value); a panic acknowledgement cannot wait that long for a peer that walked away.
GATT_OPERATION_TIMEOUT_S: Final = 10.0
#: Bound on a disconnect handshake: past it the link is considered gone anyway (as a supervision timeout would).
DISCONNECT_TIMEOUT_S: Final = 5.0
#: Extra time, beyond the caller's connect timeout, to let the controller answer a Create Connection Cancel.
#: Some controllers (bumble's virtual one among them) never answer it; we must not hang on them.
CONNECT_CANCEL_GRACE_S: Final = 2.0

#: MTU before any exchange (ATT_DEFAULT_MTU); what `mtu_size` reports if the exchange is refused.
DEFAULT_ATT_MTU: Final = 23
#: The MTU we ask for: large enough for a signed alert record (frame + 64-byte signature) in one read.
PREFERRED_ATT_MTU: Final = 247
#: Bytes of ATT header in a Write Command, subtracted from the MTU for `max_write_without_response_size`.
ATT_WRITE_HEADER_SIZE: Final = 3
