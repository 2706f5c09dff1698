"""The shortcuts on initiateCall's path give what the general code gives."""

from __future__ import annotations

import json
import os
import pickle
import time
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from voxflow import ids
from voxflow.api import xmlcodec
from voxflow.api.calling import Pending
from voxflow.clock import WIRE_TIME_FORMAT, SystemClock, wire_time
from voxflow.domain.dialstring import DialStringError, parse_dial_string
from voxflow.domain.limits import Limits
from voxflow.services import calls
from voxflow.services.accounts import Account

TAGS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,12}", fullmatch=True)
TEXTS = st.one_of(
    st.from_regex(r"[A-Za-z0-9 _.:,@+/-]{0,20}", fullmatch=True),
    st.text(max_size=12),  # anything: the shortcut must step aside for what needs escaping
)


def with_lxml(root_tag: str, tree: dict[str, str]) -> bytes:
    root = etree.Element(root_tag)
    for tag, value in tree.items():
        etree.SubElement(root, tag).text = value
    return xmlcodec.XML_DECLARATION + etree.tostring(root, encoding="utf-8")


@given(root=TAGS, tree=st.dictionaries(TAGS, TEXTS, max_size=5))
def test_a_flat_answer_is_written_as_lxml_writes_it(root: str, tree: dict[str, str]) -> None:
    plain = xmlcodec._plain_xml(root, tree)
    if plain is not None:
        assert plain == with_lxml(root, tree)


def test_initiate_calls_answer_takes_the_shortcut() -> None:
    tree = {
        "call_id": str(uuid.uuid4()),
        "status": "queued",
        "scheduled_for": "2026-11-26 18:00:00",
    }
    assert xmlcodec._plain_xml("response", tree) == with_lxml("response", tree)
    assert xmlcodec.to_xml("response", tree) == with_lxml("response", tree)
    # Text that needs escaping goes through lxml.
    assert xmlcodec._plain_xml("response", {"a": "x<y"}) is None
    assert xmlcodec.to_xml("response", {"a": "x<y & z"}).endswith(
        b"<response><a>x&lt;y &amp; z</a></response>"
    )


def test_bodies_with_few_elements_skip_the_depth_walk_but_deep_ones_are_refused() -> None:
    deep = b"<request>" + b"<a>" * 40 + b"x" + b"</a>" * 40 + b"</request>"
    try:
        xmlcodec.parse_request(deep)
    except xmlcodec.ApiError as err:
        assert err.items[0].message.startswith("XML parse error. Document is nested too deeply")
    else:
        raise AssertionError("a body nested 41 deep was accepted")


def test_call_ids_are_version_7_distinct_and_in_the_order_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    texts = [ids.uuid7() for _ in range(5000)]
    after = time.time_ns() // 1_000_000
    made = [uuid.UUID(t) for t in texts]
    assert [str(u) for u in made] == texts  # the usual text form
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in made)
    assert len(set(made)) == len(made)
    stamps = [u.int >> 80 for u in made]  # the Unix milliseconds of each
    assert before <= stamps[0] and stamps[-1] <= after
    assert stamps == sorted(stamps)
    # Within a millisecond, the next 12 bits are its fraction: the ids still sort by time
    # to a quarter of a microsecond (the random tail orders only ids made closer than that).
    times = [u.int >> 64 & ~(0xF << 12) for u in made]
    assert times == sorted(times)
    assert len({ids.request_id() for _ in range(5000)}) == 5000


@given(st.text(alphabet="0123456789*#ABCDabcd,", max_size=40))
def test_the_stored_keypress_plan_is_the_json_of_the_plan(tail: str) -> None:
    try:
        dial = parse_dial_string("4412345" + ("," + tail if tail else ""))
    except DialStringError:
        return
    assert calls._keypress_plan(dial.keypresses) == json.dumps(
        [k.to_json() for k in dial.keypresses]
    )


@pytest.mark.parametrize(
    "value",
    [datetime(2026, 11, 26, 15, 4, 5), datetime(2026, 1, 2, 3, 4, 5, 999999), datetime(999, 1, 1)],
)
def test_wire_time_writes_what_strftime_writes(value: datetime) -> None:
    assert wire_time(value) == value.strftime(WIRE_TIME_FORMAT)


@given(variables=st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=6))
def test_the_stored_variables_are_their_sorted_json(variables: dict[str, str]) -> None:
    assert calls._variables_json(variables) == json.dumps(variables, sort_keys=True)


@given(delay=st.integers(0, 10_000), due=st.datetimes())
def test_the_first_events_detail_is_its_json(delay: int, due: datetime) -> None:
    text = due.isoformat(sep=" ")
    detail = calls.first_event_detail(delay, text)
    assert detail == json.dumps({"delay_minutes": delay, "due_at": text})


@pytest.mark.parametrize("key", [None, "key-1"])
def test_a_pending_call_crosses_to_the_writer_process_whole(key: str | None) -> None:
    now = datetime(2026, 11, 27, 3, 4, 5, 678901)
    pending = Pending(
        Account(7, "acme", True),
        "link-1",
        calls.read_request({"call_destination": "449789123123,,1,,2", "delay": "5"}, now),
        key,
        "digest" if key else "",
        now,
        Limits(per_destination_15m=3, max_concurrent_link=2),
    )
    flat = pickle.dumps(pending)
    copy = pickle.loads(flat)
    assert copy == pending
    # Flat: the parts travel as tuples of their fields, not as objects of their classes.
    assert b"CallRequest" not in flat and b"Account" not in flat and b"Limits" not in flat


def test_the_system_clock_reads_naive_utc() -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    now = SystemClock().now()
    after = datetime.now(UTC).replace(tzinfo=None)
    assert now.tzinfo is None
    assert before <= now <= after


def _random_tail(call_id: str) -> int:
    return uuid.UUID(call_id).int & ((1 << 62) - 1)  # the 62 bits that are not the time


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    ids.uuid7()  # the buffer now holds bytes a child would inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, ids.uuid7().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 36).decode()
    os.close(read)
    os.waitpid(pid, 0)
    # The random parts, not the whole ids: those differ anyway when their times do.
    assert _random_tail(child) != _random_tail(ids.uuid7())
