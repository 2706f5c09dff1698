"""SIP transports: the only place that opens SIP sockets (RFC 3261 §18).

One :class:`SipTransport` owns a UDP socket and a TCP listener on the same local address, plus
the TCP connections it opened or accepted. It moves whole messages as bytes: UDP datagrams as
they are, TCP streams cut into messages by Content-Length (§18.3). Parsing is the caller's.
A stream that cannot be framed is closed with a log line; nothing a peer sends raises here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("voxflow.sip.transport")

# RFC 3261 §18.1.1: a request within 200 bytes of the path MTU (1500) must go over TCP.
UDP_MAX_BYTES = 1300
MAX_MESSAGE_BYTES = 65_535
BIND_ATTEMPTS = 20
UDP_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
_HEADER_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", re.I | re.M)


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    transport: str = "udp"  # "udp" | "tcp"

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


Receiver = Callable[[bytes, Address], None]


class FramingError(Exception):
    """A TCP stream that cannot be cut into SIP messages."""


def transport_for(size: int, wanted: str) -> str:
    """The transport a message of ``size`` bytes must use when ``wanted`` is asked (§18.1.1)."""
    return "tcp" if wanted == "udp" and size > UDP_MAX_BYTES else wanted


class StreamFramer:
    """Cuts a byte stream into SIP messages by Content-Length (RFC 3261 §18.3)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while True:
            # Keep-alive CRLFs between messages (RFC 5626 §3.5.1) are skipped.
            self._buffer = self._buffer.lstrip(b"\r\n")
            end = self._buffer.find(_HEADER_END)
            if end < 0:
                if len(self._buffer) > MAX_MESSAGE_BYTES:
                    raise FramingError("header section too long")
                return messages
            head = self._buffer[:end]
            match = _CONTENT_LENGTH.search(head.replace(b"\r\n", b"\n"))
            if match is None:
                raise FramingError("no Content-Length on a stream transport")
            total = end + len(_HEADER_END) + int(match.group(1))
            if total > MAX_MESSAGE_BYTES:
                raise FramingError("message too long")
            if len(self._buffer) < total:
                return messages
            messages.append(self._buffer[:total])
            self._buffer = self._buffer[total:]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if data.strip(b"\r\n"):  # a bare CRLF is a keep-alive
            self.owner.deliver(data, Address(str(addr[0]), int(str(addr[1])), "udp"))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the transaction's timers report the failure.
        log.debug("udp error: %s", exc)


class _TcpConnection:
    def __init__(
        self, owner: SipTransport, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.owner = owner
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = Address(str(peer[0]), int(peer[1]), "tcp")
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        framer = StreamFramer()
        try:
            while data := await self.reader.read(65536):
                for message in framer.feed(data):
                    self.owner.deliver(message, self.peer)
        except FramingError as exc:
            log.warning("closing tcp connection from %s: %s", self.peer, exc)
        except (ConnectionError, OSError) as exc:
            log.debug("tcp connection %s: %s", self.peer, exc)
        finally:
            self.owner.forget(self)
            self.writer.close()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def close(self) -> None:
        self.task.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class SipTransport:
    """UDP and TCP on one local address. ``receiver(data, source)`` gets every message."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.host = ""
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[tuple[str, int], _TcpConnection] = {}

    async def start(self, host: str, port: int = 0, *, tcp: bool = True) -> None:
        """Bind UDP (and TCP on the same port) to ``host:port``; port 0 picks a free one.

        With port 0 the UDP port is picked first; when TCP cannot have the same number (a TCP
        socket already uses it), both are given up and another port is tried.
        """
        attempts = BIND_ATTEMPTS if port == 0 else 1
        for attempt in range(attempts):
            try:
                await self._bind(host, port, tcp=tcp)
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                    raise

    async def _bind(self, host: str, port: int, *, tcp: bool) -> None:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, port))
        sock = udp.get_extra_info("socket")
        if sock is not None:
            # Answers to a burst of INVITEs arrive together: a large buffer keeps them.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER_BYTES)
        bound_host, bound_port = udp.get_extra_info("sockname")[:2]
        if tcp:
            try:
                self._server = await asyncio.start_server(self._accepted, bound_host, bound_port)
            except OSError:
                udp.close()
                await asyncio.sleep(0)  # the socket closes on the loop's next turn
                raise
        self._udp = udp
        self.host, self.port = bound_host, bound_port

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _TcpConnection(self, reader, writer)
        self._connections[(conn.peer.host, conn.peer.port)] = conn

    def deliver(self, data: bytes, source: Address) -> None:
        try:
            self.receiver(data, source)
        except Exception:  # a bug in a receiver must not kill the socket
            log.exception("error handling a message from %s", source)

    def forget(self, conn: _TcpConnection) -> None:
        key = (conn.peer.host, conn.peer.port)
        if self._connections.get(key) is conn:
            del self._connections[key]

    async def send(self, data: bytes, dest: Address) -> None:
        """Send one message; TCP connects first when no connection to ``dest`` is open."""
        if dest.transport == "udp":
            self.send_datagram(data, dest)
            return
        conn = self._connections.get((dest.host, dest.port))
        if conn is None:
            reader, writer = await asyncio.open_connection(dest.host, dest.port)
            conn = _TcpConnection(self, reader, writer)
            self._connections[(dest.host, dest.port)] = conn
        conn.send(data)

    def send_datagram(self, data: bytes, dest: Address) -> None:
        """Send one message over UDP, at once."""
        if self._udp is None:
            raise ConnectionError("transport not started")
        self._udp.sendto(data, (dest.host, dest.port))

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections.values()):
            await conn.close()
        self._connections.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
