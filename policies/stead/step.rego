# METADATA
# title: Stead step decision
# description: |
#   Asked by the run workflow before every step: allow it, deny it (with reasons),
#   or hold it for human approval (who may approve, how many, for how long, and
#   what happens on timeout). Tenant configuration is read from data.stead.tenants.
package stead.step # regal ignore:directory-package-mismatch

import data.stead.tenancy

default decision := {"outcome": "deny", "reasons": ["no rule allowed this step"], "approval": null}

# METADATA
# entrypoint: true
# scope: document
decision := {"outcome": "deny", "reasons": sort(violations), "approval": null} if count(violations) > 0

decision := {"outcome": "allow", "reasons": ["approved"], "approval": null} if {
	well_formed
	count(violations) == 0
	count(approval_triggers) > 0
	approved
}

decision := {"outcome": "approve", "reasons": sort(approval_triggers | approval_progress), "approval": approval} if {
	well_formed
	count(violations) == 0
	count(approval_triggers) > 0
	not approved
}

decision := {"outcome": "allow", "reasons": ["allowed by policy"], "approval": null} if {
	well_formed
	count(violations) == 0
	count(approval_triggers) == 0
}

tenant_config := data.stead.tenants[input.tenant]

# The run's budget: the starter's request capped by the tenant's run_budget (tenancy).
run_budget := tenancy.run_budget(input.budget, object.get(data.stead.tenants, input.tenant, {}))

violations contains problem if {
	some problem in tenancy.run_budget_problems(input.tenant, tenant_config)
}

# Fields the rules below compare, and their JSON types. A missing or mistyped one
# is a deny with a reason, never a rule that silently fails to fire; the allow
# outcomes also require well_formed, so an absent input can never be allowed.
required_fields := {
	"tenant": "string",
	"principal": "string",
	"step.id": "string",
	"step.operation": "string",
	"operation.name": "string",
	"operation.side_effect": "string",
	"operation.risk": "string",
	"budget.max_steps": "number",
	"budget.max_tokens": "number",
	"budget.max_usd": "number",
	"spent.steps": "number",
	"spent.tokens": "number",
	"spent.usd": "number",
}

present_fields contains field if {
	some field, type in required_fields
	type_name(object.get(input, split(field, "."), null)) == type
}

well_formed if count(present_fields) == count(required_fields)

default approvals := []

approvals := input.approvals if is_array(input.approvals)

violations contains sprintf("input.%s must be %s", [field, tenancy.type_phrase[type]]) if {
	some field, type in required_fields
	not field in present_fields
}

violations contains sprintf(
	"operation %s has unknown risk %s; expected low, medium or high",
	[input.operation.name, input.operation.risk],
) if {
	is_string(input.operation.risk)
	not tenancy.risk_rank[input.operation.risk]
}

violations contains sprintf(
	"operation %s has unknown side effect %s; expected read, write or external",
	[input.operation.name, input.operation.side_effect],
) if {
	is_string(input.operation.side_effect)
	not input.operation.side_effect in tenancy.side_effects
}

# The decision is about input.operation, so it must describe the operation the step runs.
violations contains sprintf(
	"step %s runs operation %s but the policy input describes operation %s",
	[input.step.id, input.step.operation, input.operation.name],
) if {
	is_string(input.step.operation)
	is_string(input.operation.name)
	input.step.operation != input.operation.name
}

violations contains tenancy.not_configured(input.tenant) if {
	is_string(input.tenant)
	not tenant_config
}

violations contains tenancy.not_allowed(input.step.operation, input.tenant) if {
	is_string(input.step.operation)
	allowed := object.get(tenant_config, "operations", [])
	not tenancy.operation_allowed(allowed, input.step.operation)
}

# spent counts what the run used before this step, so running one more step
# needs spent.steps < max_steps.
violations contains sprintf(
	"step budget exhausted: %v of %v steps already run",
	[input.spent.steps, run_budget.max_steps],
) if {
	well_formed
	input.spent.steps >= run_budget.max_steps
}

violations contains sprintf(
	"token budget exhausted: %v tokens spent, past the cap of %v",
	[input.spent.tokens, run_budget.max_tokens],
) if {
	well_formed
	input.spent.tokens > run_budget.max_tokens
}

violations contains sprintf(
	"cost budget exhausted: $%v spent, past the cap of $%v",
	[input.spent.usd, run_budget.max_usd],
) if {
	well_formed
	input.spent.usd > run_budget.max_usd
}

# One rejection ends the step: asking again would only re-open a question a
# human already answered.
violations contains sprintf("step %s was rejected by %s", [input.step.id, vote.approver]) if {
	some vote in approvals
	vote.verdict == "reject"
}

# An unknown configured threshold falls back to the strictest one, never the laxest.
default approval_threshold := "high"

approval_threshold := tenant_config.approval_risk if tenancy.risk_rank[tenant_config.approval_risk]

approval_threshold := "low" if {
	is_string(tenant_config.approval_risk)
	not tenancy.risk_rank[tenant_config.approval_risk]
}

default soft_budget_fraction := 0.8

soft_budget_fraction := tenant_config.soft_budget_fraction if is_number(tenant_config.soft_budget_fraction)

approval_triggers contains sprintf(
	"operation %s has %s risk, at or above the approval threshold (%s) of tenant %s",
	[input.operation.name, operation_risk, approval_threshold, input.tenant],
) if {
	tenancy.risk_rank[operation_risk] >= tenancy.risk_rank[approval_threshold]
}

approval_triggers contains sprintf(
	"operation %s has external side effects and tenant %s approves every external effect",
	[input.operation.name, input.tenant],
) if {
	operation_side_effect == "external"
	tenant_config.approve_external == true
}

approval_triggers contains sprintf(
	"cost soft limit reached: $%v spent is at or above %v%% of the $%v budget",
	[input.spent.usd, soft_budget_fraction * 100, run_budget.max_usd],
) if {
	well_formed
	run_budget.max_usd > 0
	input.spent.usd >= soft_budget_fraction * run_budget.max_usd
}

approval_triggers contains sprintf(
	"token soft limit reached: %v tokens spent is at or above %v%% of the %v token budget",
	[input.spent.tokens, soft_budget_fraction * 100, run_budget.max_tokens],
) if {
	well_formed
	run_budget.max_tokens > 0
	input.spent.tokens >= soft_budget_fraction * run_budget.max_tokens
}

# Tenant budgets, data.stead.tenants[<tenant>].budget = {monthly_usd, monthly_tokens,
# soft_fraction}, each optional. The activity puts the spend of the tenant's other
# runs started this calendar month (UTC) in input.tenant_spent; this run's own spend
# so far is input.spent, so the two add up to what the tenant has used. Past the
# soft line a step waits for a human; past the cap it is denied. A budget whose
# input is missing or whose config is mistyped is a deny: a cap that silently
# stops applying is worse than a run that stops.
tenant_budget_units := {"usd": "monthly_usd", "tokens": "monthly_tokens"}

tenant_budget_names := {"usd": "cost", "tokens": "token"}

default tenant_budget := {}

tenant_budget := tenant_config.budget

tenant_cap[unit] := tenant_budget[field] if {
	some unit, field in tenant_budget_units
	is_number(tenant_budget[field])
}

# A tenant without its own soft line uses the per-run one (soft_budget_fraction).
tenant_soft_fraction := tenant_budget.soft_fraction if is_number(tenant_budget.soft_fraction)

# object.get, not tenant_budget.soft_fraction: OPA hoists a reference out of a
# negated call, so an absent field would make this rule undefined instead of true.
tenant_soft_fraction := soft_budget_fraction if not is_number(object.get(tenant_budget, "soft_fraction", null))

tenant_used[unit] := input.tenant_spent[unit] + input.spent[unit] if {
	well_formed
	some unit, _ in tenant_cap
	is_number(input.tenant_spent[unit])
}

budget_amount("usd", x) := sprintf("$%v", [x])

budget_amount("tokens", x) := sprintf("%v tokens", [x])

violations contains sprintf("tenant %s budget must be an object with monthly_usd, monthly_tokens or soft_fraction", [input.tenant]) if {
	not is_object(tenant_budget)
}

violations contains sprintf("tenant %s budget.%s must be a number", [input.tenant, field]) if {
	is_object(tenant_budget)
	some field, value in tenant_budget
	field in {"monthly_usd", "monthly_tokens", "soft_fraction"}
	not is_number(value)
}

violations contains sprintf("tenant %s budget.soft_fraction must be between 0 and 1", [input.tenant]) if {
	is_number(tenant_budget.soft_fraction)
	not is_fraction(tenant_budget.soft_fraction)
}

is_fraction(x) if {
	x >= 0
	x <= 1
}

violations contains sprintf("input.tenant_spent.%s must be a number: tenant %s has a monthly %s budget", [unit, input.tenant, tenant_budget_names[unit]]) if {
	some unit, _ in tenant_cap
	not is_number(object.get(input, ["tenant_spent", unit], null))
}

violations contains sprintf(
	"monthly %s budget of tenant %s exhausted: %s spent this month, past the cap of %s",
	[tenant_budget_names[unit], input.tenant, budget_amount(unit, used), budget_amount(unit, tenant_cap[unit])],
) if {
	some unit, used in tenant_used
	used > tenant_cap[unit]
}

approval_triggers contains sprintf(
	"monthly %s budget of tenant %s nearly spent: %s spent this month is at or above %v%% of the %s cap",
	[
		tenant_budget_names[unit], input.tenant, budget_amount(unit, used),
		tenant_soft_fraction * 100, budget_amount(unit, tenant_cap[unit]),
	],
) if {
	some unit, used in tenant_used
	tenant_cap[unit] > 0
	used >= tenant_soft_fraction * tenant_cap[unit]
}

approval := {
	"approvers": object.get(tenant_config, "approvers", ["group:approvers"]),
	"min_approvals": object.get(tenant_config, "min_approvals", 1),
	"timeout_seconds": object.get(tenant_config, "approval_timeout_seconds", 3600),
	"on_timeout": object.get(tenant_config, "on_timeout", "reject"),
	"escalate_to": object.get(tenant_config, "escalate_to", []),
	"allow_self_approval": object.get(tenant_config, "allow_self_approval", false),
}

# A set, so one person approving twice counts once. Who may approve at all is
# checked by the workflow when the approval arrives; here only the principal who
# asked for the step is set apart.
counted_approvers contains vote.approver if {
	some vote in approvals
	vote.verdict == "approve"
	is_string(vote.approver)
	vote.approver != input.principal
}

counted_approvers contains vote.approver if {
	approval.allow_self_approval == true
	some vote in approvals
	vote.verdict == "approve"
	is_string(vote.approver)
}

approved if count(counted_approvers) >= approval.min_approvals

approval_progress contains sprintf(
	"%v of %v required approvals received",
	[count(counted_approvers), approval.min_approvals],
) if {
	count(approvals) > 0
}

approval_progress contains sprintf("approval by %s not counted: self-approval is not allowed", [input.principal]) if {
	approval.allow_self_approval != true
	some vote in approvals
	vote.verdict == "approve"
	vote.approver == input.principal
}

# Egress (invariant 10: nothing leaves without policy). The worker puts every place
# the step sends bytes into input.step.destinations ({kind: "url" | "mail", scheme,
# host, port, label}, normalised: lowercase, IDNA, no trailing dot, explicit port).
# Each must match an entry of the tenant's egress list, data.stead.tenants[t].egress:
#   "api.example.com"            that host, any scheme and port
#   "*.example.org"              any subdomain of example.org (not the apex)
#   "https://hooks.example.com"  that scheme and host, the scheme's default port
#   "https://h.example.com:8443" that scheme, host and port
#   "mail:example.com"           mail to recipients at that domain ("mail:*.x" too)
#   "*"                          anywhere (an explicit opt-out, never the default)
# A tenant without a list sends nothing outside.
default egress_list := null

egress_list := tenant_config.egress if is_array(tenant_config.egress)

default step_destinations := []

step_destinations := input.step.destinations if is_array(input.step.destinations)

egress_default_ports := {"http": 80, "https": 443}

egress_name(dest) := sprintf("mail:%s", [dest.host]) if dest.kind == "mail"

egress_name(dest) := sprintf("%s://%s:%v", [dest.scheme, dest.host, dest.port]) if {
	dest.kind != "mail"
	is_string(dest.scheme)
	is_number(dest.port)
}

egress_name(dest) := dest.host if {
	dest.kind != "mail"
	not is_string(dest.scheme)
}

egress_name(dest) := dest.host if {
	dest.kind != "mail"
	not is_number(dest.port)
}

violations contains sprintf("egress_denied: %s is not in tenant %s's egress list", [egress_name(dest), input.tenant]) if {
	is_array(egress_list)
	some dest in step_destinations
	not egress_allowed(dest)
}

violations contains sprintf(
	"egress_denied: tenant %s has no egress list, so step %s may not reach %s; list allowed hosts in data.stead.tenants.%s.egress",
	[input.tenant, input.step.id, egress_name(dest), input.tenant],
) if {
	tenant_config
	not is_array(egress_list)
	some dest in step_destinations
}

violations contains sprintf("input.step.destinations must be an array of destinations, not %v", [type_name(input.step.destinations)]) if {
	"destinations" in object.keys(object.get(input, "step", {}))
	not is_array(input.step.destinations)
}

violations contains sprintf("input.step.destinations[%d] must be an object with kind and host", [i]) if {
	some i, dest in step_destinations
	not well_formed_destination(dest)
}

# An external effect with no stated destination could go anywhere: fail closed.
violations contains sprintf(
	"egress_denied: operation %s has external side effects but states no destinations; give the operation a destinations hook (adapters/base.py)",
	[input.operation.name],
) if {
	input.operation.side_effect == "external"
	not is_array(object.get(input, ["step", "destinations"], null))
}

well_formed_destination(dest) if {
	dest.kind in {"url", "mail"}
	is_string(dest.host)
}

egress_allowed(dest) if {
	some entry in egress_list
	is_string(entry)
	egress_entry_matches(lower(trim_space(entry)), dest)
}

egress_entry_matches("*", _)

egress_entry_matches(entry, dest) if {
	startswith(entry, "mail:")
	dest.kind == "mail"
	egress_host_matches(substring(entry, 5, -1), dest.host)
}

egress_entry_matches(entry, dest) if {
	not startswith(entry, "mail:")
	contains(entry, "://")
	dest.kind == "url"
	parts := split(entry, "://")
	count(parts) == 2
	hostport := split(trim_right(parts[1], "/"), ":")
	dest.scheme == parts[0]
	dest.port == egress_entry_port(parts[0], hostport)
	egress_host_matches(hostport[0], dest.host)
}

egress_entry_matches(entry, dest) if {
	entry != "*"
	not startswith(entry, "mail:")
	not contains(entry, "://")
	dest.kind == "url"
	egress_host_matches(entry, dest.host)
}

egress_entry_port(_, hostport) := to_number(hostport[1]) if count(hostport) == 2

egress_entry_port(scheme, hostport) := egress_default_ports[scheme] if count(hostport) == 1

egress_host_matches(pattern, host) if trim_right(pattern, ".") == host

egress_host_matches(pattern, host) if {
	wildcard := trim_right(pattern, ".")
	startswith(wildcard, "*.")
	suffix := substring(wildcard, 1, -1)
	endswith(host, suffix)
	count(host) > count(suffix)
}

# Provenance: input.step.tainted lists the untrusted sources of the step's arguments
# ("llm": an LLM planned or wrote them; "memory": recalled memory or a memory read
# shaped them; "unknown": their origin is out of sight, e.g. no provenance given). An
# outward step that writes or has external effects, with tainted arguments, waits
# for a human even to a listed host: a prompt injection produces plans that look like
# any other. Reads (an LLM call with recalled context, a catalog fetch) to a listed
# host are not held: feeding memory to the tenant's model is the normal flow, and the
# list already bounds where they go. A tenant may opt out with
# approve_tainted_egress: false; unlisted destinations stay denied regardless.
default step_taints := ["unknown"]

step_taints := input.step.tainted if is_array(input.step.tainted)

untrusted_taints contains taint if {
	some taint in step_taints
	taint in {"llm", "memory", "unknown"}
}

approval_triggers contains sprintf(
	"step %s sends data to %s with arguments from %s; a human confirms tainted egress",
	[input.step.id, concat(", ", sort({egress_name(d) | some d in step_destinations})), concat(", ", sort(untrusted_taints))],
) if {
	count(step_destinations) > 0
	count(untrusted_taints) > 0
	operation_side_effect != "read"
	object.get(tenant_config, "approve_tainted_egress", true) != false
}

# The secret references a step resolves (input.step.secrets) must be the tenant's own.
# The worker's store refuses another tenant's secret too; denying here keeps the
# refusal in the decision log and stops the step before any adapter runs.
violations contains sprintf("secret_refused: step %s uses %s, which does not belong to tenant %s", [input.step.id, ref, input.tenant]) if {
	is_string(input.tenant)
	some ref in object.get(input, ["step", "secrets"], [])
	not startswith(ref, sprintf("secret://%s/", [input.tenant]))
}
