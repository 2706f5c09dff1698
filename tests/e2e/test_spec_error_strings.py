"""Every error string of the spec that applies to issue 2's methods, through real HTTP.

One table: each row is a request against a small world (built through the API) and the exact
message it must get, with its status. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.support import ApiClient, attach, errors_of, make_flow, make_link, wrap

FLOW = (
    '<callFlow name="F"><call id="call_1" label="Call" destinationPhoneNumber="?" '
    'destinationContactId="?"/><httpRequest id="h" label="Hook" url="https://x.test/$first_name"/>'
    "</callFlow>"
)
VALUES = (
    "<rules_variable><rule><rule_id>call_1</rule_id><contact><phone_number>441234</phone_number>"
    "</contact></rule></rules_variable>"
)


def initiate(link_id: str, dest: str = "449789123123", **extra: str) -> str:
    variables = f"<call_destination>{dest}</call_destination>" if dest else ""
    variables += "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    return wrap(f"<link_id>{link_id}</link_id><call_variables>{variables}</call_variables>")


def link(link_id: str, node_id: str = "n1", name: str = "Web") -> str:
    return (
        f"<link><node_id>{node_id}</node_id><link_id>{link_id}</link_id>"
        f"<link_name>{name}</link_name><link_type>web</link_type></link>"
    )


def flow(body: str, name: str = "G") -> str:
    return wrap(f'<callFlow name="{name}">{body}</callFlow>')


CALL = '<call id="c" label="C" destinationPhoneNumber="1"/>'


@dataclass(frozen=True)
class Case:
    message: str
    verb: str
    interface: str
    method: str | None
    body: str | bytes | None = None
    params: dict[str, str] = field(default_factory=dict)
    status: int = 400
    headers: dict[str, str] = field(default_factory=dict)
    v: str | None = "3"


CASES = [
    # Conventions (spec section 1)
    Case("API Version Empty", "GET", "Nodes", "getNodes", v=None),
    Case("API Version Invalid", "GET", "Nodes", "getNodes", v="2"),
    Case("Request Method must be POST. GET attempted", "GET", "Calling", "initiateCall"),
    Case("Request Method must be GET. POST attempted", "POST", "Links", "getLinks", "<request/>"),
    Case("Request Method must be PUT. DELETE attempted", "DELETE", "Links", "updateLinks"),
    Case("Request Method must be DELETE. GET attempted", "GET", "Links", "deleteLinks"),
    Case("XML Empty", "POST", "Calling", "initiateCall", ""),
    Case(
        "XML parse error. Opening and ending tag mismatch: link_id line 1 and request "
        "at line 1, column 29",
        "POST",
        "Calling",
        "initiateCall",
        "<request><link_id></request>",
    ),
    Case("Request Empty", "POST", "Calling", "initiateCall", "<request/>"),
    Case("Output Type Invalid", "GET", "Links", "getLinks", params={"output": "CSV"}),
    Case("Page Number not an integer", "GET", "Links", "getLinks", params={"page": "x"}),
    Case("Limit not an integer", "GET", "Links", "getLinks", params={"limit": "1.5"}),
    Case("Limit must be between 1 and 20000", "GET", "Links", "getLinks", params={"limit": "0"}),
    Case(
        "Required Fields Invalid: zz,yy",
        "GET",
        "Links",
        "getLinks",
        params={"req_fields": "lid,zz,yy"},
    ),
    Case("Order Field Invalid", "GET", "Links", "getLinks", params={"order": "zz_ASC"}),
    Case("Order Direction Invalid", "GET", "Links", "getLinks", params={"order": "lid_UP"}),
    Case(
        "HTTP 401: Unauthorized",
        "GET",
        "Links",
        "getLinks",
        status=401,
        headers={"secureKey": "0" * 32},
    ),
    # initiateCall (section 3)
    Case("Link ID Empty", "POST", "Calling", "initiateCall", initiate("")),
    Case("Link ID does not exist", "POST", "Calling", "initiateCall", initiate("nope")),
    Case("Link ID has no Calling Rules", "POST", "Calling", "initiateCall", initiate("l2")),
    Case("Call Variable first_name Empty", "POST", "Calling", "initiateCall", initiate("l1")),
    Case(
        "Call Variable call_destination Empty",
        "POST",
        "Calling",
        "initiateCall",
        initiate("l1", dest="", first_name="Bob"),
    ),
    Case(
        "Call Destination Invalid",
        "POST",
        "Calling",
        "initiateCall",
        initiate("l1", dest="0044 97", first_name="Bob"),
    ),
    Case(
        "Call Variable delay Invalid",
        "POST",
        "Calling",
        "initiateCall",
        initiate("l1", first_name="Bob", delay="soon"),
    ),
    Case(
        "Call Destination 33123 is blocked",
        "POST",
        "Calling",
        "initiateCall",
        initiate("l1", dest="33123,1", first_name="Bob"),
    ),
    # Nodes
    Case("Node ID 1 of 1 Empty", "POST", "Nodes", "createNodes", wrap("<node><node_id/></node>")),
    Case(
        "Node ID 1 of 1 already exists",
        "POST",
        "Nodes",
        "createNodes",
        wrap("<node><node_id>n1</node_id></node>"),
    ),
    Case("Node ID 1 of 1 has Links", "DELETE", "Nodes", "deleteNodes", params={"node_ids": "n1"}),
    # Links
    Case("Link ID 2 of 2 Empty", "POST", "Links", "createLinks", wrap(link("a9"), link(""))),
    Case(
        "Link ID 1 of 1 already exists",
        "POST",
        "Links",
        "createLinks",
        wrap(link("l1", name="Other")),
    ),
    Case(
        "Link Name Web is already attached to Node n1",
        "POST",
        "Links",
        "createLinks",
        wrap(link("l9")),
    ),
    Case(
        "Node ID 1 of 1 does not exist",
        "POST",
        "Links",
        "createLinks",
        wrap(link("l9", node_id="zz")),
    ),
    Case("Link ID 1 of 1 Empty", "PUT", "Links", "updateLinks", wrap("<link><link_id/></link>")),
    Case(
        "Link ID 1 of 1 does not exist",
        "PUT",
        "Links",
        "updateLinks",
        wrap("<link><link_id>zz</link_id></link>"),
    ),
    Case(
        "New Link ID 1 of 1 already exist",
        "PUT",
        "Links",
        "updateLinks",
        wrap("<link><link_id>l1</link_id><new_link_id>l2</new_link_id></link>"),
    ),
    Case(
        "Link Name 1 of 1 Empty",
        "PUT",
        "Links",
        "updateLinks",
        wrap("<link><link_id>l1</link_id><link_name/></link>"),
    ),
    Case("Link IDs Empty", "DELETE", "Links", "deleteLinks"),
    Case(
        "Link ID 2 of 2 does not exist",
        "DELETE",
        "Links",
        "deleteLinks",
        params={"link_ids": "l2,zz"},
    ),
    Case("Node ID does not exist", "GET", "Links", "getLinks", params={"node_id": "zz"}),
    Case(
        "Link IDs Empty",
        "PUT",
        "Links",
        "attachRuleTemplateToLinks",
        wrap("<template_name>F</template_name>"),
    ),
    Case(
        "Duplicate Link ID Received",
        "PUT",
        "Links",
        "removeRuleTemplateFromLinks",
        wrap("<link_ids><link_id>l1</link_id><link_id>l1</link_id></link_ids>"),
    ),
    Case(
        "Template Name Empty",
        "PUT",
        "Links",
        "attachRuleTemplateToLinks",
        wrap("<link_ids><link_id>l2</link_id></link_ids>"),
    ),
    Case(
        "Template Name does not exist",
        "PUT",
        "Links",
        "attachRuleTemplateToLinks",
        wrap("<template_name>zz</template_name><link_ids><link_id>l2</link_id></link_ids>"),
    ),
    Case(
        "Link ID 1 of 1 already has a Rule Template",
        "PUT",
        "Links",
        "attachRuleTemplateToLinks",
        wrap(
            "<template_name>F</template_name><overwrite_existing>FALSE</overwrite_existing>"
            "<link_ids><link_id>l1</link_id></link_ids>"
        ),
    ),
    Case(
        "Rule ID zz does not exist in Template",
        "PUT",
        "Links",
        "attachRuleTemplateToLinks",
        wrap(
            "<template_name>F</template_name><link_ids><link_id>l2</link_id></link_ids>"
            "<rules_variable><rule><rule_id>zz</rule_id></rule></rules_variable>"
        ),
    ),
    # Rules
    Case(
        "Template Type Invalid", "GET", "Rules", "getRuleTemplates", params={"template_type": "X"}
    ),
    Case(
        "Template Name does not exist",
        "GET",
        "Rules",
        "getVariableRulesOfTemplate",
        params={"template_name": "zz"},
    ),
    Case(
        "Link ID Doesn't exist",
        "GET",
        "Rules",
        "getVariableRulesOfTemplate",
        params={"template_name": "F", "link_id": "zz"},
    ),
    # CallFlow (section 5)
    Case("Call Flow Doesn't exist", "GET", "CallFlow", "getCallFlow", params={"call_flow": "zz"}),
    Case("There are no Rules in this Template", "POST", "CallFlow", "createCallFlow", flow("")),
    Case(
        "CallFlow Name already exists", "POST", "CallFlow", "createCallFlow", flow(CALL, name="F")
    ),
    Case("CallFlow Name Empty", "POST", "CallFlow", "createCallFlow", flow(CALL, name="")),
    Case(
        "CallFlow Name too long", "POST", "CallFlow", "createCallFlow", flow(CALL, name="x" * 101)
    ),
    Case(
        "Rule Label Empty",
        "POST",
        "CallFlow",
        "createCallFlow",
        flow('<call id="c" label="" destinationPhoneNumber="1"/>'),
    ),
    Case(
        "Rule ID Empty",
        "POST",
        "CallFlow",
        "createCallFlow",
        flow('<call id="" label="C" destinationPhoneNumber="1"/>'),
    ),
    Case(
        "Rule ID Not Unique in Play Rule",
        "POST",
        "CallFlow",
        "createCallFlow",
        flow(
            '<play id="p" label="P"><soundFile soundLabel="hello"/></play>'
            '<play id="p" label="Q"><soundFile soundLabel="hello"/></play>'
        ),
    ),
    Case(
        "Sound File Does not exist in Play Rule",
        "POST",
        "CallFlow",
        "createCallFlow",
        flow('<play id="p" label="P"><soundFile soundLabel="nope"/></play>'),
    ),
]


@pytest.fixture
def world(api: ApiClient) -> ApiClient:
    make_link(api, "l1", "n1")
    make_link(api, "l2", "n1")
    # l2 needs another name than l1's "l1 name"; make_link names links after their ids.
    r = api.post("Nodes", "createNodes", wrap("<node><node_id>n2</node_id></node>"))
    assert r.status_code == 201
    r = api.put(
        "Links", "updateLinks", wrap("<link><link_id>l1</link_id><link_name>Web</link_name></link>")
    )
    assert r.status_code == 204, r.text
    make_flow(api, FLOW)
    attach(api, "F", "l1", rules_variable=VALUES)
    r = api.post(
        "Rules",
        "createBlockedNumbers",
        wrap(
            "<blocked_number><number>33</number><in_or_out>OUT</in_or_out>"
            "<operator>STARTSWITH</operator><default>BLOCK</default></blocked_number>"
        ),
    )
    assert r.status_code == 201, r.text
    return api


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.message[:60])
def test_spec_error_string(world: ApiClient, case: Case) -> None:
    query = {"v": case.v, "method": case.method, **case.params}
    headers = world.headers(case.headers)
    r = world.http.request(
        case.verb,
        f"/{case.interface}",
        params={k: v for k, v in query.items() if v is not None},
        content=case.body.encode() if isinstance(case.body, str) else case.body,
        headers=headers,
    )
    assert r.status_code == case.status, r.text
    assert case.message in errors_of(r), r.text
