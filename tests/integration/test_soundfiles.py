from __future__ import annotations

import base64
import io
import json
import re
import wave
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from sqlalchemy import CursorResult, select

from tests.support import ApiClient, RunningServer, errors_of, rows_of, wrap, xml_of
from tests.unit.test_wav import dominant_hz, make_wav, tone
from voxflow.store import tables as t

TONE_WAV = make_wav([tone(1000, 44100, 0.5)] * 2, 44100)  # stereo 44.1 kHz, half a second


def sound(
    label: str | None = "hello",
    group: str | None = None,
    audio: bytes | None = TONE_WAV,
    notes: str | None = "greeting",
) -> str:
    parts = []
    if label is not None:
        parts.append(f"<sound_label>{label}</sound_label>")
    if group is not None:
        parts.append(f"<sound_group>{group}</sound_group>")
    if notes is not None:
        parts.append(f"<notes>{notes}</notes>")
    if audio is not None:
        parts.append(f"<sound_file>{base64.b64encode(audio).decode()}</sound_file>")
    return wrap(*parts)


def create(api: ApiClient, body: str) -> None:
    r = api.post("SoundFiles", "createSoundFiles", body)
    assert r.status_code == 201, r.text


def account_id(server: RunningServer, api: ApiClient) -> int:
    with server.db.read() as conn:
        found: int = conn.execute(
            select(t.accounts.c.id).where(t.accounts.c.username == api.username)
        ).scalar_one()
    return found


def store_flow(server: RunningServer, api: ApiClient, name: str, xml: str) -> int:
    """A call flow stored as the CallFlow interface stores it (XML text)."""
    now = datetime(2026, 1, 1)
    owner = account_id(server, api)
    with server.db.write() as conn:
        row = t.call_flows.insert().values(
            account_id=owner, name=name, notes="", xml=xml, created_at=now, updated_at=now
        )
        return inserted_pk(conn.execute(row))


def inserted_pk(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


# ---------------------------------------------------------------- create and read


def test_create_list_and_fetch_a_sound_file(api: ApiClient) -> None:
    create(api, sound())
    rows = rows_of(api.get("SoundFiles", "getSoundFiles"))
    assert len(rows) == 1
    row = rows[0]
    assert {k: row[k] for k in ("sound_group", "sound_label", "notes", "duration")} == {
        "sound_group": "default",
        "sound_label": "hello",
        "notes": "greeting",
        "duration": "0.500",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row["created"])

    r = api.get("SoundFiles", "getSoundFileData", sound_label="hello")
    assert r.status_code == 200
    root = xml_of(r)
    assert [c.tag for c in root] == ["sound_group", "sound_label", "sound_file"]
    assert root.findtext("sound_group") == "default"
    audio = base64.b64decode(root.findtext("sound_file") or "")
    with wave.open(io.BytesIO(audio)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert abs(len(samples) - 4000) <= 1
    assert abs(dominant_hz(samples) - 1000) < 10


def test_groups_filters_fields_and_order(api: ApiClient) -> None:
    create(api, sound("hello", "ivr", audio=make_wav([tone(440, 8000, 1.25)], 8000)))
    create(api, sound("bye", "ivr", notes=None))
    create(api, sound("hello"))  # the same label in another group is another file
    rows = rows_of(api.get("SoundFiles", "getSoundFiles", sound_group="ivr"))
    assert [(r["sound_label"], r["duration"], r["notes"]) for r in rows] == [
        ("hello", "1.250", "greeting"),
        ("bye", "0.500", ""),
    ]
    rows = rows_of(api.get("SoundFiles", "getSoundFiles", sound_label="hello"))
    assert [r["sound_group"] for r in rows] == ["ivr", "default"]
    rows = rows_of(api.get("SoundFiles", "getSoundFiles", req_fields="sl,sg", order="sl_ASC"))
    assert rows == [
        {"sound_label": "bye", "sound_group": "ivr"},
        {"sound_label": "hello", "sound_group": "ivr"},
        {"sound_label": "hello", "sound_group": "default"},
    ]
    r = api.get("SoundFiles", "getSoundFileData", sound_group="ivr", sound_label="hello")
    assert r.status_code == 200
    assert xml_of(r).findtext("sound_group") == "ivr"
    assert errors_of(api.get("SoundFiles", "getSoundFiles", req_fields="sl,zz")) == [
        "Required Fields Invalid: zz"
    ]


def test_base64_wrapped_over_lines_is_accepted(api: ApiClient) -> None:
    encoded = base64.encodebytes(TONE_WAV).decode()  # 76-character lines
    assert "\n" in encoded.strip()
    body = wrap(f"<sound_label>wrapped</sound_label><sound_file>\n{encoded}\n</sound_file>")
    create(api, body)
    assert rows_of(api.get("SoundFiles", "getSoundFiles"))[0]["duration"] == "0.500"


def test_json_output(api: ApiClient) -> None:
    create(api, sound())
    body = json.loads(api.get("SoundFiles", "getSoundFiles", output="JSON").content)
    result = body["response"]["results"]["result"]
    assert isinstance(result, dict)  # one row is an object
    assert result["sound_label"] == "hello" and result["duration"] == "0.500"
    assert body["response"]["total_results"] == "1"
    data = json.loads(
        api.get("SoundFiles", "getSoundFileData", sound_label="hello", output="JSON").content
    )
    assert data["response"]["sound_group"] == "default"
    assert base64.b64decode(data["response"]["sound_file"])[:4] == b"RIFF"


# ---------------------------------------------------------------- create errors


MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" * 100


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (sound(label=None), ["Sound Label Empty"]),
        (sound(label=""), ["Sound Label Empty"]),
        (sound(label="x" * 256), ["Sound Label too long"]),
        (sound(label="a,b"), ["Sound Label Invalid"]),
        (sound(group="g" * 65), ["Sound Group too long"]),
        (sound(group="a|b"), ["Sound Group Invalid"]),
        (sound(audio=None), ["Sound File Empty"]),
        (sound(audio=b""), ["Sound File Empty"]),
        (
            wrap("<sound_label>a</sound_label><sound_file>not base64!</sound_file>"),
            ["Sound File Invalid: base64 expected"],
        ),
        (
            wrap("<sound_label>a</sound_label><sound_file>QUJDRA</sound_file>"),
            ["Sound File Invalid: base64 expected"],
        ),
        (sound(audio=MP3), ["Sound File Invalid: only WAV audio is accepted"]),
        (sound(audio=TONE_WAV[:-100]), ["Sound File Invalid: WAV data chunk is truncated"]),
        (sound(audio=make_wav([np.zeros(0)], 8000)), ["Sound File Invalid: no audio samples"]),
        (
            sound(label="", group="g" * 65, audio=MP3),
            [
                "Sound Label Empty",
                "Sound Group too long",
                "Sound File Invalid: only WAV audio is accepted",
            ],
        ),
    ],
)
def test_create_errors(api: ApiClient, body: str, expected: list[str]) -> None:
    r = api.post("SoundFiles", "createSoundFiles", body)
    assert r.status_code == 400
    assert errors_of(r) == expected
    assert rows_of(api.get("SoundFiles", "getSoundFiles")) == []


def test_limits_are_exactly_at_the_column_widths(api: ApiClient) -> None:
    create(api, sound(label="x" * 255, group="g" * 64))
    rows = rows_of(api.get("SoundFiles", "getSoundFiles"))
    assert rows[0]["sound_label"] == "x" * 255 and rows[0]["sound_group"] == "g" * 64


def test_a_label_exists_once_per_group(api: ApiClient) -> None:
    create(api, sound("hello", "ivr"))
    r = api.post("SoundFiles", "createSoundFiles", sound("hello", "ivr", notes="second"))
    assert r.status_code == 400
    assert errors_of(r) == ["Sound Label already exists in Sound Group"]
    rows = rows_of(api.get("SoundFiles", "getSoundFiles"))
    assert [(r["sound_group"], r["notes"]) for r in rows] == [("ivr", "greeting")]
    # A missing or empty group is the default group.
    create(api, sound("hello"))
    r = api.post("SoundFiles", "createSoundFiles", sound("hello", ""))
    assert errors_of(r) == ["Sound Label already exists in Sound Group"]


def test_get_sound_file_data_errors(api: ApiClient) -> None:
    create(api, sound("hello", "ivr"))
    r = api.get("SoundFiles", "getSoundFileData")
    assert r.status_code == 400 and errors_of(r) == ["Sound Label Empty"]
    r = api.get("SoundFiles", "getSoundFileData", sound_label="hello")  # default group
    assert r.status_code == 400 and errors_of(r) == ["Sound File does not exist"]
    r = api.get("SoundFiles", "getSoundFileData", sound_group="ivr", sound_label="nope")
    assert errors_of(r) == ["Sound File does not exist"]


# ---------------------------------------------------------------- delete


def test_delete_sound_files(api: ApiClient) -> None:
    create(api, sound("a", "ivr"))
    create(api, sound("b"))
    create(api, sound("c"))
    r = api.delete("SoundFiles", "deleteSoundFiles", sound_files="ivr|a,b")
    assert r.status_code == 204 and r.content == b""
    assert [r["sound_label"] for r in rows_of(api.get("SoundFiles", "getSoundFiles"))] == ["c"]
    r = api.get("SoundFiles", "getSoundFileData", sound_group="ivr", sound_label="a")
    assert errors_of(r) == ["Sound File does not exist"]


def test_delete_errors_leave_everything_in_place(api: ApiClient) -> None:
    create(api, sound("a", "ivr"))
    for params in ({}, {"sound_files": ""}):
        r = api.delete("SoundFiles", "deleteSoundFiles", **params)
        assert r.status_code == 400 and errors_of(r) == ["Sound Files Empty"]
    r = api.delete("SoundFiles", "deleteSoundFiles", sound_files="ivr|a,a,ivr|,other|a")
    assert r.status_code == 400
    assert errors_of(r) == [
        "Sound File 2 of 4 does not exist",  # "a" alone is the default group
        "Sound File 3 of 4 Empty",
        "Sound File 4 of 4 does not exist",
    ]
    assert len(rows_of(api.get("SoundFiles", "getSoundFiles"))) == 1


def test_a_sound_file_played_by_a_call_flow_cannot_be_deleted(
    api: ApiClient, server: RunningServer
) -> None:
    create(api, sound("welcome", "ivr"))
    create(api, sound("menu"))
    create(api, sound("free"))
    store_flow(
        server,
        api,
        "Reception",
        '<callFlow name="Reception"><messageKeypress id="m" label="Menu">'
        '<play id="p" label="Prompt"><soundFile soundLabel="menu"/></play>'
        '<eventHandlers><keyEvent action="onMatchKeypressSequence" keypressSequence="1">'
        '<play id="w" label="W"><soundFile soundGroup="ivr" soundLabel="welcome"/></play>'
        "</keyEvent></eventHandlers></messageKeypress></callFlow>",
    )
    r = api.delete("SoundFiles", "deleteSoundFiles", sound_files="free,ivr|welcome,default|menu")
    assert r.status_code == 400
    assert errors_of(r) == [
        "Sound File 2 of 3 is used by CallFlow Reception",
        "Sound File 3 of 3 is used by CallFlow Reception",
    ]
    assert len(rows_of(api.get("SoundFiles", "getSoundFiles"))) == 3  # "free" too: rolled back
    assert api.delete("SoundFiles", "deleteSoundFiles", sound_files="free").status_code == 204


def test_a_sound_file_given_to_a_link_for_a_flow_cannot_be_deleted(
    api: ApiClient, server: RunningServer
) -> None:
    create(api, sound("promo", "ads"))
    flow_pk = store_flow(
        server,
        api,
        "Advert",
        '<callFlow name="Advert"><play id="p1" label="Ad"><soundFile soundLabel="?"/></play>'
        "</callFlow>",
    )
    now = datetime(2026, 1, 1)
    owner = account_id(server, api)
    with server.db.write() as conn:
        node_pk = inserted_pk(
            conn.execute(t.nodes.insert().values(account_id=owner, node_id="n", node_date=now))
        )
        conn.execute(
            t.links.insert().values(
                account_id=owner,
                node_pk=node_pk,
                link_id="l1",
                link_date=now,
                call_flow_pk=flow_pk,
                rule_values=json.dumps({"p1": {"sound_files": ["ads|promo"]}}),
            )
        )
    r = api.delete("SoundFiles", "deleteSoundFiles", sound_files="ads|promo")
    assert errors_of(r) == ["Sound File 1 of 1 is used by CallFlow Advert"]
    # The open "?" of the flow is not a sound file called "?".
    create(api, sound("?"))
    assert api.delete("SoundFiles", "deleteSoundFiles", sound_files="?").status_code == 204


def test_a_flow_created_through_the_api_protects_its_sound_file(api: ApiClient) -> None:
    create(api, sound("hold"))
    r = api.post(
        "CallFlow",
        "createCallFlow",
        wrap(
            '<callFlow name="Hold"><play id="p" label="Hold">'
            '<soundFile soundLabel="hold"/></play></callFlow>'
        ),
    )
    assert r.status_code == 201, r.text
    r = api.delete("SoundFiles", "deleteSoundFiles", sound_files="hold")
    assert errors_of(r) == ["Sound File 1 of 1 is used by CallFlow Hold"]


# ---------------------------------------------------------------- accounts


def test_another_account_cannot_see_fetch_or_delete(
    api: ApiClient, api_b: ApiClient, server: RunningServer
) -> None:
    create(api, sound("hello"))
    store_flow(
        server,
        api,
        "A flow",
        '<callFlow name="A flow"><play id="p" label="P"><soundFile soundLabel="hello"/></play>'
        "</callFlow>",
    )
    assert rows_of(api_b.get("SoundFiles", "getSoundFiles")) == []
    r = api_b.get("SoundFiles", "getSoundFileData", sound_label="hello")
    assert errors_of(r) == ["Sound File does not exist"]
    r = api_b.delete("SoundFiles", "deleteSoundFiles", sound_files="hello")
    assert errors_of(r) == ["Sound File 1 of 1 does not exist"]
    # B's own file of the same name is B's: A's flow does not protect it.
    create(api_b, sound("hello", notes="bob's"))
    assert rows_of(api_b.get("SoundFiles", "getSoundFiles"))[0]["notes"] == "bob's"
    assert api_b.delete("SoundFiles", "deleteSoundFiles", sound_files="hello").status_code == 204
    assert rows_of(api.get("SoundFiles", "getSoundFiles"))[0]["notes"] == "greeting"
