package stead.mcp_test # regal ignore:directory-package-mismatch

import data.stead.step

mcp_tenants := {"t": {"operations": ["*"], "approval_risk": "high", "egress": ["127.0.0.1"]}}

mcp_input(mcp) := {
	"tenant": "t",
	"principal": "user:ann",
	"step": {"id": "s1", "operation": "mcp.time.get_current_time", "args": {}, "destinations": [], "tainted": [], "mcp": mcp},
	"operation": {"name": "mcp.time.get_current_time", "side_effect": "external", "risk": "high", "scopes": []},
	"budget": {"max_steps": 10, "max_tokens": 1000, "max_usd": 1},
	"spent": {"steps": 0, "tokens": 0, "usd": 0},
	"approvals": [],
}

pinned := {"server": "time", "tool": "get_current_time", "tool_hash": "abc", "pending_change": false}

test_unclassified_mcp_tool_waits_for_approval if {
	d := step.decision with input as mcp_input(pinned) with data.stead.tenants as mcp_tenants
	d.outcome == "approve"
}

test_policy_data_classifies_an_mcp_tool if {
	tenants := json.patch(mcp_tenants, [{"op": "add", "path": "/t/mcp_tools", "value": {"mcp.time.get_current_time": {"risk": "low", "side_effect": "read"}}}])
	d := step.decision with input as mcp_input(pinned) with data.stead.tenants as tenants
	d.outcome == "allow"
}

test_a_changed_mcp_tool_is_denied if {
	d := step.decision with input as mcp_input(json.patch(pinned, [{"op": "replace", "path": "/pending_change", "value": true}]))
		with data.stead.tenants as mcp_tenants
	d.outcome == "deny"
	startswith(d.reasons[0], "mcp_tool_changed: mcp.time.get_current_time changed")
}

test_an_mcp_tool_of_an_unconfigured_server_is_denied if {
	d := step.decision with input as mcp_input(null) with data.stead.tenants as mcp_tenants
	d.outcome == "deny"
	d.reasons == ["mcp_not_configured: tenant t has no MCP server with the tool of mcp.time.get_current_time"]
}
