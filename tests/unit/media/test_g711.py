from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from voxflow.media import g711
from voxflow.media.wav import ALAW_TABLE, MULAW_TABLE

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
# ITU-T G.711 tables 5 and 6: the "digital milliwatt", one period of a 1 kHz tone at 0 dBm0.
MULAW_MILLIWATT = bytes([0x1E, 0x0B, 0x0B, 0x1E, 0x9E, 0x8B, 0x8B, 0x9E])
ALAW_MILLIWATT = bytes([0x34, 0x21, 0x21, 0x34, 0xB4, 0xA1, 0xA1, 0xB4])


def _g191_ulaw(sample: int) -> int:
    """ITU-T G.191 (STL) ulaw_compress, transcribed sample by sample."""
    absno = ((~sample) >> 2) + 33 if sample < 0 else (sample >> 2) + 33
    absno = min(absno, 0x1FFF)
    i, segno = absno >> 6, 1
    while i:
        segno += 1
        i >>= 1
    high = 0x08 - segno
    low = 0x0F - ((absno >> segno) & 0x0F)
    code = (high << 4) | low
    return code | 0x80 if sample >= 0 else code


def _g191_alaw(sample: int) -> int:
    """ITU-T G.191 (STL) alaw_compress, transcribed sample by sample."""
    ix = (~sample) >> 4 if sample < 0 else sample >> 4  # 12-bit magnitude
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if sample >= 0:
        ix |= 0x80
    return ix ^ 0x55


@pytest.mark.parametrize(
    ("sample", "mulaw", "alaw"),
    [
        (0, 0xFF, 0xD5),
        (-1, 0x7F, 0x55),
        (32767, 0x80, 0xAA),
        (-32768, 0x00, 0x2A),
        (8, 0xFE, 0xD5),
        (1000, 0xCE, 0xFA),
    ],
)
def test_reference_points(sample: int, mulaw: int, alaw: int) -> None:
    pcm = np.array([sample], dtype=np.int16)
    assert g711.mulaw_encode(pcm) == bytes([mulaw])
    assert g711.alaw_encode(pcm) == bytes([alaw])


def test_encoders_match_g191_for_every_sample() -> None:
    mulaw = np.frombuffer(g711.mulaw_encode(ALL_SAMPLES), dtype=np.uint8)
    alaw = np.frombuffer(g711.alaw_encode(ALL_SAMPLES), dtype=np.uint8)
    assert mulaw.tolist() == [_g191_ulaw(int(s)) for s in ALL_SAMPLES]
    assert alaw.tolist() == [_g191_alaw(int(s)) for s in ALL_SAMPLES]


def test_decode_then_encode_is_identity() -> None:
    codes = bytes(range(256))
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes
    expected = bytearray(codes)
    expected[0x7F] = 0xFF  # mu-law negative zero decodes to 0, which encodes as positive zero
    assert g711.mulaw_encode(g711.mulaw_decode(codes)) == bytes(expected)


def test_decoders_use_the_wav_tables() -> None:
    codes = bytes(range(256))
    assert np.array_equal(g711.mulaw_decode(codes), MULAW_TABLE)
    assert np.array_equal(g711.alaw_decode(codes), ALAW_TABLE)


@pytest.mark.parametrize(
    ("codec", "milliwatt"), [("PCMU", MULAW_MILLIWATT), ("PCMA", ALAW_MILLIWATT)]
)
def test_digital_milliwatt(codec: g711.Codec, milliwatt: bytes) -> None:
    pcm = g711.decode(codec, milliwatt)
    # One period of a sine sampled at 22.5 + k * 45 degrees: antisymmetric halves, the peaks at
    # samples 1-2 and 5-6, and |x0| / |x1| = sin(22.5) / sin(67.5) = 0.414.
    assert np.array_equal(pcm[:4], -pcm[4:])
    assert pcm[1] == pcm[2]
    assert abs(pcm[0] / pcm[1] - 0.414) < 0.02
    # 0 dBm0 sits 3.17 dB below the overload level of a full-scale sine (RMS 32768 / sqrt 2).
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    assert abs(20 * np.log10(rms / (32768 / np.sqrt(2))) + 3.17) < 0.3
    assert g711.encode(codec, pcm) == milliwatt


def _quantisation_error(codec: g711.Codec) -> npt.NDArray[np.int64]:
    decoded = g711.decode(codec, g711.encode(codec, ALL_SAMPLES)).astype(np.int64)
    return np.abs(decoded - ALL_SAMPLES.astype(np.int64))


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_round_trip_error_is_within_half_a_step(codec: g711.Codec) -> None:
    error = _quantisation_error(codec)
    small = np.abs(ALL_SAMPLES.astype(np.int64)) < 16
    assert error[small].max() <= 8
    in_range = np.abs(ALL_SAMPLES.astype(np.int64)) < 32000
    assert error[in_range].max() <= 512  # half of the largest (top segment) step of 1024
    loud = ~small & (np.abs(ALL_SAMPLES.astype(np.int64)) >= 256) & in_range
    relative = error[loud] / np.abs(ALL_SAMPLES[loud].astype(np.float64))
    assert relative.max() < 0.045  # logarithmic: the error stays a few % of the signal


def test_silence_frames() -> None:
    assert g711.silence("PCMU") == b"\xff" * 160
    assert g711.silence("PCMA") == b"\xd5" * 160
    assert not g711.decode("PCMU", g711.silence("PCMU")).any()
    assert set(g711.decode("PCMA", g711.silence("PCMA")).tolist()) == {8}  # A-law has no 0
    zeros = np.zeros(160, dtype=np.int16)
    assert g711.encode("PCMU", zeros) == g711.silence("PCMU")
    assert g711.encode("PCMA", zeros) == g711.silence("PCMA")
