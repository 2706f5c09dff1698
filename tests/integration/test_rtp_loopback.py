"""Two real RTP sessions on 127.0.0.1, ticking on one shared media clock.

The caller plays a tone and sends keypresses ``1`` and ``2``; the callee records, decodes the
keypresses and captures every datagram at its protocol level, so the RFC 4733 wire rules,
sequence/timestamp continuity, symmetric-RTP latching and idle silence are checked on what
really crossed the socket.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest

from voxflow.media import g711
from voxflow.media.clock import MediaClock
from voxflow.media.dtmf import TelephoneEvent
from voxflow.media.player import Player
from voxflow.media.recorder import Recorder
from voxflow.media.rtp import RtpPacket, seq_add, seq_diff, ts_diff
from voxflow.media.session import RtpSession
from voxflow.sip import sdp

LOCALHOST = "127.0.0.1"
WAIT_S = 10.0  # a bound for "never happens", not a timing assertion
TONE_HZ = 440


class CapturingSession(RtpSession):
    """An RTP session that also keeps every datagram it receives, as parsed packets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.captured: list[tuple[RtpPacket, tuple[str, int]]] = []
        self.changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.captured.append((RtpPacket.parse(data), (addr[0], addr[1])))
        super().datagram_received(data, addr)
        self.changed.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


class Collector(asyncio.DatagramProtocol):
    """A socket that only counts what arrives (the "wrong" SDP address)."""

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.packets.append(RtpPacket.parse(data))


def tone_pcm(seconds: float) -> np.ndarray[Any, np.dtype[np.int16]]:
    t = np.arange(int(8000 * seconds)) / 8000
    return (10000 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)


def dominant_hz(pcm: np.ndarray[Any, np.dtype[np.int16]]) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.fft.rfftfreq(len(pcm), 1 / 8000)[int(np.argmax(spectrum))])


@asynccontextmanager
async def running_clock() -> Any:
    clock = MediaClock()
    clock.start()
    try:
        yield clock
    finally:
        await clock.stop()


def events_by_timestamp(
    packets: list[RtpPacket],
) -> Iterator[tuple[int, list[RtpPacket]]]:
    groups: dict[int, list[RtpPacket]] = {}
    for packet in packets:
        groups.setdefault(packet.timestamp, []).append(packet)
    yield from groups.items()


async def test_tone_keypresses_latching_and_silence() -> None:
    loop = asyncio.get_running_loop()
    async with running_clock() as clock:
        caller = await RtpSession.open(clock, LOCALHOST, 0, name="caller")
        callee = await CapturingSession.open(clock, LOCALHOST, 0, name="callee")
        assert isinstance(callee, CapturingSession)
        wrong, collector = await loop.create_datagram_endpoint(Collector, local_addr=(LOCALHOST, 0))
        try:
            offer = sdp.make_offer(LOCALHOST, caller.local_address[1], session_id=1)
            answer, theirs = sdp.answer_for(offer, LOCALHOST, callee.local_address[1])
            ours = sdp.negotiate(offer, sdp.parse(bytes(answer)))
            # The callee believes the caller is elsewhere (as behind a NAT): it must latch.
            wrong_port = wrong.get_extra_info("sockname")[1]
            callee.start(dataclasses.replace(theirs, remote=(LOCALHOST, wrong_port)))
            recorder = Recorder()
            callee.add_audio_sink(recorder.write)

            player = Player(tone_pcm(0.3))
            caller.play(player)
            caller.start(ours)
            await callee.wait_until(lambda: len(callee.captured) >= 5)
            first = await caller.send_keypress("1", tone_ms=200)
            second = await caller.send_keypress("2", tone_ms=120)
            heard = [await asyncio.wait_for(callee.keypresses.get(), WAIT_S) for _ in range(2)]
            await asyncio.wait_for(player.wait(), WAIT_S)
            sent_so_far = caller.stats.packets_sent
            # Idle: a few more ticks' worth of packets must arrive, all silence.
            await callee.wait_until(
                lambda: (
                    sum(1 for _, addr in callee.captured if addr == caller.local_address)
                    >= sent_so_far + 5
                )
            )
        finally:
            caller.close()
            callee.close()
            wrong.close()
        await asyncio.wait_for(caller.wait_closed(), WAIT_S)
        await asyncio.wait_for(callee.wait_closed(), WAIT_S)
        # On a loaded machine the clock may skip ticks after a stall; RTP time then jumps by the
        # ticks skipped while sequence numbers do not. Without a stall both move in step.
        slack = 160 * clock.stats.skipped

    from_caller = [p for p, addr in callee.captured if addr == caller.local_address]
    assert len(from_caller) == len(callee.captured)

    # Keypresses: order, durations within one packet, planned vs actual times recorded.
    assert [k.key for k in heard] == ["1", "2"]
    assert abs(heard[0].duration_ms - 200) <= 20
    assert abs(heard[1].duration_ms - 120) <= 20
    assert all(k.ended and k.marker_seen for k in heard)
    assert first.completed and second.completed
    assert first.started_at is not None and first.finished_at is not None
    assert second.started_at is not None
    assert first.requested_at <= first.started_at < first.finished_at <= second.started_at
    assert heard[0].start_time >= first.started_at  # causality only, no wall-clock bounds

    # RFC 4733 on the wire.
    dtmf = [p for p in from_caller if p.payload_type == ours.dtmf_payload_type]
    events = list(events_by_timestamp(dtmf))
    assert len(events) == 2
    for (_, packets), tone_ms in zip(events, (200, 120), strict=True):
        payloads = [TelephoneEvent.parse(p.payload) for p in packets]
        assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
        durations = [e.duration for e in payloads]
        assert durations[:-3] == [160 * (i + 1) for i in range(len(durations) - 3)]
        assert durations[-3:] == [tone_ms * 8] * 3
        assert [e.end for e in payloads] == [False] * (len(payloads) - 3) + [True] * 3
    # "2" began on the tick after the third end packet of "1" (12 packets of 20 ms).
    assert 0 <= ts_diff(events[1][0], events[0][0]) - 12 * 160 <= slack

    # One stream: sequence numbers consecutive through audio, keypresses and silence; RTP time
    # one frame per tick, the keypress ticks included.
    assert [p.sequence_number for p in from_caller] == [
        seq_add(from_caller[0].sequence_number, i) for i in range(len(from_caller))
    ]
    audio = [p for p in from_caller if p.payload_type == ours.payload_type]
    for a, b in itertools.pairwise(audio):
        assert ts_diff(b.timestamp, a.timestamp) >= 160 * seq_diff(
            b.sequence_number, a.sequence_number
        )
    span = ts_diff(audio[-1].timestamp, audio[0].timestamp)
    assert 0 <= span - 160 * (len(from_caller) - 1) <= slack
    after = next(p for p in audio if ts_diff(p.timestamp, events[1][0]) > 0)
    assert 0 <= ts_diff(after.timestamp, events[1][0]) - 8 * 160 <= slack  # 120 ms: 8 packets
    assert sum(p.marker for p in audio) == 1 and audio[0].marker

    # Idle: after the tone and the keypresses, only encoded silence.
    assert all(p.payload == g711.silence(ours.codec) for p in from_caller[sent_so_far:])

    # The tone arrived (recorded and decoded), minus the ticks spent on keypresses.
    recorded = recorder.pcm()
    assert dominant_hz(recorded[: 160 * 5]) == pytest.approx(TONE_HZ, abs=50)
    assert recorder.duration_ms == 20 * len(audio)

    # Symmetric RTP: the callee sent to the SDP address only until the caller's RTP arrived.
    assert callee.latched
    assert callee.remote_address == caller.local_address
    assert 1 <= len(collector.packets) <= 1 + clock.max_lag_ticks  # one, unless a catch-up burst
    assert caller.stats.packets_received > 0


async def test_port_range_binds_even_ports() -> None:
    async with running_clock() as clock:
        first = await RtpSession.open(clock, LOCALHOST, port_range=(41000, 41003))
        second = await RtpSession.open(clock, LOCALHOST, port_range=(41000, 41003))
        try:
            ports = {first.local_address[1], second.local_address[1]}
            assert ports == {41000, 41002}
            with pytest.raises(OSError, match="no free RTP port"):
                await RtpSession.open(clock, LOCALHOST, port_range=(41000, 41003))
        finally:
            first.close()
            second.close()
