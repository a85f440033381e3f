"""A TDS peer that refuses every login, so the real FreeTDS driver raises its real login errors.

It speaks just enough of the protocol (MS-TDS for 7.x, Sybase TDS 5.0) to answer a login with
the server messages given, as SQL Server or SAP ASE would; no query ever runs.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from typing import NamedTuple

PRELOGIN, LOGIN7, LOGIN5, REPLY = 0x12, 0x10, 0x02, 0x04
LAST_PACKET = 0x01
DONE_ERROR = 0x0002
ENCRYPT_NOT_SUPPORTED = b"\x02"
LOGIN_FAILED = 6  # TDS 5.0 LOGINACK status


class ServerMessage(NamedTuple):
    number: int
    text: str
    severity: int = 14
    state: int = 1


@contextlib.contextmanager
def refusing_tds_server(messages: Sequence[ServerMessage], *, tds_version: str) -> Iterator[int]:
    """A loopback port whose server answers each login with `messages` and a failed login."""
    server = socket.create_server(("127.0.0.1", 0))
    reply = _refusal_7(messages) if tds_version.startswith("7") else _refusal_5(messages)

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            with client:
                _answer(client, reply)

    threading.Thread(target=serve, name="refusing TDS server", daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()


def _answer(client: socket.socket, refusal: bytes) -> None:
    while (received := _read_packet(client)) is not None:
        kind, status = received
        if kind == PRELOGIN:
            client.sendall(_packet(REPLY, _prelogin_reply()))
        elif kind in (LOGIN7, LOGIN5) and status & LAST_PACKET:
            client.sendall(_packet(REPLY, refusal))
            return  # the server closes the connection after refusing the login


def _read_packet(client: socket.socket) -> tuple[int, int] | None:
    header = _read(client, 8)
    if header is None:
        return None
    kind, status, length = struct.unpack(">BBH", header[:4])
    return None if _read(client, length - 8) is None else (kind, status)


def _read(client: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = client.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _packet(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBHHBB", kind, LAST_PACKET, 8 + len(payload), 0, 1, 0) + payload


def _prelogin_reply() -> bytes:
    """VERSION and ENCRYPTION (not supported), so the login follows unencrypted."""
    options = [(0x00, b"\x10\x00\x00\x00\x00\x00"), (0x01, ENCRYPT_NOT_SUPPORTED)]
    offset, heads, data = 5 * len(options) + 1, b"", b""
    for token, value in options:
        heads += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    return heads + b"\xff" + data


def _refusal_7(messages: Sequence[ServerMessage]) -> bytes:
    """ERROR tokens (MS-TDS 2.2.7.10) and a DONE with the error bit."""
    tokens = b""
    for m in messages:
        body = struct.pack("<iBB", m.number, m.state, m.severity) + _us_varchar(m.text)
        body += _b_varchar("FAKE") + _b_varchar("") + struct.pack("<i", 1)
        tokens += b"\xaa" + struct.pack("<H", len(body)) + body
    return tokens + b"\xfd" + struct.pack("<HHq", DONE_ERROR, 0, 0)


def _refusal_5(messages: Sequence[ServerMessage]) -> bytes:
    """EED tokens, a LOGINACK that says the login failed, and a DONE with the error bit."""
    tokens = b""
    for m in messages:
        text = m.text.encode()
        body = struct.pack("<iBB", m.number, m.state, m.severity) + b"\x05ZZZZZ" + b"\x00\x00\x00"
        body += struct.pack("<H", len(text)) + text + b"\x04FAKE" + b"\x00" + struct.pack("<H", 1)
        tokens += b"\xe5" + struct.pack("<H", len(body)) + body
    ack = bytes([LOGIN_FAILED]) + b"\x05\x00\x00\x00" + b"\x03ASE" + b"\x0f\x07\x00\x00"
    tokens += b"\xad" + struct.pack("<H", len(ack)) + ack
    return tokens + b"\xfd" + struct.pack("<HHi", DONE_ERROR, 0, 0)


def _us_varchar(text: str) -> bytes:
    return struct.pack("<H", len(text)) + text.encode("utf-16-le")


def _b_varchar(text: str) -> bytes:
    return struct.pack("<B", len(text)) + text.encode("utf-16-le")
