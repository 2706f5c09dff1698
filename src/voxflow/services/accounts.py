"""Accounts and their secure keys.

A secureKey is 128 random bits shown once as 32 hex characters. Only its SHA-256 is stored: a
key with that much entropy needs no slow hash, and a fast one keeps authentication off the
request's critical path. Comparison is constant-time, and an unknown user costs the same work
as a wrong key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from voxflow.clock import Clock
from voxflow.store import tables as t
from voxflow.store.db import Database

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_DUMMY_HASH = hashlib.sha256(b"voxflow-no-such-account").hexdigest()

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AccountError(Exception):
    """An account cannot be created; the message is one line for the operator."""


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    sandbox: bool


@dataclass(frozen=True)
class NewAccount:
    username: str
    secure_key: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_networks(cidrs: list[str]) -> list[Network]:
    nets: list[Network] = []
    for cidr in cidrs:
        try:
            nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise AccountError(f"not an IP address or CIDR range: {cidr!r}") from None
    return nets


def create_account(
    db: Database, clock: Clock, username: str, allow_ips: list[str], sandbox: bool
) -> NewAccount:
    if not USERNAME_RE.match(username):
        raise AccountError(
            f"invalid account name {username!r}: use 1-64 letters, digits, '_', '.', '@' or '-'"
        )
    nets = parse_networks(allow_ips)
    key = secrets.token_hex(16)
    try:
        with db.write() as conn:
            conn.execute(
                t.accounts.insert().values(
                    username=username,
                    key_hash=hash_key(key),
                    allow_ips=",".join(str(n) for n in nets),
                    sandbox=sandbox,
                    created_at=clock.now(),
                )
            )
    except IntegrityError:
        raise AccountError(f"account {username!r} already exists") from None
    return NewAccount(username, key)


_BY_USERNAME = select(
    t.accounts.c.id, t.accounts.c.key_hash, t.accounts.c.allow_ips, t.accounts.c.sandbox
).where(t.accounts.c.username == bindparam("username"))


def authenticate(db: Database, username: str, key: str, address: str | None) -> Account | None:
    """The account for these credentials from this address, or None (for every failure alike)."""
    with db.read() as conn:
        row = conn.execute(_BY_USERNAME, {"username": username}).first()
    stored = row.key_hash if row is not None else _DUMMY_HASH
    key_ok = hmac.compare_digest(stored, hash_key(key))
    if row is None or not key_ok or not _address_allowed(row.allow_ips, address):
        return None
    return Account(id=row.id, username=username, sandbox=bool(row.sandbox))


def _address_allowed(allow_ips: str, address: str | None) -> bool:
    if not allow_ips:
        return True
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(c) for c in allow_ips.split(","))
