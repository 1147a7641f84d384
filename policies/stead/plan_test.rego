package stead.plan_test # regal ignore:directory-package-mismatch

import data.stead.plan

tenants := {
	"acme": {"operations": ["*"], "approval_risk": "high"},
	"shop": {"operations": ["http.request", "records.put"]},
}

catalog := {
	"http.request": {"side_effect": "external", "risk": "medium", "scopes": ["http:request"]},
	"records.put": {"side_effect": "write", "risk": "low", "scopes": ["records:write"]},
	"email.send": {"side_effect": "external", "risk": "high", "scopes": ["email:send"]},
}

shop_plan := {
	"tenant": "shop",
	"principal": "user:carol",
	"plan": {
		"plan_id": "plan-1",
		"plan_hash": "sha256:0f1e",
		"steps": [
			{"id": "fetch", "operation": "http.request", "args": {"url": "http://127.0.0.1:9/orders"}, "depends_on": []},
			{"id": "save", "operation": "records.put", "args": {"key": "orders"}, "depends_on": ["fetch"]},
		],
		"planner": {"kind": "llm", "model": "gpt-4o-mini", "tokens": 1200, "cost_usd": 0.02},
	},
	"budget": {"max_steps": 5, "max_tokens": 4000, "max_usd": 1},
	"operations": catalog,
}

email_step := {"id": "notify", "operation": "email.send", "args": {"to": "ops@example.com"}, "depends_on": []}

rocket_step := {"id": "launch", "operation": "rocket.launch", "args": {}, "depends_on": []}

with_steps(steps) := json.patch(shop_plan, [{"op": "replace", "path": "/plan/steps", "value": steps}])

test_allow_plan_within_allow_list_catalog_and_budget if {
	d := plan.decision with input as shop_plan with data.stead.tenants as tenants
	d == {"outcome": "allow", "reasons": ["allowed by policy"]}
}

test_allow_plan_exactly_at_every_budget_limit if {
	at_limits := object.union(shop_plan, {
		"plan": {"planner": {"tokens": 4000, "cost_usd": 1}},
		"budget": {"max_steps": 2},
	})
	d := plan.decision with input as at_limits with data.stead.tenants as tenants
	d.outcome == "allow"
}

test_allow_playbook_plan_with_null_usage if {
	playbook := object.union(shop_plan, {"plan": {"planner": {
		"kind": "playbook",
		"model": null,
		"tokens": null,
		"cost_usd": null,
	}}})
	d := plan.decision with input as playbook with data.stead.tenants as tenants
	d.outcome == "allow"
}

test_allow_plan_without_planner_usage if {
	d := plan.decision with input as json.remove(shop_plan, ["plan/planner"]) with data.stead.tenants as tenants
	d.outcome == "allow"
}

test_allow_star_tenant_runs_any_catalog_operation if {
	acme := object.union(with_steps([email_step]), {"tenant": "acme"})
	d := plan.decision with input as acme with data.stead.tenants as tenants
	d.outcome == "allow"
}

test_allow_shipped_data_configures_acme if {
	d := plan.decision with input as object.union(shop_plan, {"tenant": "acme"})
	d.outcome == "allow"
}

test_deny_operation_not_in_tenant_allow_list if {
	d := plan.decision with input as with_steps([email_step]) with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["step notify: operation email.send is not allowed for tenant shop"]}
}

test_deny_operation_unknown_to_the_catalog if {
	acme := object.union(with_steps([rocket_step]), {"tenant": "acme"})
	d := plan.decision with input as acme with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["step launch: operation rocket.launch is unknown (not in the adapter catalog)"]}
}

test_deny_more_steps_than_budget if {
	d := plan.decision with input as object.union(shop_plan, {"budget": {"max_steps": 1}})
		with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["plan has 2 steps, more than the budget of 1"]}
}

test_deny_planner_tokens_over_budget if {
	d := plan.decision with input as object.union(shop_plan, {"plan": {"planner": {"tokens": 4001}}})
		with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["planner used 4001 tokens, more than the budget of 4000"]}
}

test_deny_planner_cost_over_budget if {
	d := plan.decision with input as object.union(shop_plan, {"plan": {"planner": {"cost_usd": 1.25}}})
		with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["planner cost $1.25, more than the budget of $1"]}
}

test_deny_unconfigured_tenant if {
	d := plan.decision with input as object.union(shop_plan, {"tenant": "ghost"}) with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["tenant ghost is not configured"]}
}

test_deny_tenant_without_allow_list_allows_nothing if {
	d := plan.decision with input as shop_plan with data.stead.tenants as {"shop": {}}
	d == {"outcome": "deny", "reasons": [
		"step fetch: operation http.request is not allowed for tenant shop",
		"step save: operation records.put is not allowed for tenant shop",
	]}
}

test_deny_reports_every_violation if {
	bad := object.union(with_steps([email_step, rocket_step]), {
		"plan": {"planner": {"tokens": 9000, "cost_usd": 3}},
		"budget": {"max_steps": 1},
	})
	d := plan.decision with input as bad with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": [
		"plan has 2 steps, more than the budget of 1",
		"planner cost $3, more than the budget of $1",
		"planner used 9000 tokens, more than the budget of 4000",
		"step launch: operation rocket.launch is not allowed for tenant shop",
		"step launch: operation rocket.launch is unknown (not in the adapter catalog)",
		"step notify: operation email.send is not allowed for tenant shop",
	]}
}

test_deny_step_without_operation if {
	d := plan.decision with input as with_steps([{"id": "nameless", "args": {}}]) with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["plan step 0 must have a string id and a string operation"]}
}

test_deny_plan_without_steps_or_budget if {
	d := plan.decision with input as json.remove(shop_plan, ["plan/steps", "budget"]) with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": [
		"input.budget.max_steps must be a number",
		"input.budget.max_tokens must be a number",
		"input.budget.max_usd must be a number",
		"input.plan.steps must be a list",
	]}
}

test_deny_non_numeric_planner_usage if {
	d := plan.decision with input as object.union(shop_plan, {"plan": {"planner": {"tokens": "many"}}})
		with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["input.plan.planner.tokens must be a number"]}
}

test_deny_empty_input if {
	d := plan.decision with input as {} with data.stead.tenants as tenants
	d.outcome == "deny"
	"input.tenant must be a string" in d.reasons
	"input.operations must be an object" in d.reasons
}

test_deny_absent_input if {
	d := plan.decision with data.stead.tenants as tenants
	d.outcome == "deny"
	"input.tenant must be a string" in d.reasons
}

test_deny_a_plan_over_the_tenants_run_budget_whatever_the_request_says if {
	capped := object.union(tenants, {"shop": {"run_budget": {"max_steps": 1}}})
	raised := object.union(shop_plan, {"budget": {"max_steps": 100000}})
	d := plan.decision with input as raised with data.stead.tenants as capped
	d == {"outcome": "deny", "reasons": ["plan has 2 steps, more than the budget of 1"]}
}
