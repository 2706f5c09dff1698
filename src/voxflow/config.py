"""Settings: command-line flags over environment variables over the TOML file over defaults.

The TOML file (``--config FILE`` or ``VOXFLOW_CONFIG``) may hold::

    data_dir = "/var/lib/voxflow"
    [server]
    host = "127.0.0.1"
    port = 8080
    [database]
    url = "postgresql://voxflow@localhost/voxflow"
    [sip]               # our user agent: where it listens for SIP
    host = "127.0.0.1"
    port = 5080
    [sandbox]           # the simulated far end of sandbox accounts
    answer_after_s = 1.0
    hold_s = 5.0
    [softphone]         # the built-in softphone that calls go to when no trunk is configured
    port = 5070
    [dialer]
    max_calls = 500
    name = "dialer-1"   # stable and unique per dialer; default host:sip-host:sip-port
    lease_s = 30
    max_lateness_s = 3600
    shutdown_s = 30
    [limits]            # defaults for every account (voxflow account limits overrides); 0 = none
    per_destination_15m = 7
    per_destination_1h = 9
    per_destination_24h = 15
    max_concurrent_account = 0
    max_concurrent_link = 0
    [callbacks]         # status callback delivery
    timeout_s = 10.0
    max_attempts = 10
    [[trunks]]          # SIP trunks, the first is the default: see voxflow.trunks
    name = "default"
    host = "sip.example.net"
    caller_id = "441234567890"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxflow.domain.limits import Limits

if TYPE_CHECKING:
    from voxflow.trunks import Trunk


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line for the operator."""


DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def default_data_dir() -> Path:
    env = os.environ.get("VOXFLOW_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "voxflow"


@dataclass
class TelephonySettings:
    """``[sip]``, ``[sandbox]``, ``[softphone]`` and ``[dialer]``: how calls are placed."""

    sip_host: str = "127.0.0.1"  # where our user agent listens (UDP and TCP)
    sip_port: int = 5080
    sandbox_answer_after_s: float = 1.0  # the simulated far end of sandbox accounts
    sandbox_hold_s: float = 5.0
    softphone_port: int = 5070  # the built-in softphone, used when no trunk is configured
    max_calls: int = 500  # concurrent calls of this dialer
    poll_s: float = 0.2  # how often calls in progress are checked for cancel requests
    dialer_name: str = ""  # stable name of this dialer; "" for host:sip-address:port
    lease_s: float = 30.0
    recheck_s: float = 5.0
    max_lateness_s: float = 3600.0  # 0: never expire
    shutdown_s: float = 30.0
    # [limits] defaults for accounts without their own (account_limits); 0 is unlimited.
    max_concurrent_account: int = 0
    max_concurrent_link: int = 0


@dataclass
class CallbackSettings:
    """``[callbacks]``: how status callbacks are delivered (see voxflow.scheduling.callbacks)."""

    timeout_s: float = 10.0  # one POST, connect to last byte
    max_attempts: int = 10  # then the callback is given up (failed)
    max_age_s: float = 86_400.0  # nor retried once this old
    backoff_s: float = 1.0  # first retry after this, doubling each time
    backoff_max_s: float = 600.0
    concurrency: int = 16  # POSTs in flight per process
    poll_s: float = 1.0  # how often the outbox is looked at when it is idle


@dataclass
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    db_url: str = ""
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    raw: dict[str, Any] = field(default_factory=dict)
    trunks: list[Trunk] = field(default_factory=list)
    telephony: TelephonySettings = field(default_factory=TelephonySettings)
    limits: Limits = field(default_factory=Limits)
    callbacks: CallbackSettings = field(default_factory=CallbackSettings)

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'voxflow.db'}"


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def load(config_file: str | None = None, db_url: str | None = None) -> Settings:
    path = config_file or os.environ.get("VOXFLOW_CONFIG")
    raw: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    settings = Settings(raw=raw)
    if "data_dir" in raw:
        settings.data_dir = Path(str(raw["data_dir"]))
    server = _section(raw, "server")
    settings.host = str(server.get("host", DEFAULT_HOST))
    port = server.get("port", DEFAULT_PORT)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"[server] port must be a number from 1 to 65535, not {port!r}")
    settings.port = port
    database = _section(raw, "database")
    settings.db_url = db_url or os.environ.get("VOXFLOW_DB_URL") or str(database.get("url", ""))
    from voxflow.trunks import load_trunks  # here: voxflow.trunks imports ConfigError from us

    settings.trunks = load_trunks(raw)
    settings.telephony = _telephony(raw)
    settings.limits = _limits(raw)
    settings.callbacks = _callbacks(raw)
    return settings


def _number(
    section: str, raw: dict[str, Any], key: str, default: float, bounds: tuple[float, float]
) -> float:
    low, high = bounds
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(
            f"[{section}] {key} must be a number from {low:g} to {high:g}, not {value!r}"
        )
    return float(value)


def _telephony(raw: dict[str, Any]) -> TelephonySettings:
    sip, sandbox = _section(raw, "sip"), _section(raw, "sandbox")
    softphone, dialer = _section(raw, "softphone"), _section(raw, "dialer")
    limits = _section(raw, "limits")
    return TelephonySettings(
        sip_host=str(sip.get("host", "127.0.0.1")),
        sip_port=int(_number("sip", sip, "port", 5080, (0, 65535))),
        sandbox_answer_after_s=_number("sandbox", sandbox, "answer_after_s", 1.0, (0, 300)),
        sandbox_hold_s=_number("sandbox", sandbox, "hold_s", 5.0, (0, 3600)),
        softphone_port=int(_number("softphone", softphone, "port", 5070, (0, 65535))),
        max_calls=int(_number("dialer", dialer, "max_calls", 500, (1, 100_000))),
        poll_s=_number("dialer", dialer, "poll_s", 0.2, (0.01, 60)),
        dialer_name=_dialer_name(dialer),
        lease_s=_number("dialer", dialer, "lease_s", 30, (3, 3600)),
        recheck_s=_number("dialer", dialer, "recheck_s", 5, (0.05, 30)),
        max_lateness_s=_number("dialer", dialer, "max_lateness_s", 3600, (0, 30 * 86400)),
        shutdown_s=_number("dialer", dialer, "shutdown_s", 30, (0, 86400)),
        max_concurrent_account=int(
            _number("limits", limits, "max_concurrent_account", 0, (0, 1_000_000))
        ),
        max_concurrent_link=int(
            _number("limits", limits, "max_concurrent_link", 0, (0, 1_000_000))
        ),
    )


def _limits(raw: dict[str, Any]) -> Limits:
    section = _section(raw, "limits")
    unknown = set(section) - set(Limits.names())
    if unknown:
        raise ConfigError(f"[limits] has no setting {sorted(unknown)[0]!r}")
    defaults = Limits()
    values: dict[str, int] = {}
    for name in Limits.names():
        value = _number("limits", section, name, defaults.value(name), (0, 1_000_000))
        if not value.is_integer():
            raise ConfigError(f"[limits] {name} must be a whole number, not {value!r}")
        values[name] = int(value)
    return Limits(**values)


def _callbacks(raw: dict[str, Any]) -> CallbackSettings:
    section = _section(raw, "callbacks")
    d = CallbackSettings()
    return CallbackSettings(
        timeout_s=_number("callbacks", section, "timeout_s", d.timeout_s, (0.1, 300)),
        max_attempts=int(_number("callbacks", section, "max_attempts", d.max_attempts, (1, 1000))),
        max_age_s=_number("callbacks", section, "max_age_s", d.max_age_s, (1, 30 * 86_400)),
        backoff_s=_number("callbacks", section, "backoff_s", d.backoff_s, (0.01, 3600)),
        backoff_max_s=_number(
            "callbacks", section, "backoff_max_s", d.backoff_max_s, (0.01, 86_400)
        ),
        concurrency=int(_number("callbacks", section, "concurrency", d.concurrency, (1, 1000))),
        poll_s=_number("callbacks", section, "poll_s", d.poll_s, (0.01, 60)),
    )


def _dialer_name(dialer: dict[str, Any]) -> str:
    name = dialer.get("name", "")
    if not isinstance(name, str) or len(name) > 50 or "/" in name:
        raise ConfigError("[dialer] name must be text of at most 50 characters without '/'")
    return name
