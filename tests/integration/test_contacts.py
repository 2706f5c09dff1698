from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import ApiClient, errors_of, rows_of, wrap, xml_of

FIELDS = (
    "display_name",
    "first_name",
    "last_name",
    "email",
    "mobile_phone",
    "business_phone",
    "home_phone",
    "company",
    "notes",
)


def contact(contact_id: str, **fields: str) -> str:
    body = f"<contact_id>{contact_id}</contact_id>"
    body += "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return f"<contact>{body}</contact>"


def full_row(contact_id: str, **fields: str) -> dict[str, str]:
    return {"contact_id": contact_id, **{f: fields.get(f, "") for f in FIELDS}}


def create(api: ApiClient, *contacts: str) -> Any:
    return api.post("Contacts", "createContacts", wrap(*contacts))


def update(api: ApiClient, *contacts: str) -> Any:
    return api.put("Contacts", "updateContacts", wrap(*contacts))


def contact_ids(api: ApiClient, **params: Any) -> list[str]:
    return [row["contact_id"] for row in rows_of(api.get("Contacts", "getContacts", **params))]


ALICE = {
    "display_name": "Alice Smith",
    "first_name": "Alice",
    "last_name": "Smith",
    "email": "alice@example.com",
    "mobile_phone": "+447700900123",
    "business_phone": "442071234567",
    "home_phone": "441632960000",
    "company": "Acme",
    "notes": "Call after 9",
}


# ------------------------------------------------------------------ happy paths


def test_create_get_update_delete_contacts(api: ApiClient) -> None:
    r = create(api, contact("c1", **ALICE), contact("c2", display_name="Bob"))
    assert r.status_code == 201, r.text
    r = api.get("Contacts", "getContacts")
    assert r.status_code == 200
    assert rows_of(r) == [full_row("c1", **ALICE), full_row("c2", display_name="Bob")]

    r = update(
        api,
        contact("c1", new_contact_id="c1b", company="Globex", notes=""),
        contact("c2", email="bob@example.org"),
    )
    assert r.status_code == 204 and r.content == b""
    assert rows_of(api.get("Contacts", "getContacts", contact_id="c1b")) == [
        full_row("c1b", **{**ALICE, "company": "Globex", "notes": ""})
    ]
    assert rows_of(api.get("Contacts", "getContacts", contact_id="c2")) == [
        full_row("c2", display_name="Bob", email="bob@example.org")
    ]
    assert contact_ids(api, contact_id="c1") == []

    r = api.delete("Contacts", "deleteContacts", contact_ids="c1b,c2")
    assert r.status_code == 204 and r.content == b""
    assert contact_ids(api) == []


def test_phone_spaces_are_dropped_and_extra_elements_ignored(api: ApiClient) -> None:
    r = create(
        api,
        "<contact><contact_id>c1</contact_id><mobile_phone>+44 7700 900 123</mobile_phone>"
        "<groups/><business_phone> 44 20 7123 4567 </business_phone></contact>",
    )
    assert r.status_code == 201, r.text
    row = rows_of(api.get("Contacts", "getContacts"))[0]
    assert (row["mobile_phone"], row["business_phone"]) == ("+447700900123", "442071234567")


# ------------------------------------------------------------------ createContacts errors


def test_create_errors_are_numbered_and_nothing_is_half_written(api: ApiClient) -> None:
    assert create(api, contact("c1")).status_code == 201
    r = create(
        api,
        contact("ok", display_name="Fine"),  # valid, but must not be written
        contact(""),
        contact("c1"),
        contact("c4", email="not-an-email"),
        contact("c4"),
    )
    assert r.status_code == 400
    assert errors_of(r) == [
        "Contact ID 2 of 5 Empty",
        "Contact ID 3 of 5 already exists",
        "Email 4 of 5 Invalid",
        "Contact ID 5 of 5 already exists",
    ]
    assert contact_ids(api) == ["c1"]


@pytest.mark.parametrize(
    ("field", "label", "value"),
    [
        ("email", "Email", "alice.example.com"),
        ("email", "Email", "@example.com"),
        ("email", "Email", "alice@"),
        ("email", "Email", "alice smith@example.com"),
        ("mobile_phone", "Mobile Phone", "07700-900123"),
        ("business_phone", "Business Phone", "call me"),
        ("home_phone", "Home Phone", "44+20"),
        ("home_phone", "Home Phone", "+"),
    ],
)
def test_create_rejects_invalid_email_and_phones(
    api: ApiClient, field: str, label: str, value: str
) -> None:
    r = create(api, contact("c0"), contact("c1", **{field: value}))
    assert r.status_code == 400
    assert errors_of(r) == [f"{label} 2 of 2 Invalid"]
    assert contact_ids(api) == []


def test_create_rejects_too_long_values_without_a_server_error(api: ApiClient) -> None:
    r = create(
        api,
        contact("x" * 65),
        contact("c2", display_name="d" * 256, company="c" * 256),
        contact("c3", mobile_phone="1" * 65, email="a@" + "b" * 254),
    )
    assert r.status_code == 400, r.text
    assert errors_of(r) == [
        "Contact ID 1 of 3 too long",
        "Display Name 2 of 3 too long",
        "Company 2 of 3 too long",
        "Email 3 of 3 too long",
        "Mobile Phone 3 of 3 too long",
    ]
    assert contact_ids(api) == []
    # Notes are free text with no column limit.
    r = create(api, contact("x" * 64, display_name="d" * 255, notes="n" * 5000))
    assert r.status_code == 201, r.text
    assert rows_of(api.get("Contacts", "getContacts"))[0]["notes"] == "n" * 5000


# ------------------------------------------------------------------ updateContacts


def test_update_errors_roll_back_every_item(api: ApiClient) -> None:
    assert create(api, contact("c1", company="Acme"), contact("c2")).status_code == 201
    r = update(
        api,
        contact("c1", company="Changed", new_contact_id="c1x"),
        contact("", company="X"),
        contact("nope"),
        contact("c2", new_contact_id="c1x"),
        contact("c2", mobile_phone="abc", email="x"),
    )
    assert r.status_code == 400
    assert errors_of(r) == [
        "Contact ID 2 of 5 Empty",
        "Contact ID 3 of 5 does not exist",
        "New Contact ID 4 of 5 already exist",
        "Email 5 of 5 Invalid",
        "Mobile Phone 5 of 5 Invalid",
    ]
    assert rows_of(api.get("Contacts", "getContacts")) == [
        full_row("c1", company="Acme"),
        full_row("c2"),
    ]


def test_update_rejects_an_existing_new_contact_id(api: ApiClient) -> None:
    assert create(api, contact("c1"), contact("c2")).status_code == 201
    r = update(api, contact("c1", new_contact_id="c2"))
    assert r.status_code == 400
    assert errors_of(r) == ["New Contact ID 1 of 1 already exist"]
    r = update(api, contact("c1", new_contact_id="y" * 65, first_name="f" * 256))
    assert r.status_code == 400, r.text
    assert errors_of(r) == ["New Contact ID 1 of 1 too long", "First Name 1 of 1 too long"]
    assert contact_ids(api) == ["c1", "c2"]


def test_update_changes_only_the_fields_given(api: ApiClient) -> None:
    assert create(api, contact("c1", **ALICE)).status_code == 201
    assert update(api, contact("c1", home_phone="+33 1 23 45 67 89")).status_code == 204
    assert rows_of(api.get("Contacts", "getContacts")) == [
        full_row("c1", **{**ALICE, "home_phone": "+33123456789"})
    ]


# ------------------------------------------------------------------ deleteContacts


def test_delete_errors_and_nothing_is_deleted(api: ApiClient) -> None:
    assert create(api, contact("c1"), contact("c2")).status_code == 201
    r = api.delete("Contacts", "deleteContacts", contact_ids="c1,,nope")
    assert r.status_code == 400
    assert errors_of(r) == ["Contact ID 2 of 3 Empty", "Contact ID 3 of 3 does not exist"]
    assert contact_ids(api) == ["c1", "c2"]


@pytest.mark.parametrize("params", [{}, {"contact_ids": ""}])
def test_delete_needs_contact_ids(api: ApiClient, params: dict[str, str]) -> None:
    r = api.delete("Contacts", "deleteContacts", **params)
    assert r.status_code == 400
    assert errors_of(r) == ["Contact IDs Empty"]


# ------------------------------------------------------------------ getContacts


def test_get_contacts_paging_req_fields_and_order(api: ApiClient) -> None:
    r = create(
        api,
        contact("c1", display_name="Carol", email="carol@example.com"),
        contact("c2", display_name="Alice"),
        contact("c3", display_name="Bob"),
    )
    assert r.status_code == 201, r.text
    r = api.get("Contacts", "getContacts", req_fields="cid,dn", order="dn_ASC", limit=2, page=1)
    assert rows_of(r) == [
        {"contact_id": "c2", "display_name": "Alice"},
        {"contact_id": "c3", "display_name": "Bob"},
    ]
    assert xml_of(r).findtext("total_pages") == "2"
    r = api.get("Contacts", "getContacts", req_fields="em,no,mp,bp,hp,co,fn,ln", contact_id="c1")
    assert rows_of(r) == [
        {
            "email": "carol@example.com",
            "notes": "",
            "mobile_phone": "",
            "business_phone": "",
            "home_phone": "",
            "company": "",
            "first_name": "",
            "last_name": "",
        }
    ]
    assert errors_of(api.get("Contacts", "getContacts", req_fields="cid,xx")) == [
        "Required Fields Invalid: xx"
    ]


def test_get_contacts_json(api: ApiClient) -> None:
    assert create(api, contact("c1", **ALICE), contact("c2")).status_code == 201
    one = json.loads(api.get("Contacts", "getContacts", output="JSON", contact_id="c1").content)
    assert one["response"]["results"]["result"] == full_row("c1", **ALICE)
    assert one["response"]["total_results"] == "1"
    many = json.loads(api.get("Contacts", "getContacts", output="JSON").content)
    assert many["response"]["results"]["result"][1] == full_row("c2")
    empty = json.loads(api.get("Contacts", "getContacts", output="JSON", contact_id="zz").content)
    assert empty["response"]["results"] == ""


# ------------------------------------------------------------------ account isolation


def test_other_account_cannot_see_or_change_contacts(api: ApiClient, api_b: ApiClient) -> None:
    assert create(api, contact("c1", **ALICE)).status_code == 201
    assert rows_of(api_b.get("Contacts", "getContacts")) == []
    assert contact_ids(api_b, contact_id="c1") == []

    r = update(api_b, contact("c1", company="Evil"))
    assert r.status_code == 400
    assert errors_of(r) == ["Contact ID 1 of 1 does not exist"]
    r = api_b.delete("Contacts", "deleteContacts", contact_ids="c1")
    assert errors_of(r) == ["Contact ID 1 of 1 does not exist"]

    # B may use the same id, and renaming it affects only B's contact.
    assert create(api_b, contact("c1", display_name="B's")).status_code == 201
    assert update(api_b, contact("c1", new_contact_id="c9")).status_code == 204
    assert api_b.delete("Contacts", "deleteContacts", contact_ids="c9").status_code == 204
    assert rows_of(api.get("Contacts", "getContacts")) == [full_row("c1", **ALICE)]
