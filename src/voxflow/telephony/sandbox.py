"""A simulated far end for sandbox accounts: it never touches a trunk.

It rings, answers after ``answer_after_s``, and records every keypress it receives with the
time it arrived, so a sandbox call moves through exactly the statuses and events of a real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from voxflow.domain.calls import CallStatus
from voxflow.telephony.leg import DialResult, KeypressSent


@dataclass(frozen=True)
class SandboxSettings:
    answer_after_s: float = 1.0
    hold_s: float = 5.0


@dataclass
class SandboxLeg:
    settings: SandboxSettings = field(default_factory=SandboxSettings)
    received: list[tuple[str, float]] = field(default_factory=list)
    _hung_up: asyncio.Event = field(default_factory=asyncio.Event)

    async def dial(self, on_ringing: Callable[[int, str], None]) -> DialResult:
        on_ringing(180, "Ringing")
        await asyncio.sleep(self.settings.answer_after_s)
        return DialResult(CallStatus.ANSWERED, 200, "OK", asyncio.get_running_loop().time())

    async def send_keypress(self, key: str, at: float, tone_ms: int) -> KeypressSent:
        loop = asyncio.get_running_loop()
        if at > loop.time():
            woken = loop.create_future()
            loop.call_at(at, woken.set_result, None)
            await woken
        actual = loop.time()
        self.received.append((key, actual))
        await asyncio.sleep(tone_ms / 1000)
        return KeypressSent(key, at, actual)

    async def wait_remote_hangup(self) -> None:
        await self._hung_up.wait()

    async def hangup(self) -> None:
        self._hung_up.set()
