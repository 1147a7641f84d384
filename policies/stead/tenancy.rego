# METADATA
# title: Stead tenancy helpers
# description: |
#   Rules shared by the plan and step decisions, so that both read a tenant's
#   configuration (data.stead.tenants[<tenant>]) the same way.
package stead.tenancy # regal ignore:directory-package-mismatch

# operation_allowed holds when a tenant allow-list admits an operation: "*" admits
# everything, "records.*" admits every operation of the records adapter, and any
# other entry must name the operation exactly.
operation_allowed(allowed, _) if "*" in allowed

operation_allowed(allowed, operation) if operation in allowed

operation_allowed(allowed, operation) if {
	some pattern in allowed
	endswith(pattern, ".*")
	startswith(operation, trim_suffix(pattern, "*"))
}

# risk_rank orders the risk levels an adapter operation can declare.
risk_rank := {"low": 1, "medium": 2, "high": 3}

side_effects := {"read", "write", "external"}

# type_phrase names a JSON type (as type_name returns it) in a deny reason.
type_phrase := {
	"array": "a list",
	"boolean": "a boolean",
	"null": "null",
	"number": "a number",
	"object": "an object",
	"string": "a string",
}

not_configured(tenant) := sprintf("tenant %s is not configured", [tenant])

not_allowed(operation, tenant) := sprintf("operation %s is not allowed for tenant %s", [operation, tenant])

# run_budget is the budget a run is held to: what its starter asked for (input.budget,
# which comes from workflow input), capped field by field by the tenant's
# data.stead.tenants[<tenant>].run_budget. A starter can ask for less, never more.
run_budget_fields := {"max_steps", "max_tokens", "max_usd"}

run_budget(requested, config) := {field: capped_budget(requested, config, field) |
	some field in run_budget_fields
	is_number(requested[field])
}

capped_budget(requested, config, field) := min({requested[field], config.run_budget[field]}) if {
	is_number(config.run_budget[field])
} else := requested[field]

# A cap that is there but not a number is a reason to deny, never a cap that silently
# stops applying.
run_budget_problems(tenant, config) := {sprintf("tenant %s run_budget.%s must be a number", [tenant, field]) |
	some field in run_budget_fields
	value := config.run_budget[field]
	not is_number(value)
}
