"""Run SIPp as a real SIP peer for the tests, on loopback, and stop it afterwards."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_port

PEERS = Path(__file__).resolve().parent


@dataclass
class Sipp:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    media_port: int
    workdir: Path

    @property
    def messages(self) -> str:
        """Every SIP message SIPp sent and received so far (its -trace_msg log)."""
        logs = sorted(self.workdir.glob("*_messages.log"))
        return "".join(p.read_text(errors="replace") for p in logs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _udp_port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tcp_port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@contextlib.contextmanager
def sipp_uas(scenario: str, *extra: str, host: str = "127.0.0.1") -> Iterator[Sipp]:
    """SIPp answering with ``tests/peers/<scenario>.xml`` on a free port."""
    if shutil.which("sipp") is None:
        raise RuntimeError("sipp is not installed (apt-get install sip-tester)")
    workdir = Path(tempfile.mkdtemp(prefix="voxflow-sipp-"))
    port = free_port()
    media = free_port()
    while not all(_udp_port_free(media + i) for i in (0, 2)):
        media = free_port()
    args = [
        "sipp",
        "-sf",
        str(PEERS / f"{scenario}.xml"),
        "-i",
        host,
        "-p",
        str(port),
        "-mi",
        host,
        "-mp",
        str(media),
        "-rtp_echo",
        "-nostdin",
        "-trace_msg",
        "-trace_err",
        "-buff_size",
        "4194304",
        *extra,
    ]
    process = subprocess.Popen(
        args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    sipp = Sipp(process, host, port, media, workdir)
    try:
        deadline = time.monotonic() + 10
        tcp = "t1" in extra
        while _tcp_port_free(port) if tcp else _udp_port_free(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sipp did not start: {' '.join(args)}")
            time.sleep(0.05)
        yield sipp
    finally:
        sipp.stop()
        shutil.rmtree(workdir, ignore_errors=True)
