from __future__ import annotations

import asyncio
import io
import wave
from pathlib import Path

import numpy as np
import pytest

from voxflow.media.player import FrameBuffer, Player
from voxflow.media.recorder import Recorder
from voxflow.media.wav import WavError, encode_pcm16, parse


def ramp(samples: int) -> np.ndarray:
    return (np.arange(samples) % 1000).astype(np.int16)


async def test_player_plays_a_stored_wav_in_frames() -> None:
    pcm = ramp(400)
    player = Player.from_wav(encode_pcm16(pcm, 8000))
    assert player.duration_ms == 50
    frames = [player.read_frame() for _ in range(4)]
    assert [len(f) for f in frames if f is not None] == [160, 160, 160]
    assert frames[3] is None
    joined = np.concatenate([f for f in frames if f is not None])
    assert np.array_equal(joined[:400], pcm)
    assert not joined[400:].any()
    assert player.finished
    assert player.position_ms == 50
    await asyncio.wait_for(player.wait(), 1)


def test_player_converts_other_wavs() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(np.zeros(3200 * 2, dtype="<i2").tobytes())
    player = Player.from_wav(buffer.getvalue())
    assert player.duration_ms == 200


def test_player_refuses_non_wav() -> None:
    with pytest.raises(WavError):
        Player.from_wav(b"not a wav")


async def test_player_stop_completes_waiters() -> None:
    player = Player(ramp(8000))
    waiter = asyncio.ensure_future(player.wait())
    player.read_frame()
    player.stop()
    await asyncio.wait_for(waiter, 1)
    assert player.read_frame() is None
    assert player.position_ms == 20


def test_frame_buffer_reframes_and_bounds_latency() -> None:
    buffer = FrameBuffer(max_frames=3)
    assert buffer.read_frame() is None
    buffer.push(ramp(100))
    assert buffer.read_frame() is None  # not a whole frame yet
    buffer.push(ramp(240))  # 340 samples: two frames and 20 left over
    first = buffer.read_frame()
    assert first is not None
    assert np.array_equal(first, np.concatenate([ramp(100), ramp(60)]))
    assert len(buffer) == 1
    buffer.push(ramp(160 * 5))  # overflow: the oldest frames are dropped
    assert len(buffer) == 3
    buffer.stop()
    assert buffer.read_frame() is None


def test_recorder_writes_a_wav(tmp_path: Path) -> None:
    recorder = Recorder()
    recorder.write(ramp(160))
    recorder.write(ramp(80))
    assert recorder.duration_ms == 30
    fmt, payload = parse(recorder.wav_bytes())
    assert (fmt.channels, fmt.rate_hz, fmt.bits) == (1, 8000, 16)
    assert np.array_equal(np.frombuffer(payload, "<i2"), np.concatenate([ramp(160), ramp(80)]))
    path = tmp_path / "rec.wav"
    recorder.save(path)
    assert path.read_bytes() == recorder.wav_bytes()


def test_recorder_copies_and_caps() -> None:
    recorder = Recorder(max_seconds=0.03)
    frame = ramp(160)
    recorder.write(frame)
    frame[:] = 0  # the caller reuses its buffer
    recorder.write(ramp(160))
    assert recorder.truncated
    assert recorder.duration_ms == 30
    assert recorder.pcm()[:160].any()
    assert len(Recorder().pcm()) == 0
