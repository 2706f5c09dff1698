"""G.711 mu-law (PCMU) and A-law (PCMA) for 16-bit PCM, vectorised with numpy.

Decoding is a lookup in the ITU-T G.711 tables of :mod:`voxflow.media.wav`; encoding is the
segment search of the ITU-T G.191 reference encoder, run once over all 65,536 sample values at
import so that encoding a frame is one table lookup too. The two are exact inverses on the
decoder's output values (except mu-law's negative zero, 0x7F, which decodes to 0 and re-encodes
as 0xFF).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt

from voxflow.media.wav import ALAW_TABLE, MULAW_TABLE

Codec = Literal["PCMU", "PCMA"]
Pcm = npt.NDArray[np.int16]
_Lut = npt.NDArray[np.uint8]

SAMPLE_RATE_HZ = 8000
PTIME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE_HZ * PTIME_MS // 1000  # 160 samples, 160 octets of G.711
STATIC_PAYLOAD_TYPES: dict[Codec, int] = {"PCMU": 0, "PCMA": 8}  # RFC 3551 §6, table 4

MULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5
_MULAW_BIAS = 0x84
_MULAW_CLIP = 32635
# The segment (exponent) of a biased magnitude, indexed by magnitude >> 7 (mu-law) or >> 8 (A-law).
_SEGMENT = np.array([max(i.bit_length() - 1, 0) for i in range(256)], dtype=np.int32)


def mulaw_encode(pcm: Pcm) -> bytes:
    """16-bit signed PCM → mu-law octets."""
    return _MULAW_LUT[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()


def alaw_encode(pcm: Pcm) -> bytes:
    """16-bit signed PCM → A-law octets."""
    return _ALAW_LUT[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()


def _mulaw_compress(samples: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    """The G.191 mu-law encoder, whole array at once."""
    negative = samples < 0
    sign = np.where(negative, 0x80, 0)
    # One's complement for negatives, as the G.191 reference encoder does.
    magnitude = np.minimum(np.where(negative, -samples - 1, samples), _MULAW_CLIP) + _MULAW_BIAS
    exponent = _SEGMENT[magnitude >> 7]
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    codes: _Lut = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return codes


def _alaw_compress(samples: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    """The G.191 A-law encoder, whole array at once (even bits inverted, G.711 §3)."""
    negative = samples < 0
    sign = np.where(negative, 0x00, 0x80)
    # One's complement for negatives, as the reference encoder does: -1 lands next to +0.
    magnitude = np.where(negative, -samples - 1, samples) >> 3  # 13-bit magnitude
    exponent = _SEGMENT[np.minimum(magnitude >> 4, 255)]
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 0x0F
    code = np.minimum((exponent << 4) | mantissa, 0x7F)
    codes: _Lut = ((sign | code) ^ 0x55).astype(np.uint8)
    return codes


def _lookup(compress: Callable[[npt.NDArray[np.int32]], npt.NDArray[np.uint8]]) -> _Lut:
    """The code of every 16-bit sample, indexed by the sample's bits read as unsigned."""
    samples = np.arange(1 << 16, dtype=np.uint16).view(np.int16).astype(np.int32)
    return compress(samples)


_MULAW_LUT = _lookup(_mulaw_compress)
_ALAW_LUT = _lookup(_alaw_compress)


def mulaw_decode(data: bytes) -> Pcm:
    """mu-law octets → 16-bit signed PCM."""
    decoded: Pcm = MULAW_TABLE[np.frombuffer(data, dtype=np.uint8)]
    return decoded


def alaw_decode(data: bytes) -> Pcm:
    """A-law octets → 16-bit signed PCM."""
    decoded: Pcm = ALAW_TABLE[np.frombuffer(data, dtype=np.uint8)]
    return decoded


def encode(codec: Codec, pcm: Pcm) -> bytes:
    return mulaw_encode(pcm) if codec == "PCMU" else alaw_encode(pcm)


def decode(codec: Codec, data: bytes) -> Pcm:
    return mulaw_decode(data) if codec == "PCMU" else alaw_decode(data)


def silence(codec: Codec, samples: int = FRAME_SAMPLES) -> bytes:
    """An encoded frame of digital silence (the code of 0 in each law)."""
    return bytes([MULAW_SILENCE if codec == "PCMU" else ALAW_SILENCE]) * samples
