from __future__ import annotations

import json

import pytest

from tests.support import ApiClient, errors_of, rows_of, wrap, xml_of


def frame(
    date_from: str | None = "2026-01-01",
    date_to: str | None = "2026-12-31",
    recurrence: str | None = "NONE",
    time_from: str | None = "09:00",
    time_to: str | None = "17:30",
    *,
    days: list[str] | None = None,
) -> str:
    parts = [
        f"<{tag}>{value}</{tag}>"
        for tag, value in (
            ("date_from", date_from),
            ("date_to", date_to),
            ("recurrence", recurrence),
            ("time_from", time_from),
            ("time_to", time_to),
        )
        if value is not None
    ]
    if days is not None:
        parts.append("<days>" + "".join(f"<day>{d}</day>" for d in days) + "</days>")
    return "<time_frame>" + "".join(parts) + "</time_frame>"


def template(label: str | None, *frames: str, new_label: str | None = None) -> str:
    parts = [f"<label>{label}</label>"] if label is not None else []
    if new_label is not None:
        parts.append(f"<new_label>{new_label}</new_label>")
    if frames:
        parts.append("<time_frames>" + "".join(frames) + "</time_frames>")
    return "<time_template>" + "".join(parts) + "</time_template>"


OFFICE = template(
    "Office",
    frame(days=["MON", "TUE", "WED", "THU", "FRI"]),
    frame("2026-12-24", "2026-12-26", "YEARLY", "00:00", "23:59", days=["SUN", "sat"]),
)


def create(api: ApiClient, *templates: str) -> None:
    r = api.post("Rules", "createTimeTemplates", wrap(*templates))
    assert r.status_code == 201, r.text


def labels(api: ApiClient) -> list[str]:
    return [r["label"] for r in rows_of(api.get("Rules", "getTimeTemplates"))]


def frames_of(api: ApiClient, label: str) -> list[dict[str, object]]:
    body = json.loads(api.get("Rules", "getTimeTemplates", label=label, output="JSON").content)
    found = body["response"]["results"]["result"]["time_frames"]["time_frame"]
    return found if isinstance(found, list) else [found]


# ---------------------------------------------------------------- create and read


def test_create_and_read_nested_frames(api: ApiClient) -> None:
    create(api, OFFICE)
    r = api.get("Rules", "getTimeTemplates")
    assert r.status_code == 200
    root = xml_of(r)
    assert root.findtext("total_results") == "1"
    result = root.find("results/result")
    assert result is not None and result.findtext("label") == "Office"
    frames = result.findall("time_frames/time_frame")
    assert [[c.tag for c in f] for f in frames] == [
        ["date_from", "date_to", "recurrence", "time_from", "time_to", "days"]
    ] * 2
    assert [d.text for d in frames[0].findall("days/day")] == ["MON", "TUE", "WED", "THU", "FRI"]
    assert [d.text for d in frames[1].findall("days/day")] == ["SAT", "SUN"]  # week order
    assert frames[1].findtext("recurrence") == "YEARLY"
    assert frames[0].findtext("time_to") == "17:30"


def test_json_mirror(api: ApiClient) -> None:
    create(api, OFFICE, template("Night", frame(None, None, None, "22:00", "06:00", days=["MON"])))
    body = json.loads(api.get("Rules", "getTimeTemplates", output="JSON").content)
    office, night = body["response"]["results"]["result"]
    assert office["label"] == "Office"
    assert office["time_frames"]["time_frame"][1] == {
        "date_from": "2026-12-24",
        "date_to": "2026-12-26",
        "recurrence": "YEARLY",
        "time_from": "00:00",
        "time_to": "23:59",
        "days": {"day": ["SAT", "SUN"]},
    }
    # One frame is an object, one day a string; a missing date is "".
    assert night["time_frames"]["time_frame"] == {
        "date_from": "",
        "date_to": "",
        "recurrence": "NONE",
        "time_from": "22:00",
        "time_to": "06:00",
        "days": {"day": "MON"},
    }


def test_frame_defaults(api: ApiClient) -> None:
    create(api, template("Always", "<time_frame/>"))
    assert frames_of(api, "Always") == [
        {
            "date_from": "",
            "date_to": "",
            "recurrence": "NONE",
            "time_from": "00:00",
            "time_to": "23:59",
            "days": "",
        }
    ]


def test_filter_fields_and_paging(api: ApiClient) -> None:
    create(api, template("b", frame()), template("a", frame()), template("c", frame()))
    assert labels(api) == ["b", "a", "c"]
    rows = rows_of(api.get("Rules", "getTimeTemplates", req_fields="l", order="l_DESC"))
    assert rows == [{"label": "c"}, {"label": "b"}, {"label": "a"}]
    rows = rows_of(api.get("Rules", "getTimeTemplates", req_fields="l", limit="2", page="2"))
    assert rows == [{"label": "c"}]
    assert rows_of(api.get("Rules", "getTimeTemplates", label="a"))[0]["label"] == "a"
    assert rows_of(api.get("Rules", "getTimeTemplates", label="zz")) == []
    assert errors_of(api.get("Rules", "getTimeTemplates", order="x_ASC")) == ["Order Field Invalid"]


# ---------------------------------------------------------------- create errors


@pytest.mark.parametrize(
    ("templates", "expected"),
    [
        ([template(None, frame())], ["Time Template 1 of 1 Empty"]),
        ([template("", frame())], ["Time Template 1 of 1 Empty"]),
        ([template("x" * 256, frame())], ["Time Template 1 of 1 too long"]),
        ([template("a", frame()), template("a", frame())], ["Time Template 2 of 2 already exists"]),
        ([template("a")], ["Time Frames 1 of 1 Empty"]),
        (
            [template("a").replace("</label>", "</label><time_frames/>")],
            ["Time Frames 1 of 1 Empty"],
        ),
        (
            [template("a", frame(date_from="2026-13-01"))],
            ["Time Frame 1 of 1 Invalid: date_from must be a date YYYY-MM-DD"],
        ),
        (
            [template("a", frame(date_to="31/12/2026"))],
            ["Time Frame 1 of 1 Invalid: date_to must be a date YYYY-MM-DD"],
        ),
        (
            [template("a", frame("2026-05-02", "2026-05-01"))],
            ["Time Frame 1 of 1 Invalid: date_to is before date_from"],
        ),
        (
            [template("a", frame(recurrence="WEEKLY"))],
            ["Time Frame 1 of 1 Invalid: recurrence must be NONE, MONTHLY or YEARLY"],
        ),
        (
            [template("a", frame(time_from="9:00"))],
            ["Time Frame 1 of 1 Invalid: time_from must be a time HH:MM"],
        ),
        (
            [template("a", frame(time_to="24:00"))],
            ["Time Frame 1 of 1 Invalid: time_to must be a time HH:MM"],
        ),
        (
            [template("a", frame(days=["MON", "FUNDAY"]))],
            ["Time Frame 1 of 1 Invalid: day must be one of MON, TUE, WED, THU, FRI, SAT, SUN"],
        ),
        (
            # Frames are numbered across the request; every bad one is reported.
            [
                template("a", frame(), frame(time_to="x")),
                template("", frame(recurrence="x"), frame()),
            ],
            [
                "Time Frame 2 of 4 Invalid: time_to must be a time HH:MM",
                "Time Template 2 of 2 Empty",
                "Time Frame 3 of 4 Invalid: recurrence must be NONE, MONTHLY or YEARLY",
            ],
        ),
    ],
)
def test_create_errors(api: ApiClient, templates: list[str], expected: list[str]) -> None:
    r = api.post("Rules", "createTimeTemplates", wrap(*templates))
    assert r.status_code == 400
    assert errors_of(r) == expected
    assert labels(api) == []


def test_create_refuses_an_existing_label_and_writes_nothing(api: ApiClient) -> None:
    create(api, OFFICE)
    r = api.post("Rules", "createTimeTemplates", wrap(template("New", frame()), OFFICE))
    assert errors_of(r) == ["Time Template 2 of 2 already exists"]
    assert labels(api) == ["Office"]
    r = api.post("Rules", "createTimeTemplates", wrap("<label>loose</label>"))
    assert errors_of(r) == ["Request Empty"]


def test_longest_label_fits(api: ApiClient) -> None:
    create(api, template("x" * 255, frame()))
    assert labels(api) == ["x" * 255]


# ---------------------------------------------------------------- update


def test_update_renames_and_replaces_frames(api: ApiClient) -> None:
    create(api, OFFICE, template("Night", frame()))
    r = api.put(
        "Rules",
        "updateTimeTemplates",
        wrap(
            template("Office", new_label="Office hours"),  # frames kept
            template("Night", frame(None, None, "MONTHLY", "20:00", "08:00")),
        ),
    )
    assert r.status_code == 204 and r.content == b""
    assert labels(api) == ["Office hours", "Night"]
    assert len(frames_of(api, "Office hours")) == 2
    assert frames_of(api, "Night") == [
        {
            "date_from": "",
            "date_to": "",
            "recurrence": "MONTHLY",
            "time_from": "20:00",
            "time_to": "08:00",
            "days": "",
        }
    ]


def test_update_errors_roll_back_every_item(api: ApiClient) -> None:
    create(api, OFFICE, template("Night", frame()))
    r = api.put(
        "Rules",
        "updateTimeTemplates",
        wrap(
            template("Office", new_label="Renamed"),
            template("Nope", frame()),
            template("Night", new_label="Renamed"),  # taken by item 1 in this request
            template("Night", new_label="n" * 256),
            template("Office").replace("</label>", "</label><time_frames/>"),
            template("", frame(days=["XYZ"])),
        ),
    )
    assert r.status_code == 400
    assert errors_of(r) == [
        "Time Template 2 of 6 does not exist",
        "New Time Template 3 of 6 already exists",
        "New Time Template 4 of 6 too long",
        "Time Template 5 of 6 does not exist",  # item 1 renamed it within this request
        "Time Frames 5 of 6 Empty",
        "Time Template 6 of 6 Empty",
        "Time Frame 2 of 2 Invalid: day must be one of MON, TUE, WED, THU, FRI, SAT, SUN",
    ]
    assert labels(api) == ["Office", "Night"]


# ---------------------------------------------------------------- delete


def test_delete_time_templates(api: ApiClient) -> None:
    create(api, template("a", frame()), template("b", frame()), template("c", frame()))
    r = api.delete("Rules", "deleteTimeTemplates", labels="a,c")
    assert r.status_code == 204 and r.content == b""
    assert labels(api) == ["b"]


def test_delete_errors(api: ApiClient) -> None:
    create(api, template("a", frame()))
    for params in ({}, {"labels": ""}):
        r = api.delete("Rules", "deleteTimeTemplates", **params)
        assert r.status_code == 400 and errors_of(r) == ["Time Templates Empty"]
    r = api.delete("Rules", "deleteTimeTemplates", labels="a,,zz")
    assert r.status_code == 400
    assert errors_of(r) == ["Time Template 2 of 3 Empty", "Time Template 3 of 3 does not exist"]
    assert labels(api) == ["a"]


# ---------------------------------------------------------------- accounts


def test_another_account_cannot_see_update_or_delete(api: ApiClient, api_b: ApiClient) -> None:
    create(api, OFFICE)
    assert labels(api_b) == []
    r = api_b.put("Rules", "updateTimeTemplates", wrap(template("Office", new_label="Mine")))
    assert errors_of(r) == ["Time Template 1 of 1 does not exist"]
    r = api_b.delete("Rules", "deleteTimeTemplates", labels="Office")
    assert errors_of(r) == ["Time Template 1 of 1 does not exist"]
    create(api_b, template("Office", frame(days=["SUN"])))
    assert frames_of(api_b, "Office")[0]["days"] == {"day": "SUN"}
    assert len(frames_of(api, "Office")) == 2
