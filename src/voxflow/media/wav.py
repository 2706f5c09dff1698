"""Uploaded sound files → 16-bit PCM mono 8 kHz WAV, the one form the media layer plays.

The decoder is a small RIFF chunk walker of our own (the stdlib ``wave`` module reads PCM only).
It accepts PCM 8/16/24/32-bit, IEEE float 32/64, G.711 A-law (format 6) and mu-law (format 7),
and ``WAVE_FORMAT_EXTENSIBLE`` wrapping any of those, with any channel count and sample rate in
range. Channels are averaged to mono and the signal is resampled to 8 kHz with soxr.

Every input is hostile: anything that is not a decodable WAV raises :class:`WavError` with a
one-line reason meant for the API client, and nothing else escapes :func:`convert`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import soxr

OUTPUT_RATE_HZ = 8000
MAX_DURATION_S = 600  # ten minutes
MIN_RATE_HZ = 1000
MAX_RATE_HZ = 384_000
MAX_CHANNELS = 32

FORMAT_PCM = 0x0001
FORMAT_FLOAT = 0x0003
FORMAT_ALAW = 0x0006
FORMAT_MULAW = 0x0007
FORMAT_EXTENSIBLE = 0xFFFE
# The sub-format GUID of WAVE_FORMAT_EXTENSIBLE is the format code followed by this fixed tail.
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_BITS: dict[int, tuple[int, ...]] = {
    FORMAT_PCM: (8, 16, 24, 32),
    FORMAT_FLOAT: (32, 64),
    FORMAT_ALAW: (8,),
    FORMAT_MULAW: (8,),
}
_FMT = struct.Struct("<HHIIHH")
_CHUNK = struct.Struct("<4sI")

Samples = npt.NDArray[np.float32]


class WavError(ValueError):
    """The bytes are not a WAV file that voxflow can play; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Converted(NamedTuple):
    wav: bytes  # 16-bit PCM, mono, 8 kHz
    duration_ms: int


@dataclass(frozen=True)
class WavFormat:
    encoding: int  # FORMAT_PCM, FORMAT_FLOAT, FORMAT_ALAW or FORMAT_MULAW (never EXTENSIBLE)
    channels: int
    rate_hz: int
    bits: int  # container bits per sample

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits // 8


def convert(data: bytes) -> Converted:
    """Decode any supported WAV and re-encode it as 16-bit PCM mono 8 kHz."""
    fmt, payload = parse(data)
    with np.errstate(all="ignore"):
        mono = _mono(_decode(payload, fmt), fmt.channels)
        if fmt.rate_hz != OUTPUT_RATE_HZ:
            mono = np.asarray(
                soxr.resample(mono, fmt.rate_hz, OUTPUT_RATE_HZ, quality="HQ"), dtype=np.float32
            )
        pcm = _to_pcm16(mono)
    if pcm.size == 0:
        raise WavError("audio is too short")
    duration_ms = (pcm.size * 1000 + OUTPUT_RATE_HZ // 2) // OUTPUT_RATE_HZ
    return Converted(encode_pcm16(pcm, OUTPUT_RATE_HZ), duration_ms)


def parse(data: bytes) -> tuple[WavFormat, bytes]:
    """The format and the whole frames of sample data of a WAV file."""
    _check_riff(data)
    fmt_chunk, payload = _find_chunks(data)
    fmt = _parse_fmt(fmt_chunk)
    frames = len(payload) // fmt.frame_bytes
    if frames == 0:
        raise WavError("no audio samples")
    if frames > MAX_DURATION_S * fmt.rate_hz:
        raise WavError("audio is longer than 10 minutes")
    return fmt, payload[: frames * fmt.frame_bytes]


def encode_pcm16(samples: npt.NDArray[np.int16], rate_hz: int) -> bytes:
    """A canonical 44-byte-header WAV holding mono 16-bit PCM."""
    body = samples.astype("<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(body),
        b"WAVE",
        b"fmt ",
        16,
        FORMAT_PCM,
        1,
        rate_hz,
        rate_hz * 2,
        2,
        16,
        b"data",
        len(body),
    )
    return header + body


# ---------------------------------------------------------------- container


def _check_riff(data: bytes) -> None:
    magic = data[:4]
    if magic == b"RIFX":
        raise WavError("big-endian WAV (RIFX) is not supported")
    if magic == b"RF64":
        raise WavError("RF64 WAV is not supported")
    if magic != b"RIFF" or (len(data) >= 12 and data[8:12] != b"WAVE"):
        raise WavError("only WAV audio is accepted")
    if len(data) < 12:
        raise WavError("WAV header is truncated")


def _find_chunks(data: bytes) -> tuple[bytes, bytes]:
    """The ``fmt `` and ``data`` chunks (first of each); trailing junk after them is ignored."""
    found: dict[bytes, bytes] = {}
    pos = 12
    while pos + _CHUNK.size <= len(data) and len(found) < 2:
        chunk_id, size = _CHUNK.unpack_from(data, pos)
        start, end = pos + _CHUNK.size, pos + _CHUNK.size + size
        if chunk_id in (b"fmt ", b"data") and chunk_id not in found:
            if end > len(data):
                raise WavError(f"WAV {chunk_id.decode().strip()} chunk is truncated")
            found[chunk_id] = data[start:end]
        pos = end + (size & 1)  # chunks are padded to an even length
    if b"fmt " not in found:
        raise WavError("WAV fmt chunk is missing")
    if b"data" not in found:
        raise WavError("WAV data chunk is missing")
    return found[b"fmt "], found[b"data"]


def _parse_fmt(chunk: bytes) -> WavFormat:
    if len(chunk) < _FMT.size:
        raise WavError("WAV fmt chunk is too short")
    tag, channels, rate, _byte_rate, block_align, bits = _FMT.unpack_from(chunk)
    if tag == FORMAT_EXTENSIBLE:
        tag = _extensible_format(chunk)
    if tag not in _BITS:
        raise WavError(f"unsupported WAV encoding (format {tag})")
    if bits not in _BITS[tag]:
        raise WavError(f"unsupported sample size: {bits} bits")
    if not 1 <= channels <= MAX_CHANNELS:
        raise WavError(f"invalid channel count: {channels}")
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise WavError(f"invalid sample rate: {rate} Hz")
    fmt = WavFormat(tag, channels, rate, bits)
    if block_align != fmt.frame_bytes:
        raise WavError(f"invalid block align: {block_align}")
    return fmt


def _extensible_format(chunk: bytes) -> int:
    if len(chunk) < 40:
        raise WavError("WAV fmt chunk is too short for WAVE_FORMAT_EXTENSIBLE")
    guid = chunk[24:40]
    if guid[2:] != _GUID_TAIL:
        raise WavError("unsupported WAVE_FORMAT_EXTENSIBLE sub-format")
    code: int = struct.unpack_from("<H", guid)[0]
    return code


# ---------------------------------------------------------------- samples


def _decode(payload: bytes, fmt: WavFormat) -> Samples:
    """Interleaved samples as floats in [-1, 1]."""
    if fmt.encoding == FORMAT_FLOAT:
        raw = np.frombuffer(payload, dtype="<f4" if fmt.bits == 32 else "<f8")
        cleaned = np.nan_to_num(raw.astype(np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
        return np.clip(cleaned, -1.0, 1.0).astype(np.float32)
    if fmt.encoding in (FORMAT_ALAW, FORMAT_MULAW):
        table = ALAW_TABLE if fmt.encoding == FORMAT_ALAW else MULAW_TABLE
        return (table[np.frombuffer(payload, dtype=np.uint8)] / 32768.0).astype(np.float32)
    return _decode_pcm(payload, fmt.bits)


def _decode_pcm(payload: bytes, bits: int) -> Samples:
    if bits == 8:  # 8-bit WAV is unsigned, silence at 128
        unsigned = np.frombuffer(payload, dtype=np.uint8).astype(np.float32)
        return (unsigned - 128.0) / 128.0
    if bits == 16:
        return (np.frombuffer(payload, dtype="<i2") / 32768.0).astype(np.float32)
    if bits == 24:
        triplets = np.frombuffer(payload, dtype=np.uint8).reshape(-1, 3)
        widened = np.zeros((triplets.shape[0], 4), dtype=np.uint8)
        widened[:, 1:] = triplets  # little-endian: the sample lands in the top 24 bits
        return (widened.view("<i4").reshape(-1) / 2147483648.0).astype(np.float32)
    return (np.frombuffer(payload, dtype="<i4") / 2147483648.0).astype(np.float32)


def _mono(samples: Samples, channels: int) -> Samples:
    if channels == 1:
        return samples
    mixed: Samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return mixed


def _to_pcm16(samples: Samples) -> npt.NDArray[np.int16]:
    # The inverse of the 16-bit decoding (x / 32768), so 16-bit input at 8 kHz passes unchanged.
    scaled: npt.NDArray[np.float32] = np.rint(samples * np.float32(32768.0))
    return np.clip(scaled, -32768, 32767).astype(np.int16)


# ---------------------------------------------------------------- G.711 (ITU-T G.711 decoding)


def _mulaw_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> npt.NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    shifted = ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, shifted)
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


MULAW_TABLE = _mulaw_table()
ALAW_TABLE = _alaw_table()
