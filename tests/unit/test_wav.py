from __future__ import annotations

import io
import struct
import wave

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxflow.media import wav
from voxflow.media.wav import WavError, convert

FloatArray = npt.NDArray[np.float64]
GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


# ---------------------------------------------------------------- building test WAVs


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> FloatArray:
    t = np.arange(round(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def _mulaw_reference() -> FloatArray:
    """ITU-T G.711 mu-law decoding written out code by code (independent of the module)."""
    out = []
    for code in range(256):
        u = ~code & 0xFF
        sign, exponent, mantissa = u & 0x80, (u >> 4) & 7, u & 0x0F
        value = (((mantissa << 3) + 0x84) << exponent) - 0x84
        out.append(-value if sign else value)
    return np.array(out, dtype=np.float64)


def _alaw_reference() -> FloatArray:
    out = []
    for code in range(256):
        a = code ^ 0x55
        sign, exponent, mantissa = a & 0x80, (a >> 4) & 7, a & 0x0F
        segment = ((mantissa << 4) + 0x108) << max(exponent - 1, 0)
        value = (mantissa << 4) + 8 if exponent == 0 else segment
        out.append(value if sign else -value)
    return np.array(out, dtype=np.float64)


def _g711_encode(samples: FloatArray, table: FloatArray) -> bytes:
    """Nearest code for each sample (brute force: fine for test-sized signals)."""
    targets = samples * 32768.0
    codes: npt.NDArray[np.intp] = np.abs(targets[:, None] - table[None, :]).argmin(axis=1)
    return codes.astype(np.uint8).tobytes()


def encode_samples(interleaved: FloatArray, encoding: str) -> tuple[int, int, bytes]:
    """(format tag, bits, payload) of interleaved samples in [-1, 1]."""
    x = np.clip(interleaved, -1.0, 1.0)
    if encoding == "pcm8":
        return 1, 8, np.rint(x * 127 + 128).astype(np.uint8).tobytes()
    if encoding == "pcm16":
        return 1, 16, np.rint(x * 32767).astype("<i2").tobytes()
    if encoding == "pcm24":
        ints = np.rint(x * 8388607).astype("<i4")
        return 1, 24, ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    if encoding == "pcm32":
        return 1, 32, np.rint(x * 2147483647).astype("<i4").tobytes()
    if encoding == "float32":
        return 3, 32, x.astype("<f4").tobytes()
    if encoding == "float64":
        return 3, 64, x.astype("<f8").tobytes()
    if encoding == "alaw":
        return 6, 8, _g711_encode(x, _alaw_reference())
    if encoding == "mulaw":
        return 7, 8, _g711_encode(x, _mulaw_reference())
    raise AssertionError(encoding)


def chunk(chunk_id: bytes, body: bytes) -> bytes:
    return struct.pack("<4sI", chunk_id, len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def fmt_body(tag: int, channels: int, rate: int, bits: int, *, extensible: bool = False) -> bytes:
    align = channels * bits // 8
    outer = 0xFFFE if extensible else tag
    body = struct.pack("<HHIIHH", outer, channels, rate, rate * align, align, bits)
    if extensible:
        body += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + GUID_TAIL
    return body


def riff(*chunks: bytes) -> bytes:
    inner = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(inner)) + inner


def make_wav(
    channels_data: list[FloatArray],
    rate: int,
    encoding: str = "pcm16",
    *,
    extensible: bool = False,
) -> bytes:
    interleaved = np.stack(channels_data, axis=1).reshape(-1)
    tag, bits, payload = encode_samples(interleaved, encoding)
    fmt = fmt_body(tag, len(channels_data), rate, bits, extensible=extensible)
    return riff(chunk(b"fmt ", fmt), chunk(b"data", payload))


def read_output(data: bytes) -> tuple[wave._wave_params, npt.NDArray[np.int16]]:
    with wave.open(io.BytesIO(data)) as w:
        params = w.getparams()
        frames = w.readframes(params.nframes)
    return params, np.frombuffer(frames, dtype="<i2")


def dominant_hz(samples: npt.NDArray[np.int16], rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def assert_8k_mono_16bit(data: bytes) -> npt.NDArray[np.int16]:
    params, samples = read_output(data)
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 8000)
    assert len(data) == 44 + 2 * len(samples)
    return samples


# ---------------------------------------------------------------- conversion


def test_stereo_44k_sine_becomes_8k_mono_and_keeps_its_tone() -> None:
    sine = tone(1000, 44100, 1.0)
    out = convert(make_wav([sine, sine], 44100))
    samples = assert_8k_mono_16bit(out.wav)
    assert out.duration_ms == 1000
    assert abs(len(samples) - 8000) <= 1
    assert abs(dominant_hz(samples) - 1000) < 5
    # Amplitude survives: 0.5 full scale stays about 0.5 (allow the resampler's edge effects).
    assert 0.45 * 32767 < np.abs(samples[400:-400]).max() < 0.55 * 32767


ENCODINGS = ["pcm8", "pcm16", "pcm24", "pcm32", "float32", "float64", "alaw", "mulaw"]


@pytest.mark.parametrize("extensible", [False, True])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_encoding_decodes_to_the_same_tone(encoding: str, extensible: bool) -> None:
    sine = tone(440, 16000, 0.5, amplitude=0.6)
    out = convert(make_wav([sine], 16000, encoding, extensible=extensible))
    samples = assert_8k_mono_16bit(out.wav)
    assert out.duration_ms == 500
    assert abs(dominant_hz(samples) - 440) < 10
    expected = tone(440, 8000, 0.5, amplitude=0.6) * 32767
    # 8-bit PCM and G.711 are coarse; the others should be close to the ideal signal.
    tolerance = 0.05 if encoding in ("pcm8", "alaw", "mulaw") else 0.01
    middle = slice(200, -200)
    error = np.abs(samples[middle] - expected[middle]).max() / 32767
    assert error < tolerance, error


def test_8k_mono_16bit_input_is_kept_sample_for_sample() -> None:
    ints = np.array([0, 1, -1, 32767, -32768, 1234, -4321, 7] * 100, dtype="<i2")
    data = riff(chunk(b"fmt ", fmt_body(1, 1, 8000, 16)), chunk(b"data", ints.tobytes()))
    out = convert(data)
    samples = assert_8k_mono_16bit(out.wav)
    assert np.array_equal(samples, ints)
    assert out.duration_ms == 100


def test_channels_are_averaged() -> None:
    sine = tone(1000, 8000, 0.5)
    cancelled = convert(make_wav([sine, -sine], 8000))
    assert np.abs(assert_8k_mono_16bit(cancelled.wav)).max() <= 1
    sine = tone(1000, 48000, 0.5)
    silent = np.zeros_like(sine)
    six = convert(make_wav([silent, silent, sine, silent, silent, silent], 48000, "float32"))
    samples = assert_8k_mono_16bit(six.wav)
    assert abs(dominant_hz(samples) - 1000) < 5
    peak = np.abs(samples[200:-200]).max() / 32767
    assert 0.5 / 6 * 0.9 < peak < 0.5 / 6 * 1.1


def test_eight_bit_silence_is_128() -> None:
    data = riff(chunk(b"fmt ", fmt_body(1, 1, 8000, 8)), chunk(b"data", b"\x80" * 800))
    out = convert(data)
    assert not assert_8k_mono_16bit(out.wav).any()


def test_g711_tables_match_the_reference_values() -> None:
    assert np.array_equal(wav.MULAW_TABLE, _mulaw_reference())
    assert np.array_equal(wav.ALAW_TABLE, _alaw_reference())
    assert wav.MULAW_TABLE[0x00] == -32124 and wav.MULAW_TABLE[0xFF] == 0
    assert wav.ALAW_TABLE[0xAA] == 32256 and wav.ALAW_TABLE[0xD5] == 8


@pytest.mark.parametrize(("rate", "seconds"), [(22050, 2.5), (11025, 0.2), (96000, 1.25)])
def test_duration_follows_the_input(rate: int, seconds: float) -> None:
    out = convert(make_wav([tone(300, rate, seconds)], rate))
    assert out.duration_ms == round(seconds * 1000)
    assert abs(len(assert_8k_mono_16bit(out.wav)) - seconds * 8000) <= 1


def test_other_chunks_padding_and_chunk_order_are_handled() -> None:
    sine = tone(1000, 8000, 0.25)
    _, _, payload = encode_samples(sine, "pcm16")
    data = riff(
        chunk(b"LIST", b"INFOISFT\x03\x00\x00\x00ab\x00"),  # odd size: padded
        chunk(b"data", payload),
        chunk(b"fact", struct.pack("<I", len(sine))),
        chunk(b"fmt ", fmt_body(1, 1, 8000, 16)),
    )
    out = convert(data)
    assert out.duration_ms == 250
    assert abs(dominant_hz(assert_8k_mono_16bit(out.wav)) - 1000) < 10


def test_a_trailing_partial_frame_is_dropped() -> None:
    data = riff(chunk(b"fmt ", fmt_body(1, 2, 8000, 16)), chunk(b"data", b"\x00" * 803))
    assert convert(data).duration_ms == 25  # 200 whole stereo frames


def test_non_finite_float_samples_become_bounded_pcm() -> None:
    values = np.array([np.nan, np.inf, -np.inf, 5.0, -5.0, 0.25] * 100, dtype="<f4")
    data = riff(chunk(b"fmt ", fmt_body(3, 1, 8000, 32)), chunk(b"data", values.tobytes()))
    samples = assert_8k_mono_16bit(convert(data).wav)
    assert samples[:6].tolist() == [0, 32767, -32768, 32767, -32768, 8192]


# ---------------------------------------------------------------- refusals


def _reason(data: bytes) -> str:
    with pytest.raises(WavError) as info:
        convert(data)
    return info.value.reason


GOOD = make_wav([tone(1000, 8000, 0.1)], 8000)


def _with_fmt(**fields: int) -> bytes:
    values = {"tag": 1, "channels": 1, "rate": 8000, "byte_rate": 16000, "align": 2, "bits": 16}
    values.update(fields)
    fmt = struct.pack("<HHIIHH", *values.values())
    return riff(chunk(b"fmt ", fmt), chunk(b"data", b"\x00\x01" * 100))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "only WAV audio is accepted"),
        (
            b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 50,
            "only WAV audio is accepted",
        ),
        (b"\xff\xfb\x90\x64" + bytes(400), "only WAV audio is accepted"),
        (b"OggS" + bytes(100), "only WAV audio is accepted"),
        (b"RIFF\x10\x00\x00\x00AVI LIST", "only WAV audio is accepted"),
        (b"RIFF\x04\x00", "WAV header is truncated"),
        (b"RIFX" + GOOD[4:], "big-endian WAV (RIFX) is not supported"),
        (GOOD[:-10], "WAV data chunk is truncated"),
        (GOOD[:30], "WAV fmt chunk is truncated"),
        (GOOD[:36], "WAV data chunk is missing"),
        (riff(chunk(b"data", b"\x00" * 10)), "WAV fmt chunk is missing"),
        (riff(chunk(b"fmt ", b"\x01\x00"), chunk(b"data", b"\0\0")), "WAV fmt chunk is too short"),
        (riff(chunk(b"fmt ", fmt_body(1, 1, 8000, 16)), chunk(b"data", b"")), "no audio samples"),
        (_with_fmt(tag=0x55), "unsupported WAV encoding (format 85)"),
        (_with_fmt(tag=2), "unsupported WAV encoding (format 2)"),
        (_with_fmt(bits=12), "unsupported sample size: 12 bits"),
        (_with_fmt(tag=3, bits=16), "unsupported sample size: 16 bits"),
        (_with_fmt(channels=0, align=0), "invalid channel count: 0"),
        (_with_fmt(channels=65535, align=2), "invalid channel count: 65535"),
        (_with_fmt(rate=0), "invalid sample rate: 0 Hz"),
        (_with_fmt(rate=4_000_000_000), "invalid sample rate: 4000000000 Hz"),
        (_with_fmt(align=7), "invalid block align: 7"),
    ],
)
def test_refusals_carry_a_reason(data: bytes, reason: str) -> None:
    assert _reason(data) == reason


def test_extensible_refusals() -> None:
    short = struct.pack("<HHIIHH", 0xFFFE, 1, 8000, 16000, 2, 16)
    assert _reason(riff(chunk(b"fmt ", short), chunk(b"data", b"\0\0"))) == (
        "WAV fmt chunk is too short for WAVE_FORMAT_EXTENSIBLE"
    )
    odd_guid = fmt_body(1, 1, 8000, 16, extensible=True)[:-1] + b"\x00"
    assert _reason(riff(chunk(b"fmt ", odd_guid), chunk(b"data", b"\0\0"))) == (
        "unsupported WAVE_FORMAT_EXTENSIBLE sub-format"
    )


def test_longer_than_ten_minutes_is_refused_and_ten_minutes_is_not() -> None:
    fmt = chunk(b"fmt ", fmt_body(1, 1, 1000, 8))
    assert _reason(riff(fmt, chunk(b"data", b"\x80" * 600_001))) == (
        "audio is longer than 10 minutes"
    )
    assert convert(riff(fmt, chunk(b"data", b"\x80" * 600_000))).duration_ms == 600_000


def test_a_single_frame_at_a_high_rate_is_too_short() -> None:
    data = riff(chunk(b"fmt ", fmt_body(1, 1, 44100, 16)), chunk(b"data", b"\x00\x10"))
    assert _reason(data) == "audio is too short"


# ---------------------------------------------------------------- hostile input


def _must_convert_or_refuse(data: bytes) -> None:
    try:
        out = convert(data)
    except WavError as err:
        assert err.reason and "\n" not in err.reason
        return
    assert_8k_mono_16bit(out.wav)
    assert out.duration_ms >= 0


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise_anything_but_wav_error(data: bytes) -> None:
    _must_convert_or_refuse(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_behind_a_riff_header_never_crash(body: bytes) -> None:
    _must_convert_or_refuse(b"RIFF" + struct.pack("<I", len(body) + 4) + b"WAVE" + body)


SEEDS = [
    make_wav([tone(500, 8000, 0.02)], 8000, encoding, extensible=ext)
    for encoding in ENCODINGS
    for ext in (False, True)
] + [make_wav([tone(500, 44100, 0.01)] * 3, 44100, "pcm24")]


@st.composite
def mutated_wavs(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["byte", "word", "truncate", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "word":
            value = draw(st.sampled_from([0, 1, 2, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFE]))
            data[pos : pos + 4] = struct.pack("<I", value)
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_wavs())
def test_mutated_wavs_never_raise_anything_but_wav_error(data: bytes) -> None:
    _must_convert_or_refuse(data)


def test_header_fields_targeted_at_every_offset() -> None:
    """Every header byte of every seed set to each extreme: still only WavError or success."""
    for seed in SEEDS:
        for pos in range(min(len(seed), 80)):
            for value in (0x00, 0x01, 0x7F, 0x80, 0xFF):
                data = bytearray(seed)
                data[pos] = value
                _must_convert_or_refuse(bytes(data))
