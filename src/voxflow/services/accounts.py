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
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from voxflow.clock import Clock
from voxflow.store import tables as t
from voxflow.store.db import Database

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_DUMMY_HASH = hashlib.sha256(b"voxflow-no-such-account").hexdigest()
MAX_REMEMBERED = 10_000

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


@dataclass(frozen=True)
class _Verified:
    account: Account
    allow_ips: str
    until: float


class Authenticator:
    """Checks ``username`` + ``secureKey`` + source address; None for every failure alike.

    A client sends the same credentials with every request, so a verified (username, key) pair
    is remembered for ``ttl_s`` seconds to keep the database off the request path; the address
    check still runs on every request, and failures are never remembered.
    """

    def __init__(self, db: Database, ttl_s: float = 5.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._verified: dict[tuple[str, str], _Verified] = {}

    def remembered(self, username: str, key: str, address: str | None) -> Account | None:
        """The account when this pair was verified less than ``ttl_s`` ago and the address is
        allowed; None means "ask :meth:`authenticate`" (which may read the database)."""
        known = self._verified.get((username, hash_key(key)))
        if known is None or known.until <= time.monotonic():
            return None
        if not _address_allowed(known.allow_ips, address):
            return None
        return known.account

    def authenticate(self, username: str, key: str, address: str | None) -> Account | None:
        digest = hash_key(key)
        now = time.monotonic()
        known = self._verified.get((username, digest))
        if known is None or known.until <= now:
            known = self._verify(username, digest, now)
        if known is None or not _address_allowed(known.allow_ips, address):
            return None
        return known.account

    def _verify(self, username: str, digest: str, now: float) -> _Verified | None:
        row = None
        if USERNAME_RE.match(username):
            with self.db.read() as conn:
                row = conn.execute(_BY_USERNAME, {"username": username}).first()
        # Compare even for an unknown user, so that timing does not tell users apart.
        key_ok = hmac.compare_digest(row.key_hash if row is not None else _DUMMY_HASH, digest)
        if row is None or not key_ok:
            self._verified.pop((username, digest), None)
            return None
        if len(self._verified) > MAX_REMEMBERED:
            self._verified.clear()
        account = Account(id=row.id, username=username, sandbox=bool(row.sandbox))
        verified = _Verified(account, row.allow_ips, now + self.ttl_s)
        self._verified[(username, digest)] = verified
        return verified


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
