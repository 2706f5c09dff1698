"""Audio sources an RTP session sends from: a stored sound file, or a live feed (bridging).

A source hands out one 20 ms frame (160 samples of 8 kHz 16-bit PCM) per :meth:`read_frame`;
None means "nothing to play right now" and the session sends silence instead. The session calls
``read_frame`` only on ticks where it sends audio, so a keypress pauses the message rather than
skipping part of it.
"""

from __future__ import annotations

import asyncio
from collections import deque

import numpy as np

from voxflow.media.g711 import FRAME_SAMPLES, SAMPLE_RATE_HZ, Pcm
from voxflow.media.wav import FORMAT_PCM, OUTPUT_RATE_HZ, convert, parse


class Player:
    """Plays one sound once, then completes: ``await player.wait()``."""

    def __init__(self, pcm: Pcm) -> None:
        self._pcm = np.asarray(pcm, dtype=np.int16)
        self._position = 0
        self._finished = asyncio.Event()  # binds to the running loop on first wait()

    @classmethod
    def from_wav(cls, data: bytes) -> Player:
        """A player for WAV bytes as SoundFiles stores them (8 kHz mono 16-bit PCM).

        Anything else decodable is converted first; undecodable bytes raise ``WavError``.
        """
        fmt, payload = parse(data)
        stored = (fmt.encoding, fmt.channels, fmt.rate_hz, fmt.bits)
        if stored != (FORMAT_PCM, 1, OUTPUT_RATE_HZ, 16):
            fmt, payload = parse(convert(data).wav)
        return cls(np.frombuffer(payload, dtype="<i2").astype(np.int16))

    @property
    def duration_ms(self) -> int:
        return len(self._pcm) * 1000 // SAMPLE_RATE_HZ

    @property
    def position_ms(self) -> int:
        """How much has been handed out so far."""
        return min(self._position, len(self._pcm)) * 1000 // SAMPLE_RATE_HZ

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def read_frame(self) -> Pcm | None:
        """The next frame (the last one padded with silence), or None once finished."""
        if self.finished:
            return None
        frame = self._pcm[self._position : self._position + FRAME_SAMPLES]
        self._position += FRAME_SAMPLES
        if self._position >= len(self._pcm):
            self._finished.set()
        if len(frame) < FRAME_SAMPLES:
            frame = np.concatenate([frame, np.zeros(FRAME_SAMPLES - len(frame), np.int16)])
        return frame

    def stop(self) -> None:
        """Stop early; waiters complete as if the sound had ended."""
        self._finished.set()

    async def wait(self) -> None:
        """Complete when the last frame has been handed to the session (or on stop())."""
        await self._finished.wait()


class FrameBuffer:
    """A live source fed with PCM of any chunk size, e.g. another session's received audio.

    Bridging two legs is ``a.add_audio_sink(buffer_b.push)`` with ``b.play(buffer_b)`` (and the
    mirror image). At most ``max_frames`` frames are held: when the feeding side runs fast the
    oldest audio is dropped so latency cannot grow without bound.
    """

    def __init__(self, max_frames: int = 5) -> None:
        self._frames: deque[Pcm] = deque(maxlen=max_frames)
        self._partial = np.zeros(0, dtype=np.int16)

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, pcm: Pcm) -> None:
        samples = np.concatenate([self._partial, np.asarray(pcm, dtype=np.int16)])
        whole = len(samples) - len(samples) % FRAME_SAMPLES
        for start in range(0, whole, FRAME_SAMPLES):
            self._frames.append(samples[start : start + FRAME_SAMPLES])
        self._partial = samples[whole:]

    def read_frame(self) -> Pcm | None:
        return self._frames.popleft() if self._frames else None

    def stop(self) -> None:
        self._frames.clear()
        self._partial = np.zeros(0, dtype=np.int16)
