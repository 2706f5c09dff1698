"""SIP trunks: the business's own carrier connections that voxflow places calls through.

The TOML config holds one ``[[trunks]]`` table per trunk; the first is the default::

    [[trunks]]
    name = "default"
    host = "sip.example.net"     # name or address; SRV/A lookup for names
    port = 5060                  # optional: omit for SRV
    transport = "udp"            # udp | tcp
    username = "4412345"         # digest credentials, empty for none
    password_env = "VOXFLOW_TRUNK_DEFAULT_PASSWORD"   # or password = "..."
    caller_id = "441234567890"

Every other key has a default (see :class:`Trunk`). The password may come from the file
(``password``), from a named environment variable (``password_env``, which must then be set),
and is always overridden by ``VOXFLOW_TRUNK_<NAME>_PASSWORD`` when that is set (the name
upper-cased, ``-`` as ``_``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from voxflow.config import ConfigError
from voxflow.digits import ascii_digits

__all__ = [
    "Trunk",
    "TrunkNotFound",
    "find_trunk",
    "load_trunks",
    "password_variable",
    "split_host_port",
]

TRANSPORTS = ("udp", "tcp")
DTMF_MODES = ("rfc4733", "info")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_CALLER_ID = re.compile(r"\+?[0-9]{1,32}")

# (key, lowest, highest) for the integer settings.
_INT_RANGES: tuple[tuple[str, int, int], ...] = (
    ("max_calls", 1, 100_000),
    ("tone_ms", 40, 10_000),
    ("gap_ms", 40, 10_000),
    ("ring_timeout_s", 1, 3_600),
    ("hold_s", 0, 86_400),
    ("register_expires_s", 60, 86_400),
    ("rtp_port_min", 1024, 65_535),
    ("rtp_port_max", 1024, 65_535),
)
_MAX_CPS = 10_000


class TrunkNotFound(ConfigError, LookupError):
    """No trunk of that name (or no trunk at all)."""


def _is_hostname(text: str) -> bool:
    labels = text.removesuffix(".").split(".")
    if ascii_digits(labels[-1]):  # no top-level domain is numeric: a mistyped IPv4 address
        return False
    return len(text) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def _is_host(text: str) -> bool:
    return _ip(text) is not None or _is_hostname(text)


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.removeprefix("[").removesuffix("]")))
    except ValueError:
        return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def split_host_port(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` → (host, port or None).

    Raises ValueError when the text is none of those.
    """
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or _ip(host) is None or (rest and not rest.startswith(":")):
            raise ValueError(text)
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if not _is_host(host):
        raise ValueError(text)
    if port_text is None:
        return host, None
    if not ascii_digits(port_text) or not 0 < int(port_text) < 65536:
        raise ValueError(text)
    return host, int(port_text)


@dataclass(frozen=True, kw_only=True)
class Trunk:
    """One trunk, validated on construction (a bad value raises :class:`ConfigError`)."""

    name: str
    host: str
    caller_id: str
    port: int | None = None
    transport: str = "udp"
    username: str = ""
    password: str = field(default="", repr=False)
    outbound_proxy: str = ""
    dtmf: str = "rfc4733"
    cps: float = 50
    max_calls: int = 500
    tone_ms: int = 200
    gap_ms: int = 50
    ring_timeout_s: int = 60
    hold_s: int = 30
    register: bool = False
    register_expires_s: int = 3600
    local_host: str = "127.0.0.1"
    rtp_port_min: int = 20000
    rtp_port_max: int = 30000

    def __post_init__(self) -> None:
        for check in (
            self._check_types,
            self._check_name,
            self._check_address,
            self._check_choices,
            self._check_credentials,
            self._check_numbers,
            self._check_rtp_ports,
        ):
            problem = check()
            if problem:
                raise ConfigError(f"trunk {_label(self.name)}: {problem}")

    @property
    def authenticates(self) -> bool:
        return bool(self.username)

    @property
    def proxy_address(self) -> tuple[str, int | None] | None:
        """The outbound proxy as (host, port or None for SRV), or None to send to ``host``."""
        return split_host_port(self.outbound_proxy) if self.outbound_proxy else None

    def _check_types(self) -> str:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _TEXT_FIELDS and not isinstance(value, str):
                return f"{f.name} must be a string"
            if f.name in _INT_FIELDS and not _is_int(value):
                return f"{f.name} must be a whole number"
        if not isinstance(self.register, bool):
            return "register must be true or false"
        if not (_is_int(self.cps) or isinstance(self.cps, float)):
            return "cps must be a number"
        if self.port is not None and not _is_int(self.port):
            return "port must be a whole number"
        return ""

    def _check_name(self) -> str:
        if not _NAME.fullmatch(self.name):
            return "name must be 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        return ""

    def _check_address(self) -> str:
        if not self.host or not _is_host(self.host):
            return f"host {self.host!r} is not a host name or IP address"
        if self.port is not None and not 0 < self.port < 65536:
            return f"port must be from 1 to 65535, not {self.port}"
        if self.outbound_proxy:
            try:
                split_host_port(self.outbound_proxy)
            except ValueError:
                return f'outbound_proxy {self.outbound_proxy!r} must be "host" or "host:port"'
        if _ip(self.local_host) is None:
            return f"local_host {self.local_host!r} must be an IP address"
        return ""

    def _check_choices(self) -> str:
        if self.transport not in TRANSPORTS:
            return 'transport must be "udp" or "tcp"'
        if self.dtmf not in DTMF_MODES:
            return 'dtmf must be "rfc4733" or "info"'
        return ""

    def _check_credentials(self) -> str:
        if self.password and not self.username:
            return "password given without username"
        if not _CALLER_ID.fullmatch(self.caller_id):
            return "caller_id must be 1-32 digits, optionally after '+'"
        return ""

    def _check_numbers(self) -> str:
        if not 0 < self.cps <= _MAX_CPS:
            return f"cps must be above 0 and at most {_MAX_CPS}"
        for key, low, high in _INT_RANGES:
            value = getattr(self, key)
            if not low <= value <= high:
                return f"{key} must be from {low} to {high}, not {value}"
        return ""

    def _check_rtp_ports(self) -> str:
        if self.rtp_port_min > self.rtp_port_max:
            return "rtp_port_min must not be above rtp_port_max"
        pairs = (self.rtp_port_max - self.rtp_port_min + 1) // 2
        if pairs < self.max_calls:
            return (
                f"rtp_port_min..rtp_port_max holds {pairs} RTP/RTCP port pairs,"
                f" fewer than max_calls ({self.max_calls})"
            )
        return ""


_TEXT_FIELDS = frozenset(
    {
        "name",
        "host",
        "caller_id",
        "transport",
        "username",
        "password",
        "outbound_proxy",
        "dtmf",
        "local_host",
    }
)
_INT_FIELDS = frozenset(key for key, _, _ in _INT_RANGES)
_KEYS = frozenset(f.name for f in fields(Trunk)) | {"password_env"}
_REQUIRED = ("name", "host", "caller_id")


def _label(name: object) -> str:
    return f'"{name}"' if isinstance(name, str) and name else repr(name)


def password_variable(name: str) -> str:
    """The environment variable that overrides a trunk's password."""
    return f"VOXFLOW_TRUNK_{name.upper().replace('-', '_')}_PASSWORD"


def _password(table: dict[str, Any], label: str, environ: Mapping[str, str]) -> object:
    """The password: the override variable, else ``password_env``, else ``password``."""
    password: object = table.get("password", "")
    variable = table.get("password_env")
    if variable is not None:
        if not isinstance(variable, str) or not variable:
            raise ConfigError(f"trunk {label}: password_env must be an environment variable name")
        if "password" in table:
            raise ConfigError(f"trunk {label}: set password or password_env, not both")
        if variable not in environ:
            raise ConfigError(f"trunk {label}: password_env names {variable}, which is not set")
        password = environ[variable]
    name = table["name"]
    if isinstance(name, str):
        password = environ.get(password_variable(name), password)
    return password


def _trunk(table: object, index: int, environ: Mapping[str, str]) -> Trunk:
    if not isinstance(table, dict):
        raise ConfigError(f"[[trunks]] entry {index + 1} must be a table")
    label = _label(table.get("name")) if "name" in table else f"#{index + 1}"
    for key in _REQUIRED:
        if key not in table:
            raise ConfigError(f"trunk {label}: {key} is required")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"trunk {label}: unknown key {unknown[0]!r}")
    values = {k: v for k, v in table.items() if k != "password_env"}
    values["password"] = _password(table, label, environ)
    return Trunk(**values)


def load_trunks(raw: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> list[Trunk]:
    """The ``[[trunks]]`` of a parsed config file, validated; an empty list when there are none.

    ``environ`` defaults to ``os.environ`` (for the password variables).
    """
    environ = os.environ if environ is None else environ
    tables = raw.get("trunks", [])
    if not isinstance(tables, list):
        raise ConfigError("trunks must be an array of tables ([[trunks]])")
    trunks: list[Trunk] = []
    seen: dict[str, str] = {}
    for index, table in enumerate(tables):
        trunk = _trunk(table, index, environ)
        key = password_variable(trunk.name)
        if key in seen:
            clash = "" if seen[key] == trunk.name else f' (clashes with "{seen[key]}")'
            raise ConfigError(f'trunk "{trunk.name}": duplicate name{clash}')
        seen[key] = trunk.name
        trunks.append(trunk)
    return trunks


def find_trunk(trunks: Sequence[Trunk], name: str | None = None) -> Trunk:
    """The trunk called ``name``, or the first (default) trunk when ``name`` is None."""
    if not trunks:
        raise TrunkNotFound("no trunks are configured ([[trunks]] in the config file)")
    if name is None:
        return trunks[0]
    for trunk in trunks:
        if trunk.name == name:
            return trunk
    raise TrunkNotFound(f'no trunk named "{name}"')
