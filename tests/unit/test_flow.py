from __future__ import annotations

import pytest
from lxml import etree

from voxflow.domain.flow import (
    Call,
    Checks,
    FlowError,
    HttpRequest,
    MessageKeypress,
    Play,
    Voicemail,
    call_variable_names,
    parse_flow,
)
from voxflow.domain.sounds import SoundRef

AGENT = """
<callFlow name="Call Agent" notes="n">
  <play id="p1" label="Welcome"><soundFile soundGroup="g" soundLabel="hello"/></play>
  <call id="call_1" label="Call" destinationPhoneNumber="?" destinationContactId="?" record="true"
        sendCallAlert="NONE" timeout="30">
    <callerMessage><soundFile soundLabel="ringing"/></callerMessage>
    <calledMessage><soundFile soundGroup="g" soundLabel="whisper"/></calledMessage>
    <eventHandlers>
      <callEvent action="onMatchResult" result="BUSY">
        <voicemail id="vm" label="VM" destinationEmailAddress="a@b.c" silence="5" maxDuration="60"/>
      </callEvent>
    </eventHandlers>
    <failure><httpRequest id="h" label="Hook" url="https://x.test/$order" requestMethod="POST">
      <params><param name="who" value="$first_name"/><param name="id" value="$_call_id"/></params>
    </httpRequest></failure>
  </call>
  <messageKeypress id="m" label="Menu" timeout="5">
    <play id="m_p" label="Prompt"><soundFile soundLabel="menu"/></play>
    <eventHandlers>
      <keyEvent action="onMatchKeypressSequence" keypressSequence="1">
        <call id="c2" label="Sales" destinationPhoneNumber="$sales_number"/>
      </keyEvent>
    </eventHandlers>
    <failure attempts="3"><noKeypressMessage><soundFile soundLabel="menu"/></noKeypressMessage></failure>
  </messageKeypress>
</callFlow>
"""


def el(xml: str) -> etree._Element:
    return etree.fromstring(xml.strip().encode())


def problems(xml: str, checks: Checks | None = None) -> list[str]:
    with pytest.raises(FlowError) as info:
        parse_flow(el(xml), checks)
    return info.value.problems


def test_a_full_flow_parses_into_a_typed_tree() -> None:
    flow = parse_flow(el(AGENT))
    assert flow.name == "Call Agent" and flow.notes == "n"
    kinds = [(r.kind, r.id) for r in flow.walk()]
    assert kinds == [
        ("play", "p1"),
        ("call", "call_1"),
        ("voicemail", "vm"),
        ("httpRequest", "h"),
        ("messageKeypress", "m"),
        ("play", "m_p"),
        ("call", "c2"),
    ]
    play, call, menu = flow.rules
    assert isinstance(play, Play) and play.sounds[0].ref == SoundRef("g", "hello")
    assert isinstance(call, Call) and call.destination_phone_number == "?"
    assert call.caller_message[0].ref == SoundRef("default", "ringing")
    assert call.events[0].result == "BUSY" and isinstance(call.events[0].rules[0], Voicemail)
    assert isinstance(call.failure[0], HttpRequest) and call.failure[0].request_method == "POST"
    assert isinstance(menu, MessageKeypress) and menu.events[0].sequence == "1"
    assert menu.prompt is not None and menu.prompt.id == "m_p"


def test_call_variable_references_in_order_without_builtins() -> None:
    assert call_variable_names(el(AGENT)) == ["order", "first_name", "sales_number"]


def test_every_problem_is_reported_with_the_iovox_wording() -> None:
    xml = """<callFlow name="">
      <play id="a" label=""><soundFile soundLabel="nope"/></play>
      <play id="a" label="x"><soundFile soundLabel="nope"/></play>
      <call id="" label="c"/>
      <dance id="d" label="d"/>
    </callFlow>"""
    checks = Checks(sound_exists=lambda ref: False)
    assert problems(xml, checks) == [
        "CallFlow Name Empty",
        "Rule Label Empty",
        "Sound File Does not exist in Play Rule",
        "Rule ID Not Unique in Play Rule",
        "Rule ID Empty",
        "Destination Empty in Call Rule",
        "Rule Type dance does not exist",
    ]


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ('<callFlow name="x"/>', "There are no Rules in this Template"),
        (
            f'<callFlow name="{"n" * 101}"><play id="a" label="a"><soundFile soundLabel="s"/></play></callFlow>',
            "CallFlow Name too long",
        ),
        ('<callFlow name="x"><play id="a" label="a"/></callFlow>', "Sound File Empty in Play Rule"),
        (
            '<callFlow name="x"><call id="a" label="a" destinationPhoneNumber="+44"/></callFlow>',
            "Destination Phone Number Invalid in Call Rule",
        ),
        (
            '<callFlow name="x"><call id="a" label="a" destinationContactId="c9"/></callFlow>',
            "Contact ID c9 does not exist in Call Rule",
        ),
        (
            '<callFlow name="x"><call id="a" label="a" destinationPhoneNumber="1" timeout="0"/></callFlow>',
            "Timeout Invalid in Call Rule",
        ),
        (
            '<callFlow name="x"><call id="a" label="a" destinationPhoneNumber="1" sendCallAlert="X"/></callFlow>',
            "Send Call Alert Invalid in Call Rule",
        ),
        (
            '<callFlow name="x"><call id="a" label="a" destinationPhoneNumber="1" record="maybe"/></callFlow>',
            "Record Invalid in Call Rule",
        ),
        (
            '<callFlow name="x"><httpRequest id="a" label="a" url="ftp://x"/></callFlow>',
            "URL Invalid in Http Request Rule",
        ),
        (
            '<callFlow name="x"><voicemail id="a" label="a" destinationEmailAddress="nope"/></callFlow>',
            "Email Address Invalid in Voicemail Rule",
        ),
        (
            '<callFlow name="x"><messageKeypress id="a" label="a"><eventHandlers>'
            '<keyEvent keypressSequence="x"/></eventHandlers></messageKeypress></callFlow>',
            "Keypress Sequence Invalid in Message Keypress Rule",
        ),
        (
            '<callFlow name="x"><call id="a" label="a" destinationPhoneNumber="1"><eventHandlers>'
            '<callEvent result="MAYBE"/></eventHandlers></call></callFlow>',
            "Call Event Invalid in Call Rule",
        ),
    ],
)
def test_single_problem(xml: str, message: str) -> None:
    assert problems(xml, Checks(contact_exists=lambda cid: False)) == [message]


def test_variable_and_reference_values_are_not_checked_as_literals() -> None:
    xml = """<callFlow name="x">
      <call id="a" label="a" destinationPhoneNumber="$num" destinationContactId="?" timeout="?"/>
      <play id="b" label="b"><soundFile soundLabel="?"/></play>
    </callFlow>"""
    nothing = Checks(sound_exists=lambda ref: False, contact_exists=lambda cid: False)
    assert [r.id for r in parse_flow(el(xml), nothing).walk()] == ["a", "b"]
