from __future__ import annotations

import dataclasses
import re
import tomllib
from typing import Any

import pytest

from voxflow.config import ConfigError
from voxflow.trunks import (
    Trunk,
    TrunkNotFound,
    find_trunk,
    load_trunks,
    password_variable,
    split_host_port,
)

FULL_EXAMPLE = """
[[trunks]]
name = "default"        # the first trunk is the default
host = "127.0.0.1"      # name or address; SRV/A lookup for names
port = 5070             # optional: omit for SRV
transport = "udp"       # udp | tcp
username = ""           # digest credentials, empty for none
password = ""
caller_id = "441234567890"
outbound_proxy = ""     # optional "host:port"
dtmf = "rfc4733"        # rfc4733 | info
cps = 50                # calls per second
max_calls = 500         # concurrent calls
tone_ms = 200           # keypress tone length
gap_ms = 50             # gap between keypresses of one run
ring_timeout_s = 60     # no answer after this: CANCEL
hold_s = 30             # hold an answered call this long, then BYE
register = false        # optional REGISTER to the trunk
register_expires_s = 3600
local_host = "127.0.0.1" # SIP/RTP bind address for this trunk's calls
rtp_port_min = 20000
rtp_port_max = 30000
"""


def table(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "main", "host": "sip.example.net", "caller_id": "441234567890"}
    base.update(overrides)
    return base


def load(*tables: dict[str, Any], environ: dict[str, str] | None = None) -> list[Trunk]:
    return load_trunks({"trunks": list(tables)}, environ=environ or {})


def refused(message: str, *tables: dict[str, Any], environ: dict[str, str] | None = None) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load(*tables, environ=environ)


# --- loading ------------------------------------------------------------------------------------


def test_the_documented_example_loads() -> None:
    [trunk] = load_trunks(tomllib.loads(FULL_EXAMPLE), environ={})
    assert trunk == Trunk(
        name="default",
        host="127.0.0.1",
        port=5070,
        transport="udp",
        username="",
        password="",
        caller_id="441234567890",
        outbound_proxy="",
        dtmf="rfc4733",
        cps=50,
        max_calls=500,
        tone_ms=200,
        gap_ms=50,
        ring_timeout_s=60,
        hold_s=30,
        register=False,
        register_expires_s=3600,
        local_host="127.0.0.1",
        rtp_port_min=20000,
        rtp_port_max=30000,
    )


def test_defaults_match_the_documented_example() -> None:
    [trunk] = load(table())
    [example] = load_trunks(tomllib.loads(FULL_EXAMPLE), environ={})
    for f in dataclasses.fields(Trunk):
        if f.name not in ("name", "host", "port"):
            assert getattr(trunk, f.name) == getattr(example, f.name), f.name
    assert trunk.port is None  # omitted: SRV


def test_no_trunks_is_an_empty_list() -> None:
    assert load_trunks({}) == []
    assert load_trunks({"trunks": []}) == []


def test_trunks_keep_their_order() -> None:
    trunks = load(table(name="a"), table(name="b"), table(name="c"))
    assert [t.name for t in trunks] == ["a", "b", "c"]


def test_trunk_is_frozen_and_hides_its_password() -> None:
    [trunk] = load(table(username="u", password="hunter2"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        trunk.host = "x"  # type: ignore[misc]
    assert "hunter2" not in repr(trunk)
    assert trunk.authenticates


@pytest.mark.parametrize("value", [12.5, 0.5, 1])
def test_cps_may_be_fractional(value: float) -> None:
    assert load(table(cps=value))[0].cps == value


@pytest.mark.parametrize(
    "host", ["sip.example.net", "SIP-1.Example.NET.", "pbx", "192.0.2.1", "2001:db8::1", "[::1]"]
)
def test_valid_hosts(host: str) -> None:
    assert load(table(host=host))[0].host == host


# --- validation: one message per rule -----------------------------------------------------------


def test_trunks_must_be_an_array_of_tables() -> None:
    with pytest.raises(
        ConfigError, match=r"^trunks must be an array of tables \(\[\[trunks\]\]\)$"
    ):
        load_trunks({"trunks": {"name": "x"}})


def test_each_entry_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"^\[\[trunks\]\] entry 2 must be a table$"):
        load_trunks({"trunks": [table(), "oops"]}, environ={})


@pytest.mark.parametrize("key", ["name", "host", "caller_id"])
def test_required_keys(key: str) -> None:
    values = table()
    del values[key]
    label = "#1" if key == "name" else '"main"'
    refused(f"trunk {label}: {key} is required", values)


def test_unknown_keys_are_refused() -> None:
    refused("trunk \"main\": unknown key 'trasnport'", table(trasnport="tcp"))


@pytest.mark.parametrize("name", ["", "has space", "-lead", "é", "x" * 65, "a.b"])
def test_bad_names(name: str) -> None:
    label = f'"{name}"' if name else "''"
    refused(
        f"trunk {label}: name must be 1-64 letters, digits, '-' or '_',"
        " starting with a letter or digit",
        table(name=name),
    )


def test_duplicate_names_are_refused() -> None:
    refused('trunk "a": duplicate name', table(name="a"), table(name="b"), table(name="a"))


def test_names_that_share_a_password_variable_are_duplicates() -> None:
    refused(
        'trunk "A_B": duplicate name (clashes with "a-b")', table(name="a-b"), table(name="A_B")
    )


@pytest.mark.parametrize(
    "host", ["", "bad host", "-x.example", "a..b", "x" * 64 + ".example", "192.0.2.300", "10.1"]
)
def test_bad_hosts(host: str) -> None:
    refused(f'trunk "main": host {host!r} is not a host name or IP address', table(host=host))


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_range(port: int) -> None:
    refused(f'trunk "main": port must be from 1 to 65535, not {port}', table(port=port))


@pytest.mark.parametrize("port", ["5060", 5060.0, True])
def test_port_type(port: object) -> None:
    refused('trunk "main": port must be a whole number', table(port=port))


@pytest.mark.parametrize("transport", ["tls", "UDP", "", "ws"])
def test_transport(transport: str) -> None:
    refused('trunk "main": transport must be "udp" or "tcp"', table(transport=transport))


def test_tcp_is_accepted() -> None:
    assert load(table(transport="tcp"))[0].transport == "tcp"


@pytest.mark.parametrize("dtmf", ["inband", "RFC2833", ""])
def test_dtmf(dtmf: str) -> None:
    refused('trunk "main": dtmf must be "rfc4733" or "info"', table(dtmf=dtmf))


def test_dtmf_info_is_accepted() -> None:
    assert load(table(dtmf="info"))[0].dtmf == "info"


@pytest.mark.parametrize(
    "key", ["host", "caller_id", "transport", "username", "password", "outbound_proxy", "dtmf"]
)
def test_text_keys_must_be_strings(key: str) -> None:
    refused(f'trunk "main": {key} must be a string', table(**{key: 5}))


def test_name_must_be_a_string() -> None:
    refused("trunk 5: name must be a string", table(name=5))


@pytest.mark.parametrize(
    "key",
    [
        "max_calls",
        "tone_ms",
        "gap_ms",
        "ring_timeout_s",
        "hold_s",
        "register_expires_s",
        "rtp_port_min",
        "rtp_port_max",
    ],
)
@pytest.mark.parametrize("value", ["10", 10.0, False])
def test_whole_number_keys(key: str, value: object) -> None:
    refused(f'trunk "main": {key} must be a whole number', table(**{key: value}))


@pytest.mark.parametrize(
    ("key", "low", "high"),
    [
        ("max_calls", 1, 100_000),
        ("tone_ms", 40, 10_000),
        ("gap_ms", 40, 10_000),
        ("ring_timeout_s", 1, 3_600),
        ("hold_s", 0, 86_400),
        ("register_expires_s", 60, 86_400),
    ],
)
def test_number_ranges(key: str, low: int, high: int) -> None:
    extra: dict[str, Any] = {"rtp_port_min": 1024, "rtp_port_max": 65535}
    for ok in (low, high):
        if key == "max_calls" and ok == high:
            continue  # the RTP range cannot hold 100000 calls; checked separately
        assert getattr(load(table(**extra, **{key: ok}))[0], key) == ok
    for bad in (low - 1, high + 1):
        refused(
            f'trunk "main": {key} must be from {low} to {high}, not {bad}',
            table(**extra, **{key: bad}),
        )


@pytest.mark.parametrize("key", ["rtp_port_min", "rtp_port_max"])
@pytest.mark.parametrize("bad", [1023, 65536])
def test_rtp_port_range_limits(key: str, bad: int) -> None:
    refused(f'trunk "main": {key} must be from 1024 to 65535, not {bad}', table(**{key: bad}))


def test_rtp_port_min_not_above_max() -> None:
    refused(
        'trunk "main": rtp_port_min must not be above rtp_port_max',
        table(rtp_port_min=30000, rtp_port_max=20000),
    )


def test_rtp_range_must_hold_max_calls() -> None:
    refused(
        'trunk "main": rtp_port_min..rtp_port_max holds 50 RTP/RTCP port pairs,'
        " fewer than max_calls (51)",
        table(rtp_port_min=20000, rtp_port_max=20099, max_calls=51),
    )
    assert load(table(rtp_port_min=20000, rtp_port_max=20099, max_calls=50))[0].max_calls == 50


@pytest.mark.parametrize("cps", [0, -1, 10_001, float("nan"), float("inf")])
def test_cps_range(cps: float) -> None:
    refused('trunk "main": cps must be above 0 and at most 10000', table(cps=cps))


@pytest.mark.parametrize("cps", ["50", True])
def test_cps_type(cps: object) -> None:
    refused('trunk "main": cps must be a number', table(cps=cps))


@pytest.mark.parametrize("register", ["yes", 1, "true"])
def test_register_must_be_a_boolean(register: object) -> None:
    refused('trunk "main": register must be true or false', table(register=register))


@pytest.mark.parametrize("caller_id", ["", "+", "44 1234", "anonymous", "1" * 33, "++44"])
def test_caller_id(caller_id: str) -> None:
    refused(
        "trunk \"main\": caller_id must be 1-32 digits, optionally after '+'",
        table(caller_id=caller_id),
    )


def test_caller_id_may_start_with_plus() -> None:
    assert load(table(caller_id="+441234567890"))[0].caller_id == "+441234567890"


@pytest.mark.parametrize("local_host", ["localhost", "", "sip.example.net", "300.1.1.1"])
def test_local_host_must_be_an_address(local_host: str) -> None:
    refused(
        f'trunk "main": local_host {local_host!r} must be an IP address',
        table(local_host=local_host),
    )


def test_local_host_may_be_ipv6() -> None:
    assert load(table(local_host="::1"))[0].local_host == "::1"


@pytest.mark.parametrize(
    ("proxy", "expected"),
    [
        ("proxy.example.net:5060", ("proxy.example.net", 5060)),
        ("proxy.example.net", ("proxy.example.net", None)),
        ("192.0.2.1:5080", ("192.0.2.1", 5080)),
        ("[2001:db8::1]:5060", ("2001:db8::1", 5060)),
        ("[2001:db8::1]", ("2001:db8::1", None)),
        ("2001:db8::1", ("2001:db8::1", None)),  # a bare IPv6 address has no port
    ],
)
def test_outbound_proxy(proxy: str, expected: tuple[str, int | None]) -> None:
    [trunk] = load(table(outbound_proxy=proxy))
    assert trunk.proxy_address == expected


def test_no_outbound_proxy() -> None:
    assert load(table())[0].proxy_address is None


@pytest.mark.parametrize(
    "proxy",
    ["proxy:0", "proxy:65536", "proxy:x", "2001:db8::1:99999", "[::1]x", "[nope]:5060", "a b:1"],
)
def test_bad_outbound_proxy(proxy: str) -> None:
    refused(
        f'trunk "main": outbound_proxy {proxy!r} must be "host" or "host:port"',
        table(outbound_proxy=proxy),
    )


def test_split_host_port_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        split_host_port("")


# --- credentials and secrets from the environment -----------------------------------------------


def test_password_without_username_is_refused() -> None:
    refused('trunk "main": password given without username', table(password="pw"))


def test_password_from_the_file() -> None:
    [trunk] = load(table(username="u", password="from-file"))
    assert trunk.password == "from-file"


def test_password_env_reads_the_named_variable() -> None:
    [trunk] = load(
        table(username="u", password_env="MY_TRUNK_SECRET"),
        environ={"MY_TRUNK_SECRET": "from-env"},
    )
    assert trunk.password == "from-env"


def test_password_env_must_be_set() -> None:
    refused(
        'trunk "main": password_env names MY_TRUNK_SECRET, which is not set',
        table(username="u", password_env="MY_TRUNK_SECRET"),
    )


@pytest.mark.parametrize("value", ["", 5])
def test_password_env_must_be_a_name(value: object) -> None:
    refused(
        'trunk "main": password_env must be an environment variable name',
        table(username="u", password_env=value),
    )


def test_password_and_password_env_together_are_refused() -> None:
    refused(
        'trunk "main": set password or password_env, not both',
        table(username="u", password="pw", password_env="X"),
        environ={"X": "y"},
    )


def test_automatic_variable_overrides_the_file() -> None:
    [trunk] = load(
        table(name="default", username="u", password="from-file"),
        environ={"VOXFLOW_TRUNK_DEFAULT_PASSWORD": "override"},
    )
    assert trunk.password == "override"


def test_automatic_variable_overrides_password_env() -> None:
    [trunk] = load(
        table(name="default", username="u", password_env="X"),
        environ={"X": "named", "VOXFLOW_TRUNK_DEFAULT_PASSWORD": "override"},
    )
    assert trunk.password == "override"


def test_automatic_variable_name() -> None:
    assert password_variable("eu-west_2") == "VOXFLOW_TRUNK_EU_WEST_2_PASSWORD"
    [trunk] = load(
        table(name="eu-west_2", username="u"),
        environ={"VOXFLOW_TRUNK_EU_WEST_2_PASSWORD": "s"},
    )
    assert trunk.password == "s"


def test_automatic_variable_without_username_is_refused() -> None:
    refused(
        'trunk "default": password given without username',
        table(name="default"),
        environ={"VOXFLOW_TRUNK_DEFAULT_PASSWORD": "s"},
    )


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXFLOW_TRUNK_MAIN_PASSWORD", "process-env")
    [trunk] = load_trunks({"trunks": [table(username="u")]})
    assert trunk.password == "process-env"


# --- direct construction and lookup -------------------------------------------------------------


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match=r'^trunk "x": transport must be "udp" or "tcp"$'):
        Trunk(name="x", host="h", caller_id="1", transport="sctp")


def test_config_error_messages_are_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load(table(host="bad\nhost"))
    assert "\n" not in str(info.value)


def test_find_trunk() -> None:
    trunks = load(table(name="first"), table(name="second"))
    assert find_trunk(trunks).name == "first"
    assert find_trunk(trunks, None).name == "first"
    assert find_trunk(trunks, "second").name == "second"
    with pytest.raises(TrunkNotFound, match=r'^no trunk named "third"$'):
        find_trunk(trunks, "third")


def test_find_trunk_without_trunks() -> None:
    with pytest.raises(TrunkNotFound, match="no trunks are configured"):
        find_trunk([])
    with pytest.raises(LookupError):
        find_trunk([], "x")
    assert issubclass(TrunkNotFound, ConfigError)
