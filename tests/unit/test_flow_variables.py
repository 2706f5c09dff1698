from __future__ import annotations

from lxml import etree

from voxflow.domain.flow_variables import (
    carry_over,
    describe,
    parse_rules_variable,
    resolve,
    variable_fields,
)

FLOW = etree.fromstring(
    b"""<callFlow name="Agent">
  <play id="p" label="Hi"><soundFile soundLabel="?"/><soundFile soundLabel="fixed"/></play>
  <call id="call_1" label="Call" destinationPhoneNumber="?" destinationContactId="?"
        record="?" sendCallAlert="NONE">
    <eventHandlers><callEvent result="BUSY">
      <voicemail id="vm" label="VM" destinationEmailAddress="?"/>
    </callEvent></eventHandlers>
  </call>
</callFlow>"""
)

RULES_VARIABLE = etree.fromstring(
    b"""<rules_variable>
  <rule><rule_id>call_1</rule_id><rule_type>call</rule_type><rule_label>Call</rule_label>
    <contact><contact_id/><phone_number>$agent_number</phone_number></contact>
    <send_call_alert>ALL_CALLS</send_call_alert><record_call>true</record_call>
    <sound_files/></rule>
  <rule><rule_id>p</rule_id><sound_files><sound_file>g|welcome</sound_file></sound_files></rule>
</rules_variable>"""
)


def rule(rule_id: str) -> etree._Element:
    found = FLOW.find(f".//*[@id='{rule_id}']")
    assert found is not None
    return found


def test_variable_fields_use_the_wire_names() -> None:
    assert variable_fields(rule("call_1")) == ["phone_number", "contact_id", "record_call"]
    assert variable_fields(rule("p")) == ["sound_files"]
    assert variable_fields(rule("vm")) == ["destination_email_address"]


def test_rules_variable_drops_empty_elements() -> None:
    assert parse_rules_variable(RULES_VARIABLE) == {
        "call_1": {
            "phone_number": "$agent_number",
            "send_call_alert": "ALL_CALLS",
            "record_call": "true",
        },
        "p": {"sound_files": ["g|welcome"]},
    }


def test_describe_shows_unset_fields_as_question_marks() -> None:
    rows = describe(FLOW, {"call_1": {"phone_number": "4412"}})
    assert rows[0] == {
        "rule_id": "p",
        "rule_type": "play",
        "rule_label": "Hi",
        "sound_files": {"sound_file": ["?"]},
    }
    assert rows[1]["contact"] == {"contact_id": "?", "phone_number": "4412"}
    assert rows[1]["record_call"] == "?"
    assert rows[2]["destination_email_address"] == "?"


def test_resolve_fills_values_and_reports_what_is_missing() -> None:
    values = parse_rules_variable(RULES_VARIABLE)
    resolved, missing = resolve(FLOW, values)
    call = resolved.find(".//call")
    assert call is not None
    assert call.get("destinationPhoneNumber") == "$agent_number"
    assert call.get("destinationContactId") is None  # unset optional half of the destination
    assert call.get("record") == "true"
    sounds = [(s.get("soundGroup"), s.get("soundLabel")) for s in resolved.iter("soundFile")]
    assert sounds == [("g", "welcome"), (None, "fixed")]
    assert missing == ["vm:destination_email_address"]
    # The template itself is untouched.
    assert rule("call_1").get("destinationPhoneNumber") == "?"


def test_resolve_without_values_needs_a_destination_and_the_sound() -> None:
    _, missing = resolve(FLOW, {})
    assert missing == ["p:sound_files", "call_1:phone_number", "vm:destination_email_address"]


def test_carry_over_keeps_values_of_rules_that_still_exist() -> None:
    values = {"call_1": {"phone_number": "1", "record_call": "true"}, "gone": {"x": "y"}}
    new_flow = etree.fromstring(
        b'<callFlow name="A"><call id="call_1" label="c" destinationPhoneNumber="?"/></callFlow>'
    )
    assert carry_over(new_flow, values) == {"call_1": {"phone_number": "1"}}
