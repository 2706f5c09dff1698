"""The asyncio edge of the SIP stack: one transport, one transaction layer, many dialogs.

The user agent turns bytes into parsed messages, feeds them to the sans-IO transaction layer
and dialogs, and carries out the actions they return: sending, arming timers on the event
loop, delivering responses to whoever sent the request. It knows nothing of calls: a client
awaits :meth:`UserAgent.request`; an in-dialog peer request goes to the dialog's owner; any
other new request goes to the ``on_request`` handler (the softphone) or is refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from voxflow.sip.dialog import (
    AckMissing,
    ArmTimer,
    Dialog,
    DialogAction,
    DialogId,
    DialogTimer,
    DisarmTimer,
    Ended,
    Respond,
    SendAck,
)
from voxflow.sip.message import MessageError, SipRequest, SipResponse, make_response, parse_message
from voxflow.sip.transaction import (
    DEFAULT_TIMERS,
    Action,
    Deliver,
    Send,
    StartTimer,
    StopTimer,
    TimedOut,
    Timer,
    TimerSettings,
    TransactionError,
    TransactionKey,
    TransactionLayer,
    TransportError,
)
from voxflow.sip.transport import Address, SipTransport
from voxflow.sip.wheel import TimerWheel

log = logging.getLogger("voxflow.sip.ua")


@dataclass(frozen=True)
class Final:
    """How a request ended: its final response, or a local timeout / transport failure."""

    response: SipResponse | None
    timed_out: bool = False
    transport_failed: bool = False
    received_at: float = 0.0


Provisional = Callable[[SipResponse, float], None]
RequestHandler = Callable[[SipRequest, Address], None]


@dataclass
class _Client:
    future: asyncio.Future[Final]
    on_provisional: Provisional | None


@dataclass
class DialogOwner:
    """What the UA needs to serve a dialog: where its requests go and who to tell."""

    dialog: Dialog
    destination: Address
    current_sdp: Callable[[], bytes | None] = lambda: None
    on_ended: Callable[[str], None] = lambda _reason: None
    on_request: Callable[[SipRequest], None] = lambda _request: None
    timers: dict[DialogTimer, asyncio.TimerHandle] = field(default_factory=dict)


class UserAgent:
    def __init__(
        self, *, timers: TimerSettings = DEFAULT_TIMERS, on_request: RequestHandler | None = None
    ) -> None:
        self.transport = SipTransport(self._on_bytes)
        self.layer = TransactionLayer(timers)
        self.on_request = on_request
        self._clients: dict[TransactionKey, _Client] = {}
        self._timers: TimerWheel[tuple[TransactionKey, Timer]] | None = None
        self._dialogs: dict[DialogId, DialogOwner] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sending: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ life

    async def start(self, host: str, port: int = 0, *, tcp: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        self._timers = TimerWheel(self._loop, self._timer_fired)
        await self.transport.start(host, port, tcp=tcp)

    @property
    def host(self) -> str:
        return self.transport.host

    @property
    def port(self) -> int:
        return self.transport.port

    async def close(self) -> None:
        if self._timers is not None:
            self._timers.close()
        for owner in self._dialogs.values():
            for handle in owner.timers.values():
                handle.cancel()
        for client in self._clients.values():
            if not client.future.done():
                client.future.set_result(Final(None, transport_failed=True))
        await self.transport.close()

    def now(self) -> float:
        return self.loop.time()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("user agent not started")
        return self._loop

    # ------------------------------------------------------------------ client side

    async def request(
        self, request: SipRequest, destination: Address, on_provisional: Provisional | None = None
    ) -> Final:
        """Send a request in a new client transaction; return its final outcome."""
        future: asyncio.Future[Final] = self.loop.create_future()
        key = TransactionKey.for_client(request)
        self._clients[key] = _Client(future, on_provisional)
        self._run(self.layer.send_request(request, destination, self.now()))
        try:
            return await future
        finally:
            self._clients.pop(key, None)

    def give_up(self, request: SipRequest) -> None:
        """End a pending request as timed out: RFC 3261 §9.1, no final response 64*T1 after
        our CANCEL. Its transaction is left to its own timers."""
        self._finish(
            TransactionKey.for_client(request), Final(None, timed_out=True, received_at=self.now())
        )

    def send_ack(self, ack: SipRequest, destination: Address) -> None:
        """An ACK for a 2xx goes straight to the transport (§13.2.2.4)."""
        self._transmit(bytes(ack), destination, None)

    def send_response(self, response: SipResponse) -> None:
        try:
            self._run(self.layer.send_response(response, self.now()))
        except TransactionError as exc:  # its transaction is gone (a late answer)
            log.info("response not sent: %s", exc)

    # ------------------------------------------------------------------ dialogs

    def add_dialog(self, owner: DialogOwner) -> None:
        self._dialogs[owner.dialog.id] = owner

    def remove_dialog(self, dialog: Dialog) -> None:
        owner = self._dialogs.pop(dialog.id, None)
        if owner is not None:
            for handle in owner.timers.values():
                handle.cancel()

    def _dialog_actions(self, owner: DialogOwner, actions: list[DialogAction]) -> None:
        for action in actions:
            if isinstance(action, Respond):
                self.send_response(action.response)
            elif isinstance(action, SendAck):
                self.send_ack(action.ack, owner.destination)
            elif isinstance(action, ArmTimer):
                self._arm_dialog_timer(owner, action)
            elif isinstance(action, DisarmTimer):
                handle = owner.timers.pop(action.timer, None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(action, Ended):
                self.remove_dialog(owner.dialog)
                owner.on_ended(action.reason)
            elif isinstance(action, AckMissing):
                owner.on_ended("no ACK for our 2xx")

    def _arm_dialog_timer(self, owner: DialogOwner, action: ArmTimer) -> None:
        old = owner.timers.pop(action.timer, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            owner.timers.pop(action.timer, None)
            self._dialog_actions(owner, owner.dialog.timer_fired(action.timer, self.now()))

        owner.timers[action.timer] = self.loop.call_at(action.at, fire)

    # ------------------------------------------------------------------ input

    def _on_bytes(self, data: bytes, source: Address) -> None:
        try:
            message = parse_message(data)
        except MessageError as exc:
            log.info("dropping a malformed message from %s: %s", source, exc)
            return
        if isinstance(message, SipRequest) and message.method != "ACK":
            rejection = message.validate()
            if rejection is not None:
                self._reject(message, source, rejection.status, rejection.reason)
                return
        self._run(self.layer.receive(message, source, self.now()))

    def _reject(self, request: SipRequest, source: Address, status: int, reason: str) -> None:
        try:
            response = make_response(request, status, reason)
        except (MessageError, ValueError):
            log.info("dropping an unanswerable request from %s", source)
            return
        self._transmit(bytes(response), source, None)

    # ------------------------------------------------------------------ actions

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._transmit(bytes(action.message), _address(action.destination), action.key)
            elif isinstance(action, StartTimer):
                self._start_timer(action)
            elif isinstance(action, StopTimer):
                self.timers.stop((action.key, action.timer))
            elif isinstance(action, Deliver):
                self._deliver(action)
            elif isinstance(action, TimedOut):
                self._finish(action.key, Final(None, timed_out=True, received_at=self.now()))
            elif isinstance(action, TransportError):
                self._finish(action.key, Final(None, transport_failed=True, received_at=self.now()))

    @property
    def timers(self) -> TimerWheel[tuple[TransactionKey, Timer]]:
        """The transaction timers that are running."""
        if self._timers is None:
            raise RuntimeError("user agent not started")
        return self._timers

    def _start_timer(self, action: StartTimer) -> None:
        self.timers.start((action.key, action.timer), action.at)

    def _timer_fired(self, slot: tuple[TransactionKey, Timer]) -> None:
        self._run(self.layer.timer_fired(slot[0], slot[1], self.now()))

    def _transmit(self, data: bytes, destination: Address, key: TransactionKey | None) -> None:
        if destination.transport == "udp":  # no connection to wait for: send it now
            try:
                self.transport.send_datagram(data, destination)
            except OSError as exc:
                log.info("cannot send to %s: %s", destination, exc)
                if key is not None:  # not inside the actions being carried out
                    self.loop.call_soon(self._transport_error, key)
            return

        async def send() -> None:
            try:
                await self.transport.send(data, destination)
            except OSError as exc:
                log.info("cannot send to %s: %s", destination, exc)
                if key is not None:
                    self._run(self.layer.transport_error(key, self.now()))

        task = self.loop.create_task(send())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _transport_error(self, key: TransactionKey) -> None:
        self._run(self.layer.transport_error(key, self.now()))

    def _finish(self, key: TransactionKey, final: Final) -> None:
        client = self._clients.get(key)
        if client is not None and not client.future.done():
            client.future.set_result(final)

    def _deliver(self, action: Deliver) -> None:
        message = action.message
        if isinstance(message, SipResponse):
            self._deliver_response(action.key, message)
        else:
            self._deliver_request(message)

    def _deliver_response(self, key: TransactionKey | None, response: SipResponse) -> None:
        now = self.now()
        client = self._clients.get(key) if key is not None else None
        if client is None:
            # A 2xx retransmission after its transaction ended: the dialog re-ACKs it.
            owner = self._owner_of(response) if response.success else None
            if owner is not None:
                self._dialog_actions(owner, owner.dialog.receive_response(response, now))
            return
        if response.provisional:
            if client.on_provisional is not None:
                client.on_provisional(response, now)
        elif not client.future.done():
            client.future.set_result(Final(response, received_at=now))
        elif response.success:
            owner = self._owner_of(response)
            if owner is not None:  # another 2xx copy: the same ACK again
                self._dialog_actions(owner, owner.dialog.receive_response(response, now))

    def _owner_of(self, response: SipResponse) -> DialogOwner | None:
        dialog_id = DialogId.of_response(response)
        return self._dialogs.get(dialog_id) if dialog_id is not None else None

    def _deliver_request(self, request: SipRequest) -> None:
        dialog_id = DialogId.of_request(request)
        owner = self._dialogs.get(dialog_id) if dialog_id is not None else None
        if owner is not None:
            owner.on_request(request)
            sdp = owner.current_sdp() if request.method in ("INVITE", "UPDATE") else None
            self._dialog_actions(owner, owner.dialog.receive_request(request, self.now(), sdp=sdp))
            return
        if self.on_request is not None:
            self.on_request(request, _address_of_via(request))
            return
        if request.method == "ACK":
            return
        status = 481 if dialog_id is not None or request.method in ("BYE", "CANCEL") else 405
        self.send_response(make_response(request, status))


def _address(destination: object) -> Address:
    if isinstance(destination, Address):
        return destination
    ip, port, transport = (getattr(destination, name) for name in ("ip", "port", "transport"))
    return Address(str(ip), int(port), str(transport))


def _address_of_via(request: SipRequest) -> Address:
    via = request.via
    host = via.received or via.host
    port = via.rport or via.port or 5060
    return Address(host, port, via.transport.lower())
