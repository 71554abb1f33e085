"""A virtual wearable: device key and certificate, a crash-safe monotonic counter, signed alert frames."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware_sim import const
from firmware_sim.errors import DeviceStateError, EnrollmentError
from firmware_sim.transport import ClientCertificate
from gateway.identity.const import DEVICE_ID_PATTERN, DEVICE_URI_PREFIX
from gateway.location.model import CellObservation
from gateway.protocol import AlertFrame, EventType, Flags, GpsFix, sign_frame

#: A clock: milliseconds since the Unix epoch (UTC). Injected so that tests and faults can skew it.
Clock = Callable[[], int]

#: Turns the device's CSR into its certificate: the device CA (gateway.identity.pki) or a test CA.
Issuer = Callable[[x509.CertificateSigningRequest], x509.Certificate]


def wall_clock_ms() -> int:
    """The host's clock in milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


class VirtualWearable:
    """A wearable that signs alert frames with its own key.

    The counter is a high-water mark in the device directory's state file, written atomically and fsynced
    before any frame carrying a counter above it exists: a crash may skip counters, never reuse one.
    A wearable built without a directory (device_dir=None) keeps its counter in memory only; faults use that
    for throwaway devices.
    """

    def __init__(
        self,
        device_id: str,
        key: ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate,
        *,
        device_dir: Path | None,
        counter: int = 0,
        clock: Clock = wall_clock_ms,
        battery: int | None = const.DEFAULT_BATTERY_PERCENT,
        gps: GpsFix | None = None,
        cells: tuple[CellObservation, ...] = (),
        counter_block: int = 1,
    ) -> None:
        if counter_block < 1:
            raise ValueError("counter_block must be at least 1")
        self._device_id = device_id
        self._key = key
        self._certificate = certificate
        self._device_dir = device_dir
        self._counter = counter
        self._reserved = counter
        self._counter_block = counter_block
        self.clock = clock
        self.battery = battery
        self.gps = gps
        #: The cells the modem sees (serving first), sent in every frame; () sends no cells extension.
        self.cells = cells

    @classmethod
    def load(
        cls,
        device_dir: Path,
        *,
        clock: Clock = wall_clock_ms,
        battery: int | None = const.DEFAULT_BATTERY_PERCENT,
        gps: GpsFix | None = None,
        cells: tuple[CellObservation, ...] = (),
        counter_block: int = 1,
    ) -> VirtualWearable:
        """Open an enrolled device; raises DeviceStateError when the directory is missing, incomplete or corrupt."""
        state_path = device_dir / const.STATE_FILE
        if not state_path.is_file():
            raise DeviceStateError(f"{device_dir} holds no enrolled device (no {const.STATE_FILE})", device_dir)
        device_id, counter = _read_state(state_path)
        key = _read_key(device_dir / const.KEY_FILE)
        certificate = _read_certificate(device_dir / const.CERT_FILE)
        problem = _certificate_problem(certificate, device_id, key)
        if problem is not None:
            raise DeviceStateError(f"{device_dir / const.CERT_FILE}: {problem}", device_dir / const.CERT_FILE)
        return cls(
            device_id,
            key,
            certificate,
            device_dir=device_dir,
            counter=counter,
            clock=clock,
            battery=battery,
            gps=gps,
            cells=cells,
            counter_block=counter_block,
        )

    @property
    def device_id(self) -> str:
        """The certificate's CN, carried in every frame."""
        return self._device_id

    @property
    def device_dir(self) -> Path | None:
        """Where the key, certificate and counter live; None for an in-memory device."""
        return self._device_dir

    @property
    def certificate(self) -> x509.Certificate:
        """The device certificate."""
        return self._certificate

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The key the gateway verifies this device's frames with."""
        return self._key.public_key()

    @property
    def counter(self) -> int:
        """The last counter put in a frame (0 before the first frame)."""
        return self._counter

    @property
    def client_certificate(self) -> ClientCertificate:
        """Certificate and key files for mTLS; raises DeviceStateError for an in-memory device."""
        if self._device_dir is None:
            raise DeviceStateError(f"device {self._device_id} has no files to present for mTLS", Path())
        return ClientCertificate(self._device_dir / const.CERT_FILE, self._device_dir / const.KEY_FILE)

    def next_frame(self, event: EventType, *, flags: Flags = Flags.NONE) -> AlertFrame:
        """A frame with a fresh counter; the counter is durable before this returns."""
        return AlertFrame(
            device_id=self._device_id,
            counter=self._take_counter(),
            timestamp_ms=self.clock(),
            event=event,
            flags=flags,
            battery=self.battery,
            gps=self.gps,
            cells=self.cells,
        )

    def sign(self, frame: AlertFrame) -> bytes:
        """Sign any frame with the device key (faults use it to sign frames they altered)."""
        return sign_frame(frame, self._key)

    def signal(self, event: EventType, *, flags: Flags = Flags.NONE) -> bytes:
        """A signed frame for `event` with a fresh counter."""
        return self.sign(self.next_frame(event, flags=flags))

    def press(self, event: EventType = EventType.PANIC, *, silent: bool = False) -> bytes:
        """The wearer pressed the button (or the device detected a fall: event=FALL)."""
        return self.signal(event, flags=Flags.SILENT if silent else Flags.NONE)

    def cancel(self) -> bytes:
        """The wearer cancelled the alarm."""
        return self.signal(EventType.CANCEL)

    def heartbeat(self) -> bytes:
        """The periodic "still alive" signal."""
        return self.signal(EventType.HEARTBEAT)

    def test(self) -> bytes:
        """A test alarm: raises an incident the operator knows to be a drill."""
        return self.signal(EventType.TEST)

    def _take_counter(self) -> int:
        counter = self._counter + 1
        if counter > const.MAX_COUNTER:
            raise DeviceStateError(
                f"device {self._device_id} used every counter: enroll it again under a new id",
                self._device_dir or Path(),
            )
        if counter > self._reserved:
            reserved = min(self._counter + self._counter_block, const.MAX_COUNTER)
            if self._device_dir is not None:
                _write_state(self._device_dir / const.STATE_FILE, self._device_id, reserved)
            self._reserved = reserved
        self._counter = counter
        return counter


def enroll(
    device_dir: Path,
    device_id: str,
    issue: Issuer,
    *,
    clock: Clock = wall_clock_ms,
    battery: int | None = const.DEFAULT_BATTERY_PERCENT,
    gps: GpsFix | None = None,
    cells: tuple[CellObservation, ...] = (),
    counter_block: int = 1,
) -> VirtualWearable:
    """Make a device: key (mode 0600), CSR (CN and SAN urn:dev:<id>), certificate from `issue`, counter 0.

    The state file is written last, so its presence marks a complete enrolment. Raises EnrollmentError when
    the directory already holds a device or the certificate does not match the request.
    """
    if not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise EnrollmentError(f"device id {device_id!r} is not 1-32 characters of [A-Za-z0-9._-]")
    if (device_dir / const.STATE_FILE).exists():
        raise EnrollmentError(f"{device_dir} already holds an enrolled device")
    if (device_dir / const.KEY_FILE).exists():
        raise EnrollmentError(f"{device_dir} holds an incomplete enrolment: remove it and enroll again")
    device_dir.mkdir(mode=const.DEVICE_DIR_MODE, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomic(device_dir / const.KEY_FILE, key_pem, const.KEY_FILE_MODE)
    csr = make_csr(device_id, key)
    _write_atomic(device_dir / const.CSR_FILE, csr.public_bytes(serialization.Encoding.PEM), const.PUBLIC_FILE_MODE)
    certificate = issue(csr)
    problem = _certificate_problem(certificate, device_id, key)
    if problem is not None:
        raise EnrollmentError(f"the issuer's certificate is unusable: {problem}")
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    _write_atomic(device_dir / const.CERT_FILE, cert_pem, const.PUBLIC_FILE_MODE)
    _write_state(device_dir / const.STATE_FILE, device_id, 0)
    return VirtualWearable(
        device_id,
        key,
        certificate,
        device_dir=device_dir,
        clock=clock,
        battery=battery,
        gps=gps,
        cells=cells,
        counter_block=counter_block,
    )


def make_csr(device_id: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    """The request a device sends at enrolment: its id as CN and as a urn:dev SAN URI."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(DEVICE_URI_PREFIX + device_id)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def _certificate_problem(certificate: x509.Certificate, device_id: str, key: ec.EllipticCurvePrivateKey) -> str | None:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = names[0].value if names else None
    if cn != device_id:
        return f"its CN is {cn!r}, not {device_id!r}"
    if certificate.public_key() != key.public_key():
        return "it certifies another key than the device's"
    return None


def _read_state(path: Path) -> tuple[str, int]:
    try:
        state = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DeviceStateError(f"{path}: cannot read the device state: {exc}", path) from None
    if not isinstance(state, dict) or state.get("version") != const.STATE_VERSION:
        raise DeviceStateError(f"{path}: not a version {const.STATE_VERSION} device state", path)
    device_id, counter = state.get("device_id"), state.get("counter")
    if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise DeviceStateError(f"{path}: device_id is missing or invalid", path)
    # bool is an int subclass; a state file saying `true` is corrupt, not counter 1.
    if not isinstance(counter, int) or isinstance(counter, bool) or not 0 <= counter <= const.MAX_COUNTER:
        raise DeviceStateError(f"{path}: counter is missing or not 0..{const.MAX_COUNTER}", path)
    return device_id, counter


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise DeviceStateError(f"{path}: cannot read the device key: {exc}", path) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise DeviceStateError(f"{path}: the device key is not an ECDSA P-256 key", path)
    return key


def _read_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DeviceStateError(f"{path}: cannot read the device certificate: {exc}", path) from None


def _write_state(path: Path, device_id: str, counter: int) -> None:
    state = {"version": const.STATE_VERSION, "device_id": device_id, "counter": counter}
    _write_atomic(path, json.dumps(state).encode() + b"\n", const.PUBLIC_FILE_MODE)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new content, both on disk."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a leftover from a crash may carry another mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    # The rename itself is durable only once the directory entry is.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
