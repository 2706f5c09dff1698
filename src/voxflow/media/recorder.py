"""Records received audio: an audio sink that keeps PCM and writes an 8 kHz mono 16-bit WAV."""

from __future__ import annotations

import os

import numpy as np

from voxflow.media.g711 import SAMPLE_RATE_HZ, Pcm
from voxflow.media.wav import encode_pcm16

MAX_RECORDING_S = 3600


class Recorder:
    """``session.add_audio_sink(recorder.write)``; later ``recorder.wav_bytes()``.

    Audio past ``max_seconds`` is dropped (a far end cannot grow our memory without bound) and
    ``truncated`` says so. Lost packets are not filled in: the recording is what arrived.
    """

    def __init__(self, *, max_seconds: float = MAX_RECORDING_S) -> None:
        self.max_samples = int(max_seconds * SAMPLE_RATE_HZ)
        self._chunks: list[Pcm] = []
        self._samples = 0
        self.truncated = False

    @property
    def duration_ms(self) -> int:
        return self._samples * 1000 // SAMPLE_RATE_HZ

    def write(self, pcm: Pcm) -> None:
        room = self.max_samples - self._samples
        if len(pcm) > room:
            self.truncated = True
            pcm = pcm[:room]
        if len(pcm):
            self._chunks.append(np.array(pcm, dtype=np.int16))  # a copy: callers reuse buffers
            self._samples += len(pcm)

    def pcm(self) -> Pcm:
        """Everything recorded so far as one array."""
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks)

    def wav_bytes(self) -> bytes:
        return encode_pcm16(self.pcm(), SAMPLE_RATE_HZ)

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "wb") as out:
            out.write(self.wav_bytes())
