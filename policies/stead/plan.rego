# METADATA
# title: Stead plan decision
# description: |
#   Asked once per plan, before any step runs: does the whole plan fit the
#   tenant's allow-list, the adapter catalog (input.operations) and the run's
#   budget? Each violation is one reason; a plan with none is allowed.
package stead.plan # regal ignore:directory-package-mismatch

import data.stead.tenancy

default decision := {"outcome": "deny", "reasons": ["no rule allowed this plan"]}

# METADATA
# entrypoint: true
# scope: document
decision := {"outcome": "deny", "reasons": sort(violations)} if count(violations) > 0

decision := {"outcome": "allow", "reasons": ["allowed by policy"]} if {
	well_formed
	count(violations) == 0
}

tenant_config := data.stead.tenants[input.tenant]

# The run's budget: the starter's request capped by the tenant's run_budget (tenancy).
run_budget := tenancy.run_budget(input.budget, object.get(data.stead.tenants, input.tenant, {}))

violations contains problem if {
	some problem in tenancy.run_budget_problems(input.tenant, tenant_config)
}

# Fields the rules below compare, and their JSON types. A missing or mistyped one
# is a deny with a reason, never a rule that silently fails to fire; the allow
# outcome also requires well_formed, so an absent input can never be allowed.
required_fields := {
	"tenant": "string",
	"plan.steps": "array",
	"budget.max_steps": "number",
	"budget.max_tokens": "number",
	"budget.max_usd": "number",
	"operations": "object",
}

present_fields contains field if {
	some field, type in required_fields
	type_name(object.get(input, split(field, "."), null)) == type
}

well_formed if count(present_fields) == count(required_fields)

well_formed_step(step) if {
	is_string(step.id)
	is_string(step.operation)
}

# A playbook reports no usage at all (no planner, or null counts): that is zero,
# not unknown.
default usage := {}

usage := input.plan.planner if is_object(input.plan.planner)

default used_tokens := 0

used_tokens := usage.tokens if usage.tokens != null

default used_usd := 0

used_usd := usage.cost_usd if usage.cost_usd != null

violations contains sprintf("input.%s must be %s", [field, tenancy.type_phrase[type]]) if {
	some field, type in required_fields
	not field in present_fields
}

violations contains sprintf("input.plan.planner.%s must be a number", [field]) if {
	some field, value in {"tokens": used_tokens, "cost_usd": used_usd}
	not is_number(value)
}

violations contains sprintf("plan step %d must have a string id and a string operation", [i]) if {
	some i, step in input.plan.steps
	not well_formed_step(step)
}

violations contains tenancy.not_configured(input.tenant) if {
	is_string(input.tenant)
	not tenant_config
}

violations contains sprintf("step %s: %s", [step.id, tenancy.not_allowed(step.operation, input.tenant)]) if {
	allowed := object.get(tenant_config, "operations", [])
	some step in input.plan.steps
	well_formed_step(step)
	not tenancy.operation_allowed(allowed, step.operation)
}

violations contains sprintf(
	"step %s: operation %s is unknown (not in the adapter catalog)",
	[step.id, step.operation],
) if {
	catalog := object.keys(input.operations)
	some step in input.plan.steps
	well_formed_step(step)
	not step.operation in catalog
}

violations contains sprintf(
	"plan has %v steps, more than the budget of %v",
	[count(input.plan.steps), run_budget.max_steps],
) if {
	well_formed
	count(input.plan.steps) > run_budget.max_steps
}

violations contains sprintf(
	"planner used %v tokens, more than the budget of %v",
	[used_tokens, run_budget.max_tokens],
) if {
	well_formed
	is_number(used_tokens)
	used_tokens > run_budget.max_tokens
}

violations contains sprintf(
	"planner cost $%v, more than the budget of $%v",
	[used_usd, run_budget.max_usd],
) if {
	well_formed
	is_number(used_usd)
	used_usd > run_budget.max_usd
}
