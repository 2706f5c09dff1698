"""The tables. Every row of a user object carries its ``account_id``; every query filters on it.

Times are naive UTC ``DateTime`` values on both SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("allow_ips", Text, nullable=False, server_default=""),
    Column("sandbox", Boolean, nullable=False, server_default="0"),
    Column("created_at", DateTime, nullable=False),
    # voxflow: where each status change of this account's calls is POSTed (JSON), or NULL.
    Column("status_callback_url", String(2048), nullable=True),
)

# voxflow: an account's own limits; NULL in a column means the configured default.
account_limits = Table(
    "account_limits",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("per_destination_15m", Integer, nullable=True),
    Column("per_destination_1h", Integer, nullable=True),
    Column("per_destination_24h", Integer, nullable=True),
    Column("max_concurrent_account", Integer, nullable=True),
    Column("max_concurrent_link", Integer, nullable=True),
    Column("updated_at", DateTime, nullable=False),
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("node_name", String(255), nullable=False, server_default=""),
    Column("node_type", String(64), nullable=False, server_default=""),
    Column("node_date", DateTime, nullable=False),
    UniqueConstraint("account_id", "node_id"),
)

call_flows = Table(
    "call_flows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("notes", Text, nullable=False, server_default=""),
    Column("xml", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("account_id", "name"),
)

links = Table(
    "links",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("node_pk", Integer, ForeignKey("nodes.id"), nullable=False, index=True),
    Column("link_id", String(64), nullable=False),
    Column("link_name", String(255), nullable=False, server_default=""),
    Column("link_type", String(64), nullable=False, server_default=""),
    Column("link_date", DateTime, nullable=False),
    Column("click_to_call", Boolean, nullable=False, server_default="1"),
    Column("voxnumber", String(32), nullable=False, server_default=""),
    Column("call_flow_pk", Integer, ForeignKey("call_flows.id"), nullable=True, index=True),
    # Per-link values of the flow's variable ("?") fields: {"rule_id": {"field": "value"}}.
    Column("rule_values", Text, nullable=False, server_default="{}"),
    Column("trunk", String(64), nullable=True),
    # voxflow: where each status change of this link's calls is POSTed; overrides the account's.
    Column("status_callback_url", String(2048), nullable=True),
    UniqueConstraint("account_id", "link_id"),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("contact_id", String(64), nullable=False),
    Column("display_name", String(255), nullable=False, server_default=""),
    Column("first_name", String(255), nullable=False, server_default=""),
    Column("last_name", String(255), nullable=False, server_default=""),
    Column("email", String(255), nullable=False, server_default=""),
    Column("mobile_phone", String(64), nullable=False, server_default=""),
    Column("business_phone", String(64), nullable=False, server_default=""),
    Column("home_phone", String(64), nullable=False, server_default=""),
    Column("company", String(255), nullable=False, server_default=""),
    Column("notes", Text, nullable=False, server_default=""),
    UniqueConstraint("account_id", "contact_id"),
)

sound_files = Table(
    "sound_files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("sound_group", String(64), nullable=False),
    Column("sound_label", String(255), nullable=False),
    Column("notes", Text, nullable=False, server_default=""),
    # 16-bit PCM WAV, 8 kHz, mono: what the media layer plays without converting.
    Column("audio", LargeBinary, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("account_id", "sound_group", "sound_label"),
)

blocked_numbers = Table(
    "blocked_numbers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("number", String(32), nullable=False),
    Column("in_or_out", String(3), nullable=False),
    Column("operator", String(10), nullable=False),
    Column("default_action", String(5), nullable=False),
    Column("exceptions", Text, nullable=False, server_default="[]"),
    UniqueConstraint("account_id", "number", "in_or_out", "operator"),
)

time_templates = Table(
    "time_templates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("label", String(255), nullable=False),
    Column("time_frames", Text, nullable=False, server_default="[]"),
    UniqueConstraint("account_id", "label"),
)

calls = Table(
    "calls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", String(36), nullable=False, unique=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("link_pk", Integer, nullable=True),
    Column("link_id", String(64), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("call_flow_name", String(255), nullable=False),
    # Everything needed to place the call later, frozen at acceptance.
    Column("flow_xml", Text, nullable=False),
    Column("rule_values", Text, nullable=False),
    Column("variables", Text, nullable=False),
    Column("destination", String(20), nullable=False),
    Column("dial_string", String(255), nullable=False),
    Column("keypresses", Text, nullable=False),
    Column("trunk", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("due_at", DateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", DateTime, nullable=True),
    Column("updated_at", DateTime, nullable=False),
    Column("started_at", DateTime, nullable=True),
    Column("answered_at", DateTime, nullable=True),
    Column("ended_at", DateTime, nullable=True),
    Column("result", String(16), nullable=True),
    Column("sip_code", Integer, nullable=True),
    Column("sip_reason", String(255), nullable=True),
    # Set by cancelCall for a call in progress; the dialer that owns the call hangs it up.
    Column("cancel_requested_at", DateTime, nullable=True),
    # When a dialer took the call (lease) and how long it then waited for trunk pacing or
    # capacity before ``dialing``; why it ended as ``unknown`` or ``expired``.
    Column("claimed_at", DateTime, nullable=True),
    Column("queue_wait_ms", Integer, nullable=True),
    Column("status_reason", String(255), nullable=True),
    Index("ix_calls_status_due_at", "status", "due_at"),
    Index("ix_calls_account_destination", "account_id", "destination", "created_at"),
)

call_events = Table(
    "call_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_pk", Integer, ForeignKey("calls.id"), nullable=False, index=True),
    Column("at", DateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=False, server_default="{}"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", DateTime, nullable=False),
    PrimaryKeyConstraint("account_id", "key"),
)

# Per-trunk pacing shared by every dialer process: the trunk's theoretical arrival time
# (GCRA): the earliest moment the next call may be sent without passing the trunk's cps.
trunk_pacing = Table(
    "trunk_pacing",
    metadata,
    Column("trunk", String(64), primary_key=True),
    Column("next_slot_at", DateTime, nullable=False),
)

# Status callbacks waiting to be delivered (an outbox written in the same transaction as the
# status change it reports), with their retry state.
call_callbacks = Table(
    "call_callbacks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_pk", Integer, ForeignKey("calls.id"), nullable=False, index=True),
    Column("url", String(2048), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", DateTime, nullable=True),
    Column("delivered_at", DateTime, nullable=True),
    Column("failed_at", DateTime, nullable=True),
    Column("last_error", String(500), nullable=True),
    Index("ix_call_callbacks_pending", "delivered_at", "failed_at", "next_attempt_at"),
)
