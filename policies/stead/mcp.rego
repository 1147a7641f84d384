# MCP tools, a part of the step decision (package stead.step, which step.rego documents).
# Steps that call a tenant's MCP tool (operation mcp.<server>.<tool>). The worker
# sends the strictest risk and side effect (high, external) and the server's
# identity and pinned tool hash in input.step.mcp; what a tool really is comes
# from policy data, data.stead.tenants[t].mcp_tools["mcp.<server>.<tool>"] =
# {"risk": "low" | "medium" | "high", "side_effect": "read" | "write" | "external"},
# never from the server's own annotations.
package stead.step # regal ignore:directory-package-mismatch

import data.stead.tenancy

mcp_step if startswith(input.step.operation, "mcp.")

mcp_tool_data := object.get(object.get(tenant_config, "mcp_tools", {}), input.step.operation, {})

# The risk and side effect the other step rules compare: policy data for MCP tools,
# the worker's catalog for everything else.
operation_risk := input.operation.risk if not mcp_step

operation_risk := object.get(mcp_tool_data, "risk", "high") if mcp_step

operation_side_effect := input.operation.side_effect if not mcp_step

operation_side_effect := object.get(mcp_tool_data, "side_effect", "external") if mcp_step

violations contains sprintf(
	"mcp_tools[%s].risk of tenant %s is %v; expected low, medium or high",
	[input.step.operation, input.tenant, operation_risk],
) if {
	mcp_step
	not tenancy.risk_rank[operation_risk]
}

violations contains sprintf(
	"mcp_tools[%s].side_effect of tenant %s is %v; expected read, write or external",
	[input.step.operation, input.tenant, operation_side_effect],
) if {
	mcp_step
	not operation_side_effect in tenancy.side_effects
}

violations contains sprintf(
	"mcp_not_configured: tenant %s has no MCP server with the tool of %s",
	[input.tenant, input.step.operation],
) if {
	mcp_step
	not is_object(object.get(input, ["step", "mcp"], null))
}

violations contains sprintf(
	"mcp_tool_changed: %s changed since it was pinned; an operator reviews it with `stead mcp refresh %s --accept`",
	[input.step.operation, input.step.mcp.server],
) if {
	mcp_step
	input.step.mcp.pending_change == true
}
