"""The user agent against a raw UDP peer on loopback: what happens to a finished INVITE while
its transaction waits out timer M (RFC 6026) or D, after the transaction dropped its request."""

from __future__ import annotations

import asyncio
from typing import cast

from voxflow.sip.dialog import Dialog, SendAck
from voxflow.sip.message import (
    SipRequest,
    SipResponse,
    Via,
    make_request,
    make_response,
    parse_message,
)
from voxflow.sip.transaction import State, TransactionKey
from voxflow.sip.transport import Address
from voxflow.sip.uri import NameAddress, Params, SipUri
from voxflow.sip.useragent import DialogOwner, UserAgent


class RawPeer(asyncio.DatagramProtocol):
    """A UDP socket that hands every datagram to the test."""

    def __init__(self) -> None:
        self.got: asyncio.Queue[SipRequest | SipResponse] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.ua_address: tuple[str, int] = ("127.0.0.1", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.got.put_nowait(parse_message(data))

    def send(self, message: SipResponse) -> None:
        assert self.transport is not None
        self.transport.sendto(bytes(message), self.ua_address)

    async def next(self) -> SipRequest | SipResponse:
        return await asyncio.wait_for(self.got.get(), 10)


async def start(ua: UserAgent) -> tuple[RawPeer, Address]:
    await ua.start("127.0.0.1", 0, tcp=False)
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(RawPeer, local_addr=("127.0.0.1", 0))
    assert peer.transport is not None
    port = peer.transport.get_extra_info("sockname")[1]
    peer.ua_address = ("127.0.0.1", ua.port)
    return peer, Address("127.0.0.1", port, "udp")


def invite(ua: UserAgent, peer: Address) -> SipRequest:
    return make_request(
        "INVITE",
        SipUri(host=peer.host, port=peer.port, user="1000"),
        from_=NameAddress(SipUri(host=ua.host, user="441234567890")),
        to=NameAddress(SipUri(host=peer.host, user="1000")),
        via=Via(host=ua.host, port=ua.port, params=Params([("rport", None)])),
        contact=NameAddress(SipUri(host=ua.host, port=ua.port)),
    )


async def test_retransmitted_2xx_is_re_acked_after_the_invite_is_forgotten() -> None:
    ua = UserAgent()
    peer, address = await start(ua)
    try:
        request = invite(ua, address)
        call = asyncio.create_task(ua.request(request, address))
        got = await peer.next()
        assert isinstance(got, SipRequest) and got.method == "INVITE"
        ok = make_response(
            got, 200, to_tag="uas", contact=NameAddress(SipUri(host="127.0.0.1", port=address.port))
        )
        peer.send(ok)
        final = await call
        assert final.response is not None and final.response.status == 200
        (ict,) = ua.layer.clients.values()
        assert ict.state is State.ACCEPTED and ict._request is None  # waits out timer M slim
        assert list(ua.layer.clients) == [TransactionKey.for_client(request)]
        # The caller's dialog ACKs the 2xx (§13.2.2.4) ...
        dialog = Dialog.from_response(request, final.response)
        ua.add_dialog(DialogOwner(dialog, address))
        for action in dialog.receive_response(final.response, ua.now()):
            assert isinstance(action, SendAck)
            ua.send_ack(action.ack, address)
        first = await peer.next()
        assert isinstance(first, SipRequest) and first.method == "ACK"
        # ... and every copy of the 2xx that comes later gets the same ACK again.
        for _ in range(2):
            peer.send(ok)
            again = await peer.next()
            assert isinstance(again, SipRequest) and again.method == "ACK"
            assert bytes(again) == bytes(first)
        assert len(ua.timers) == 1  # timer M, and nothing else, still runs
    finally:
        await ua.close()
        assert peer.transport is not None
        peer.transport.close()


async def test_retransmitted_busy_is_re_acked_by_the_completed_transaction() -> None:
    ua = UserAgent()
    peer, address = await start(ua)
    try:
        request = invite(ua, address)
        call = asyncio.create_task(ua.request(request, address))
        got = await peer.next()
        assert isinstance(got, SipRequest)
        busy = make_response(got, 486, to_tag="uas")
        peer.send(busy)
        final = await call
        assert final.response is not None and final.response.status == 486
        first = await peer.next()
        assert isinstance(first, SipRequest) and first.method == "ACK"
        (ict,) = ua.layer.clients.values()
        assert ict.state is State.COMPLETED and ict._request is None  # waits out timer D slim
        for _ in range(2):  # our ACK was "lost": the UAS repeats its 486
            peer.send(busy)
            again = await peer.next()
            assert isinstance(again, SipRequest) and bytes(again) == bytes(first)
    finally:
        await ua.close()
        assert peer.transport is not None
        peer.transport.close()
