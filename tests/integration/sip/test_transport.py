from __future__ import annotations

import asyncio

import pytest

from voxflow.sip.transport import Address, FramingError, SipTransport, StreamFramer, transport_for


def message(body: bytes = b"", method: str = "OPTIONS") -> bytes:
    return (
        f"{method} sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_framer_cuts_a_stream_by_content_length() -> None:
    framer = StreamFramer()
    one, two = message(b"hello"), message(b"", "BYE")
    stream = b"\r\n" + one + two + b"\r\n\r\n"
    got: list[bytes] = []
    for i in range(0, len(stream), 7):  # arrives in small pieces
        got += framer.feed(stream[i : i + 7])
    assert got == [one, two]


def test_framer_understands_the_compact_form() -> None:
    data = b"BYE sip:a@b SIP/2.0\r\nl:  3\r\n\r\nabcBYE"
    assert StreamFramer().feed(data) == [b"BYE sip:a@b SIP/2.0\r\nl:  3\r\n\r\nabc"]


@pytest.mark.parametrize(
    "data",
    [
        b"BYE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n",
        b"X" * 70_000,
        b"A\r\nContent-Length: 99999\r\n\r\n",
    ],
)
def test_framer_refuses_what_cannot_be_framed(data: bytes) -> None:
    with pytest.raises(FramingError):
        StreamFramer().feed(data)


def test_large_messages_leave_udp_for_tcp() -> None:
    assert transport_for(1300, "udp") == "udp"
    assert transport_for(1301, "udp") == "tcp"
    assert transport_for(10, "tcp") == "tcp"


async def test_udp_and_tcp_between_two_transports() -> None:
    got_a: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
    got_b: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
    a = SipTransport(lambda d, s: got_a.put_nowait((d, s)))
    b = SipTransport(lambda d, s: got_b.put_nowait((d, s)))
    await a.start("127.0.0.1")
    await b.start("127.0.0.1")
    try:
        await a.send(message(b"over udp"), Address("127.0.0.1", b.port, "udp"))
        data, source = await asyncio.wait_for(got_b.get(), 5)
        assert data.endswith(b"over udp") and source == Address("127.0.0.1", a.port, "udp")

        big = message(b"x" * 5000)
        await a.send(big, Address("127.0.0.1", b.port, "tcp"))
        data, source = await asyncio.wait_for(got_b.get(), 5)
        assert data == big and source.transport == "tcp"
        # The answer goes back over the connection that the request came in on.
        await b.send(message(b"reply"), source)
        data, _ = await asyncio.wait_for(got_a.get(), 5)
        assert data.endswith(b"reply")
    finally:
        await a.close()
        await b.close()


async def test_a_stream_of_garbage_is_closed_and_the_transport_lives_on() -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()
    t = SipTransport(lambda d, s: got.put_nowait(d))
    await t.start("127.0.0.1")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
        writer.write(b"GARBAGE\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the transport
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
        writer.write(message(b"fine"))
        await writer.drain()
        assert (await asyncio.wait_for(got.get(), 5)).endswith(b"fine")
        writer.close()
    finally:
        await t.close()


async def test_a_port_taken_over_tcp_is_given_up_whole() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t = SipTransport(lambda d, s: None)
        with pytest.raises(OSError):
            await t.start("127.0.0.1", port)
        # The UDP half was closed again: the port is free for UDP.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", port))


async def test_port_zero_tries_again_when_tcp_has_the_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    t = SipTransport(lambda d, s: None)
    real_bind = t._bind
    calls: list[int] = []

    async def flaky_bind(host: str, port: int, *, tcp: bool) -> None:
        calls.append(port)
        if len(calls) == 1:
            raise OSError(errno.EADDRINUSE, "address already in use")
        await real_bind(host, port, tcp=tcp)

    monkeypatch.setattr(t, "_bind", flaky_bind)
    await t.start("127.0.0.1")
    try:
        assert calls == [0, 0] and t.port > 0
    finally:
        await t.close()
