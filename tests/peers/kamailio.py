"""Run kamailio as a registrar and authenticating proxy for the tests, on loopback.

kamailio runs in the foreground (``-DD -E``) in its own process group, from a temporary
directory holding the generated config, its runtime files and its log. The config is
``tests/peers/kamailio.cfg`` with ``#!define`` lines in front of it that set the listen address
(a free port), the relay target for users ``1xxx`` and the credentials, so parallel tests never
share a port. Stopping kills the whole process group (main process and its children).

``host`` may also be a :class:`~tests.peers.netns.Netns`'s ``host_addr``: kamailio then relays
to a peer inside the namespace (e.g. baresip at ``ns_addr``), as the tests do.

Example fixture (a SIPp UAS behind the proxy)::

    @pytest.fixture
    def proxy() -> Iterator[tuple[Kamailio, Sipp]]:
        with sipp_uas("uas_answer_dtmf") as uas, kamailio_proxy((uas.host, uas.port)) as k:
            yield k, uas          # dial sip:1000@{k.host}:{k.port}, user k.user / k.password
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PEERS = Path(__file__).resolve().parent
TEMPLATE = PEERS / "kamailio.cfg"


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def sip_ping(
    host: str,
    port: int,
    *,
    timeout: float = 10,
    local_host: str | None = None,
    process: subprocess.Popen[bytes] | None = None,
) -> str:
    """Send OPTIONS until ``host:port`` answers; returns the status line of the answer.

    Any response counts (kamailio's config answers 405). Raises TimeoutError, or RuntimeError
    as soon as ``process`` (the peer being waited for) has exited.
    """
    local_host = local_host or host
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((local_host, 0))
        lport = s.getsockname()[1]
        call_id = uuid.uuid4().hex
        msg = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local_host}:{lport};branch=z9hG4bK{call_id[:16]};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:ping@{local_host}>;tag={call_id[:8]}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {call_id}@{local_host}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        while True:
            s.settimeout(max(0.01, min(0.1, deadline - time.monotonic())))
            with contextlib.suppress(OSError):  # includes ICMP refused while it starts
                s.sendto(msg, (host, port))
                data = s.recv(65535)
                if call_id.encode() in data:
                    return data.split(b"\r\n", 1)[0].decode(errors="replace")
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the process exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no SIP answer from {host}:{port} within {timeout} s")


def _modules_dir() -> str:
    found = sorted(glob.glob("/usr/lib/*/kamailio/modules")) + sorted(
        glob.glob("/usr/lib*/kamailio/modules")
    )
    return found[0] + "/" if found else "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


def kill_group(process: subprocess.Popen[bytes], timeout: float = 5) -> None:
    """SIGTERM the process group of ``process`` (started with start_new_session=True), then
    SIGKILL whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout)


@dataclass
class Kamailio:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    relay: tuple[str, int]
    user: str
    password: str
    workdir: Path

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    @property
    def config(self) -> Path:
        return self.workdir / "kamailio.cfg"

    @property
    def log(self) -> str:
        """kamailio's stderr so far (``-E``; ``xlog`` lines show each relayed INVITE)."""
        return (self.workdir / "kamailio.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.returncode is None:
            kill_group(self.process)


def write_config(
    path: Path, *, host: str, port: int, relay: tuple[str, int], user: str, password: str
) -> None:
    """The template with the defines of one instance in front of it."""
    defines = [
        f"#!define LISTEN udp:{host}:{port}",
        f'#!define RELAY "sip:{relay[0]}:{relay[1]}"',
        f'#!define AUTH_USER "{user}"',
        f'#!define AUTH_PASSWORD "{password}"',
        f'#!define MODULES "{_modules_dir()}"',
    ]
    template = TEMPLATE.read_text()
    first, _, rest = template.partition("\n")
    path.write_text("\n".join([first, *defines, rest]))


@contextlib.contextmanager
def kamailio_proxy(
    relay: tuple[str, int],
    *,
    user: str = "dialer",
    password: str = "s3cret",
    host: str = "127.0.0.1",
    directory: Path | None = None,
    start_timeout: float = 10,
) -> Iterator[Kamailio]:
    """kamailio on ``host``:<free port>: REGISTER is challenged with 401, INVITE with 407
    (realm = the From domain; ``user``/``password``, an empty ``user`` accepts any name; From
    user ``open`` skips the challenge). INVITEs get a Record-Route; users ``1xxx`` are relayed to
    ``relay`` (host, port), other users are looked up among the registered contacts. Config and
    log go to ``directory`` and stay (e.g. pytest's ``tmp_path``), else to a temporary
    directory removed at the end."""
    binary = shutil.which("kamailio")
    if binary is None:
        raise RuntimeError("kamailio is not installed (apt-get install kamailio)")
    workdir = directory or Path(tempfile.mkdtemp(prefix="voxflow-kamailio-"))
    port = free_udp_port(host)
    write_config(
        workdir / "kamailio.cfg", host=host, port=port, relay=relay, user=user, password=password
    )
    args = [
        binary,
        "-f",
        str(workdir / "kamailio.cfg"),
        "-DD",
        "-E",
        "-Y",
        str(workdir),
        "-w",
        str(workdir),
        "-m",
        "32",
        "-M",
        "8",
    ]
    with (workdir / "kamailio.log").open("wb") as log:
        process = subprocess.Popen(
            args,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    k = Kamailio(process, host, port, relay, user, password, workdir)
    try:
        try:
            sip_ping(host, port, timeout=start_timeout, process=process)
        except (TimeoutError, RuntimeError):
            raise RuntimeError(
                f"kamailio did not answer on {host}:{port} (exit code {process.poll()}):\n"
                + k.log[-3000:]
            ) from None
        yield k
    finally:
        k.stop()
        if directory is None:
            shutil.rmtree(workdir, ignore_errors=True)
