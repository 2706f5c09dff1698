from __future__ import annotations

import json

from tests.support import ApiClient, attach, errors_of, make_flow, make_link, rows_of, wrap, xml_of

AGENT = (
    '<callFlow name="Call Agent" notes="first">'
    '<call id="call_1" label="Call" destinationPhoneNumber="?" destinationContactId="?" '
    'record="true" sendCallAlert="NONE"/></callFlow>'
)


def test_create_and_read_a_call_flow(api: ApiClient) -> None:
    make_flow(api, AGENT)
    r = api.get("CallFlow", "getCallFlow", call_flow="Call Agent")
    assert r.status_code == 200
    flow = xml_of(r).find("callFlow")
    assert flow is not None and flow.get("name") == "Call Agent"
    call = flow.find("call")
    assert call is not None and call.get("destinationPhoneNumber") == "?"
    rows = rows_of(api.get("CallFlow", "getCallFlows"))
    assert [(row["call_flow_name"], row["notes"]) for row in rows] == [("Call Agent", "first")]
    templates = rows_of(api.get("Rules", "getRuleTemplates", template_type="CUSTOM"))
    assert templates[0]["template_name"] == "Call Agent"
    assert rows_of(api.get("Rules", "getRuleTemplates", template_type="DEFAULT")) == []


def test_get_call_flow_as_json(api: ApiClient) -> None:
    make_flow(api, AGENT)
    r = api.get("CallFlow", "getCallFlow", call_flow="Call Agent", output="JSON")
    body = json.loads(r.content)
    assert body["response"]["callFlow"]["@name"] == "Call Agent"
    assert body["response"]["callFlow"]["call"]["@record"] == "true"


def test_call_flow_errors(api: ApiClient) -> None:
    make_flow(api, AGENT)
    cases = [
        (AGENT, ["CallFlow Name already exists"]),
        (
            '<callFlow name=""><play id="a" label="a"><soundFile soundLabel="s"/></play></callFlow>',
            ["CallFlow Name Empty", "Sound File Does not exist in Play Rule"],
        ),
        ('<callFlow name="x"></callFlow>', ["There are no Rules in this Template"]),
        (
            '<callFlow name="x"><play id="" label="a"><soundFile soundLabel="s"/></play></callFlow>',
            ["Rule ID Empty", "Sound File Does not exist in Play Rule"],
        ),
        (
            '<callFlow name="x"><call id="a" label="" destinationPhoneNumber="1"/>'
            '<call id="a" label="b" destinationPhoneNumber="1"/></callFlow>',
            ["Rule Label Empty", "Rule ID Not Unique in Call Rule"],
        ),
        (
            '<callFlow name="x"><call id="a" label="a" destinationContactId="ghost"/></callFlow>',
            ["Contact ID ghost does not exist in Call Rule"],
        ),
        (
            f'<callFlow name="{"n" * 101}"><call id="a" label="a" destinationPhoneNumber="1"/></callFlow>',
            ["CallFlow Name too long"],
        ),
    ]
    for flow, expected in cases:
        r = api.post("CallFlow", "createCallFlow", wrap(flow))
        assert r.status_code == 400, flow
        assert errors_of(r) == expected, flow
    assert len(rows_of(api.get("CallFlow", "getCallFlows"))) == 1
    r = api.get("CallFlow", "getCallFlow", call_flow="nope")
    assert errors_of(r) == ["Call Flow Doesn't exist"]


def test_update_renames_and_carries_link_values_over(api: ApiClient) -> None:
    make_link(api)
    make_flow(api, AGENT)
    attach(
        api,
        "Call Agent",
        "link123",
        rules_variable="<rules_variable><rule><rule_id>call_1</rule_id><contact><phone_number>"
        "441234</phone_number></contact></rule></rules_variable>",
    )
    updated = (
        '<callFlow name="Call Agent" newName="Agent 2"><call id="call_1" label="Call" '
        'destinationPhoneNumber="?"/><call id="call_2" label="Two" destinationPhoneNumber="?"/>'
        "</callFlow>"
    )
    assert api.put("CallFlow", "updateCallFlow", wrap(updated)).status_code == 204
    links = rows_of(api.get("Links", "getLinks", link_id="link123"))
    assert links[0]["rule_name"] == "Agent 2"
    r = api.get("Rules", "getVariableRulesOfTemplate", template_name="Agent 2", link_id="link123")
    rules = xml_of(r).findall("rules/rule")
    assert [rule.findtext("rule_id") for rule in rules] == ["call_1", "call_2"]
    assert rules[0].findtext("contact/phone_number") == "441234"
    assert rules[1].findtext("contact/phone_number") == "?"
    r = api.put("CallFlow", "updateCallFlow", wrap(updated))
    assert errors_of(r) == ["Call Flow Doesn't exist"]


def test_delete_call_flows_detaches_only_when_asked(api: ApiClient) -> None:
    make_link(api)
    make_flow(api, AGENT)
    attach(api, "Call Agent", "link123")
    r = api.delete("CallFlow", "deleteCallFlows", call_flows="Call Agent|ghost")
    assert errors_of(r) == [
        "Call Flow Call Agent is attached to Links",
        "Call Flow 2 of 2 Doesn't exist",
    ]
    r = api.delete("CallFlow", "deleteCallFlows", call_flows="Call Agent", detach_from_links="TRUE")
    assert r.status_code == 204
    assert rows_of(api.get("Links", "getLinks", link_id="link123"))[0]["rule_name"] == ""


def test_attach_and_remove_errors(api: ApiClient) -> None:
    make_link(api)
    make_link(api, "link2")
    make_flow(api, AGENT)
    attach(api, "Call Agent", "link123")

    def put(body: str) -> list[str]:
        return errors_of(api.put("Links", "attachRuleTemplateToLinks", wrap(body)))

    assert put("<overwrite_existing>TRUE</overwrite_existing>") == ["Template Name Empty"]
    assert put(
        "<template_name>nope</template_name><link_ids><link_id>link2</link_id></link_ids>"
    ) == ["Template Name does not exist"]
    assert put("<template_name>Call Agent</template_name>") == ["Link IDs Empty"]
    assert put(
        "<template_name>Call Agent</template_name>"
        "<link_ids><link_id>link2</link_id><link_id>link2</link_id></link_ids>"
    ) == ["Duplicate Link ID Received"]
    assert put(
        "<template_name>Call Agent</template_name><overwrite_existing>FALSE</overwrite_existing>"
        "<link_ids><link_id>link123</link_id><link_id></link_id><link_id>x</link_id></link_ids>"
    ) == [
        "Link ID 2 of 3 Empty",
        "Link ID 3 of 3 does not exist",
        "Link ID 1 of 3 already has a Rule Template",
    ]
    assert put(
        "<template_name>Call Agent</template_name><link_ids><link_id>link2</link_id></link_ids>"
        "<rules_variable><rule><rule_id>zz</rule_id></rule><rule><rule_id>call_1</rule_id>"
        "<contact><contact_id>ghost</contact_id><phone_number>+1</phone_number></contact>"
        "<send_call_alert>LOUD</send_call_alert></rule></rules_variable>"
    ) == [
        "Rule ID zz does not exist in Template",
        "Contact ID ghost does not exist",
        "Phone Number +1 Invalid",
    ]
    assert rows_of(api.get("Links", "getLinks", link_id="link2"))[0]["rule_name"] == ""
    r = api.put(
        "Links",
        "removeRuleTemplateFromLinks",
        wrap("<link_ids><link_id>link123</link_id></link_ids>"),
    )
    assert r.status_code == 204
    assert rows_of(api.get("Links", "getLinks", link_id="link123"))[0]["rule_name"] == ""
    r = api.put(
        "Links", "removeRuleTemplateFromLinks", wrap("<link_ids><link_id>q</link_id></link_ids>")
    )
    assert errors_of(r) == ["Link ID 1 of 1 does not exist"]


def test_variable_rules_of_template(api: ApiClient) -> None:
    make_link(api)
    make_flow(api, AGENT)
    r = api.get("Rules", "getVariableRulesOfTemplate", template_name="Call Agent")
    rule = xml_of(r).find("rules/rule")
    assert rule is not None
    assert rule.findtext("rule_id") == "call_1" and rule.findtext("rule_type") == "call"
    assert rule.findtext("contact/contact_id") == "?"
    assert errors_of(api.get("Rules", "getVariableRulesOfTemplate")) == ["Template Name Empty"]
    r = api.get("Rules", "getVariableRulesOfTemplate", template_name="x")
    assert errors_of(r) == ["Template Name does not exist"]
    r = api.get("Rules", "getVariableRulesOfTemplate", template_name="Call Agent", link_id="zz")
    assert errors_of(r) == ["Link ID Doesn't exist"]
    r = api.get("Rules", "getRuleTemplates", template_type="ODD")
    assert errors_of(r) == ["Template Type Invalid"]


def test_flows_are_private_to_their_account(api: ApiClient, api_b: ApiClient) -> None:
    make_link(api)
    make_flow(api, AGENT)
    assert rows_of(api_b.get("CallFlow", "getCallFlows")) == []
    assert errors_of(api_b.get("CallFlow", "getCallFlow", call_flow="Call Agent")) == [
        "Call Flow Doesn't exist"
    ]
    make_link(api_b, "link_b")
    r = api_b.put(
        "Links",
        "attachRuleTemplateToLinks",
        wrap(
            "<template_name>Call Agent</template_name><link_ids><link_id>link_b</link_id></link_ids>"
        ),
    )
    assert errors_of(r) == ["Template Name does not exist"]
    r = api_b.put(
        "Links",
        "removeRuleTemplateFromLinks",
        wrap("<link_ids><link_id>link123</link_id></link_ids>"),
    )
    assert errors_of(r) == ["Link ID 1 of 1 does not exist"]
    # B may use the same name for its own flow.
    make_flow(api_b, AGENT)
    r = api_b.delete("CallFlow", "deleteCallFlows", call_flows="Call Agent")
    assert r.status_code == 204
    assert api.get("CallFlow", "getCallFlow", call_flow="Call Agent").status_code == 200
