package stead.step_test # regal ignore:directory-package-mismatch

import data.stead.step

tenants := {
	"acme": {"operations": ["*"], "approval_risk": "high", "egress": ["mail:example.com"]},
	"shop": {
		"operations": ["http.request", "records.*"],
		"approval_risk": "medium",
		"approve_external": true,
		"approvers": ["group:shop-leads", "user:dana"],
		"min_approvals": 2,
		"approval_timeout_seconds": 600,
		"on_timeout": "escalate",
		"escalate_to": ["user:owner"],
		"egress": ["127.0.0.1", "mail:example.com"],
	},
	"solo": {"operations": ["*"], "allow_self_approval": true, "egress": ["mail:example.com"]},
}

read_step := {
	"tenant": "acme",
	"principal": "user:carol",
	"run": {"workflow_id": "run-7", "run_id": "r-1", "started_by": "user:carol"},
	"step": {"id": "lookup", "operation": "records.get", "args": {"key": "orders"}, "secrets": [], "tainted": []},
	"operation": {"name": "records.get", "side_effect": "read", "risk": "low", "scopes": ["records:read"]},
	"budget": {"max_steps": 10, "max_tokens": 10000, "max_usd": 1},
	"spent": {"steps": 2, "tokens": 1500, "usd": 0.1},
	"approvals": [],
}

email_step := object.union(read_step, {
	"step": {
		"id": "notify", "operation": "email.send", "args": {"to": "ops@example.com"},
		"destinations": [{"kind": "mail", "host": "example.com", "scheme": null, "port": null, "label": "mail:example.com"}],
	},
	"operation": {"name": "email.send", "side_effect": "external", "risk": "high", "scopes": ["email:send"]},
})

http_step := object.union(read_step, {
	"tenant": "shop",
	"step": {
		"id": "fetch", "operation": "http.request", "args": {"url": "http://127.0.0.1:9/orders"},
		"destinations": [url_dest("http", "127.0.0.1", 9)],
	},
	"operation": {"name": "http.request", "side_effect": "external", "risk": "low", "scopes": ["http:request"]},
})

url_dest(scheme, host, port) := {
	"kind": "url", "scheme": scheme, "host": host, "port": port,
	"label": sprintf("%s://%s:%d", [scheme, host, port]),
}

default_approval := {
	"approvers": ["group:approvers"],
	"min_approvals": 1,
	"timeout_seconds": 3600,
	"on_timeout": "reject",
	"escalate_to": [],
	"allow_self_approval": false,
}

email_risk_reason := "operation email.send has high risk, at or above the approval threshold (high) of tenant acme"

approve(approver) := {"approver": approver, "verdict": "approve"}

test_allow_low_risk_read if {
	d := step.decision with input as read_step with data.stead.tenants as tenants
	d == {"outcome": "allow", "reasons": ["allowed by policy"], "approval": null}
}

test_allow_medium_risk_below_default_threshold if {
	medium := object.union(read_step, {"operation": {"risk": "medium"}})
	d := step.decision with input as medium with data.stead.tenants as tenants
	d.outcome == "allow"
}

test_allow_adapter_wildcard_in_allow_list if {
	put := object.union(read_step, {
		"tenant": "shop",
		"step": {"operation": "records.put"},
		"operation": {"name": "records.put", "side_effect": "write"},
	})
	d := step.decision with input as put with data.stead.tenants as tenants
	d == {"outcome": "allow", "reasons": ["allowed by policy"], "approval": null}
}

test_allow_external_effect_when_tenant_does_not_ask_for_approval if {
	external := object.union(email_step, {"operation": {"risk": "low"}})
	d := step.decision with input as external with data.stead.tenants as tenants
	d.outcome == "allow"
}

test_allow_just_below_soft_budget if {
	d := step.decision with input as object.union(read_step, {"spent": {"usd": 0.79, "tokens": 7999}})
		with data.stead.tenants as tenants
	d.outcome == "allow"
}

test_allow_approved_by_another_principal if {
	approved := object.union(email_step, {"approvals": [approve("user:alice")]})
	d := step.decision with input as approved with data.stead.tenants as tenants
	d == {"outcome": "allow", "reasons": ["approved"], "approval": null}
}

test_allow_self_approval_when_tenant_allows_it if {
	own := object.union(email_step, {"tenant": "solo", "approvals": [approve("user:carol")]})
	d := step.decision with input as own with data.stead.tenants as tenants
	d == {"outcome": "allow", "reasons": ["approved"], "approval": null}
}

test_allow_after_enough_distinct_approvals if {
	two := object.union(http_step, {"approvals": [approve("user:dana"), approve("user:erin")]})
	d := step.decision with input as two with data.stead.tenants as tenants
	d == {"outcome": "allow", "reasons": ["approved"], "approval": null}
}

test_approve_high_risk_with_default_settings if {
	d := step.decision with input as email_step with data.stead.tenants as tenants
	d == {"outcome": "approve", "reasons": [email_risk_reason], "approval": default_approval}
}

test_approve_demo_tenant_from_shipped_data if {
	d := step.decision with input as object.union(email_step, {"tenant": "demo"})
	d.outcome == "approve"
	d.approval.approvers == ["group:approvers", "user:alice"]
}

test_approve_risk_at_tenant_threshold if {
	medium := object.union(http_step, {"operation": {"risk": "medium"}, "approvals": null})
	d := step.decision with input as medium
		with data.stead.tenants as {"shop": {"operations": ["*"], "approval_risk": "medium", "egress": ["127.0.0.1"]}}
	d == {
		"outcome": "approve",
		"reasons": ["operation http.request has medium risk, at or above the approval threshold (medium) of tenant shop"],
		"approval": default_approval,
	}
}

test_approve_unknown_threshold_falls_back_to_strictest if {
	d := step.decision with input as read_step
		with data.stead.tenants as {"acme": {"operations": ["*"], "approval_risk": "hgih"}}
	d.outcome == "approve"
	d.reasons == ["operation records.get has low risk, at or above the approval threshold (low) of tenant acme"]
}

test_approve_external_effect_with_tenant_approval_settings if {
	d := step.decision with input as http_step with data.stead.tenants as tenants
	d == {
		"outcome": "approve",
		"reasons": ["operation http.request has external side effects and tenant shop approves every external effect"],
		"approval": {
			"approvers": ["group:shop-leads", "user:dana"],
			"min_approvals": 2,
			"timeout_seconds": 600,
			"on_timeout": "escalate",
			"escalate_to": ["user:owner"],
			"allow_self_approval": false,
		},
	}
}

test_approve_cost_soft_limit if {
	d := step.decision with input as object.union(read_step, {"spent": {"usd": 0.8}}) with data.stead.tenants as tenants
	d == {
		"outcome": "approve",
		"reasons": ["cost soft limit reached: $0.8 spent is at or above 80% of the $1 budget"],
		"approval": default_approval,
	}
}

test_approve_token_soft_limit_with_tenant_fraction if {
	d := step.decision with input as object.union(read_step, {"spent": {"tokens": 5000}})
		with data.stead.tenants as {"acme": {"operations": ["*"], "soft_budget_fraction": 0.5}}
	d.outcome == "approve"
	d.reasons == ["token soft limit reached: 5000 tokens spent is at or above 50% of the 10000 token budget"]
}

test_approve_self_approval_is_not_counted if {
	own := object.union(email_step, {"approvals": [approve("user:carol")]})
	d := step.decision with input as own with data.stead.tenants as tenants
	d.outcome == "approve"
	d.reasons == [
		"0 of 1 required approvals received",
		"approval by user:carol not counted: self-approval is not allowed",
		email_risk_reason,
	]
}

test_approve_until_enough_distinct_approvers if {
	twice := object.union(http_step, {"approvals": [approve("user:dana"), approve("user:dana")]})
	d := step.decision with input as twice with data.stead.tenants as tenants
	d.outcome == "approve"
	"1 of 2 required approvals received" in d.reasons
}

test_deny_operation_not_allowed_for_tenant if {
	email := object.union(email_step, {"tenant": "shop"})
	d := step.decision with input as email with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["operation email.send is not allowed for tenant shop"], "approval": null}
}

test_deny_tenant_without_allow_list if {
	d := step.decision with input as read_step with data.stead.tenants as {"acme": {}}
	d.reasons == ["operation records.get is not allowed for tenant acme"]
}

test_deny_unconfigured_tenant if {
	d := step.decision with input as object.union(read_step, {"tenant": "ghost"}) with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["tenant ghost is not configured"], "approval": null}
}

test_deny_step_budget_exhausted if {
	d := step.decision with input as object.union(read_step, {"spent": {"steps": 10}}) with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["step budget exhausted: 10 of 10 steps already run"], "approval": null}
}

test_deny_token_budget_exhausted if {
	d := step.decision with input as object.union(read_step, {"spent": {"tokens": 10001}})
		with data.stead.tenants as tenants
	d == {
		"outcome": "deny",
		"reasons": ["token budget exhausted: 10001 tokens spent, past the cap of 10000"],
		"approval": null,
	}
}

test_deny_cost_budget_exhausted if {
	d := step.decision with input as object.union(read_step, {"spent": {"usd": 1.5}}) with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["cost budget exhausted: $1.5 spent, past the cap of $1"], "approval": null}
}

test_deny_wins_over_approval if {
	broke := object.union(email_step, {"spent": {"usd": 2}, "approvals": [approve("user:alice")]})
	d := step.decision with input as broke with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["cost budget exhausted: $2 spent, past the cap of $1"], "approval": null}
}

test_deny_rejected_by_approver if {
	rejected := object.union(email_step, {"approvals": [
		approve("user:alice"),
		{"approver": "user:bob", "verdict": "reject"},
	]})
	d := step.decision with input as rejected with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["step notify was rejected by user:bob"], "approval": null}
}

test_deny_operation_descriptor_for_another_operation if {
	mismatched := object.union(read_step, {"operation": {"name": "records.put"}})
	d := step.decision with input as mismatched with data.stead.tenants as tenants
	d.reasons == ["step lookup runs operation records.get but the policy input describes operation records.put"]
}

test_deny_unknown_risk_and_side_effect if {
	odd := object.union(read_step, {"operation": {"risk": "extreme", "side_effect": "teleport"}})
	d := step.decision with input as odd with data.stead.tenants as tenants
	d.outcome == "deny"
	d.reasons == [
		"operation records.get has unknown risk extreme; expected low, medium or high",
		"operation records.get has unknown side effect teleport; expected read, write or external",
	]
}

test_deny_mistyped_spent if {
	mistyped := object.union(read_step, {"spent": {"usd": "0.1"}})
	d := step.decision with input as mistyped with data.stead.tenants as tenants
	d == {"outcome": "deny", "reasons": ["input.spent.usd must be a number"], "approval": null}
}

test_deny_absent_input if {
	d := step.decision with data.stead.tenants as tenants
	d.outcome == "deny"
	d.approval == null
	count(d.reasons) == 13
	"input.tenant must be a string" in d.reasons
}

# Tenant budgets: "capped" allows $1 and 10000 tokens a month, soft line at half.
budget_tenants := object.union(tenants, {"capped": {
	"operations": ["*"],
	"budget": {"monthly_usd": 1, "monthly_tokens": 10000, "soft_fraction": 0.5},
}})

capped_step(tenant_spent, spent) := object.union(read_step, {
	"tenant": "capped",
	"tenant_spent": tenant_spent,
	"spent": spent,
})

test_allow_tenant_spend_below_monthly_soft_line if {
	s := capped_step({"usd": 0.3, "tokens": 3000, "runs": 4}, {"usd": 0.1, "tokens": 1000})
	d := step.decision with input as s with data.stead.tenants as budget_tenants
	d == {"outcome": "allow", "reasons": ["allowed by policy"], "approval": null}
}

test_allow_tenant_without_budget_ignores_tenant_spend if {
	d := step.decision with input as object.union(read_step, {"tenant_spent": {"usd": 1000, "tokens": 1e9}})
		with data.stead.tenants as tenants
	d.outcome == "allow"
}

test_allow_tenant_soft_limit_once_approved if {
	s := object.union(capped_step({"usd": 0.45, "tokens": 0}, {"usd": 0.05}), {"approvals": [approve("user:alice")]})
	d := step.decision with input as s with data.stead.tenants as budget_tenants
	d == {"outcome": "allow", "reasons": ["approved"], "approval": null}
}

test_approve_tenant_cost_soft_limit_counts_this_run if {
	# Other runs spent $0.45 and this one $0.05: together exactly at the soft line.
	d := step.decision with input as capped_step({"usd": 0.45, "tokens": 0}, {"usd": 0.05})
		with data.stead.tenants as budget_tenants
	d == {
		"outcome": "approve",
		"reasons": ["monthly cost budget of tenant capped nearly spent: $0.5 spent this month is at or above 50% of the $1 cap"],
		"approval": default_approval,
	}
}

test_approve_tenant_token_soft_limit if {
	d := step.decision with input as capped_step({"usd": 0, "tokens": 9000}, {"tokens": 500})
		with data.stead.tenants as budget_tenants
	d.outcome == "approve"
	d.reasons == ["monthly token budget of tenant capped nearly spent: 9500 tokens spent this month is at or above 50% of the 10000 tokens cap"]
}

test_approve_tenant_soft_line_defaults_to_tenant_soft_budget_fraction if {
	t := {"capped": {"operations": ["*"], "soft_budget_fraction": 0.9, "budget": {"monthly_usd": 10}}}
	below := step.decision with input as capped_step({"usd": 8.8}, {"usd": 0.1}) with data.stead.tenants as t
	below.outcome == "allow"
	at := step.decision with input as capped_step({"usd": 8.9}, {"usd": 0.1}) with data.stead.tenants as t
	at.reasons == ["monthly cost budget of tenant capped nearly spent: $9 spent this month is at or above 90% of the $10 cap"]
}

test_deny_tenant_cost_cap_exceeded if {
	d := step.decision with input as capped_step({"usd": 0.95, "tokens": 0}, {"usd": 0.1})
		with data.stead.tenants as budget_tenants
	d == {
		"outcome": "deny",
		"reasons": ["monthly cost budget of tenant capped exhausted: $1.05 spent this month, past the cap of $1"],
		"approval": null,
	}
}

test_deny_tenant_token_cap_exceeded_even_when_approved if {
	s := object.union(capped_step({"usd": 0, "tokens": 10001}, {"tokens": 0}), {"approvals": [approve("user:alice")]})
	d := step.decision with input as s with data.stead.tenants as budget_tenants
	d == {
		"outcome": "deny",
		"reasons": ["monthly token budget of tenant capped exhausted: 10001 tokens spent this month, past the cap of 10000 tokens"],
		"approval": null,
	}
}

test_deny_tenant_budget_without_tenant_spent_input if {
	d := step.decision with input as object.union(read_step, {"tenant": "capped"})
		with data.stead.tenants as budget_tenants
	d.outcome == "deny"
	d.reasons == [
		"input.tenant_spent.tokens must be a number: tenant capped has a monthly token budget",
		"input.tenant_spent.usd must be a number: tenant capped has a monthly cost budget",
	]
}

test_deny_mistyped_tenant_budget if {
	t := {"capped": {"operations": ["*"], "budget": {"monthly_usd": "1", "soft_fraction": 2}}}
	d := step.decision with input as capped_step({"usd": 0, "tokens": 0}, {"usd": 0})
		with data.stead.tenants as t
	d.reasons == [
		"tenant capped budget.monthly_usd must be a number",
		"tenant capped budget.soft_fraction must be between 0 and 1",
	]
}

test_deny_tenant_budget_that_is_not_an_object if {
	t := {"capped": {"operations": ["*"], "budget": 5}}
	d := step.decision with input as capped_step({"usd": 0, "tokens": 0}, {"usd": 0})
		with data.stead.tenants as t
	d.reasons == ["tenant capped budget must be an object with monthly_usd, monthly_tokens or soft_fraction"]
}

# The run's budget comes from workflow input; the tenant's run_budget in policy data caps it.
capped_runs := object.union(tenants, {"acme": {"operations": ["*"], "approval_risk": "high", "run_budget": {"max_usd": 1, "max_steps": 3}}})

test_deny_a_starter_cannot_raise_the_tenants_run_budget if {
	raised := object.union(read_step, {"budget": {"max_steps": 100000, "max_usd": 1000}, "spent": {"steps": 3, "usd": 0.1}})
	d := step.decision with input as raised with data.stead.tenants as capped_runs
	d == {"outcome": "deny", "reasons": ["step budget exhausted: 3 of 3 steps already run"], "approval": null}
}

test_allow_a_starter_may_ask_for_less_than_the_run_budget if {
	lower := object.union(read_step, {"budget": {"max_steps": 2}, "spent": {"steps": 2}})
	d := step.decision with input as lower with data.stead.tenants as capped_runs
	d == {"outcome": "deny", "reasons": ["step budget exhausted: 2 of 2 steps already run"], "approval": null}
	ok := step.decision with input as read_step with data.stead.tenants as capped_runs
	ok.outcome == "allow"
}

test_approve_a_raised_cost_budget_still_meets_the_run_budgets_soft_line if {
	raised := object.union(read_step, {"budget": {"max_usd": 1000}, "spent": {"usd": 0.85}})
	d := step.decision with input as raised with data.stead.tenants as capped_runs
	d.outcome == "approve"
	d.reasons == ["cost soft limit reached: $0.85 spent is at or above 80% of the $1 budget"]
}

test_deny_a_mistyped_run_budget if {
	odd := object.union(tenants, {"acme": {"operations": ["*"], "run_budget": {"max_usd": "1"}}})
	d := step.decision with input as read_step with data.stead.tenants as odd
	d == {"outcome": "deny", "reasons": ["tenant acme run_budget.max_usd must be a number"], "approval": null}
}

# Egress: destinations against the tenant's egress list, and tainted arguments.

egress_tenant(entries) := {"acme": {"operations": ["*"], "approval_risk": "high", "egress": entries}}

call(dest) := object.union(read_step, {
	"step": {"id": "call", "operation": "http.request", "args": {}, "destinations": [dest]},
	"operation": {"name": "http.request", "side_effect": "external", "risk": "medium", "scopes": ["http:request"]},
})

api := url_dest("https", "api.example.com", 443)

test_allow_listed_host_any_port if {
	d := step.decision with input as call(url_dest("http", "api.example.com", 8080))
		with data.stead.tenants as egress_tenant(["api.example.com"])
	d == {"outcome": "allow", "reasons": ["allowed by policy"], "approval": null}
}

test_allow_entry_written_in_another_case_with_trailing_dot if {
	d := step.decision with input as call(api) with data.stead.tenants as egress_tenant([" API.Example.COM. "])
	d.outcome == "allow"
}

test_deny_unlisted_host if {
	d := step.decision with input as call(url_dest("https", "evil.example.net", 443))
		with data.stead.tenants as egress_tenant(["api.example.com"])
	d == {"outcome": "deny", "reasons": ["egress_denied: https://evil.example.net:443 is not in tenant acme's egress list"], "approval": null}
}

test_deny_tenant_without_egress_list if {
	d := step.decision with input as call(api) with data.stead.tenants as {"acme": {"operations": ["*"]}}
	d.outcome == "deny"
	d.reasons == ["egress_denied: tenant acme has no egress list, so step call may not reach https://api.example.com:443; list allowed hosts in data.stead.tenants.acme.egress"]
}

test_deny_empty_egress_list if {
	d := step.decision with input as call(api) with data.stead.tenants as egress_tenant([])
	d.reasons == ["egress_denied: https://api.example.com:443 is not in tenant acme's egress list"]
}

test_allow_wildcard_subdomain if {
	d := step.decision with input as call(url_dest("https", "a.b.example.org", 443))
		with data.stead.tenants as egress_tenant(["*.example.org"])
	d.outcome == "allow"
}

test_deny_wildcard_does_not_match_apex_or_lookalike if {
	entries := egress_tenant(["*.example.org"])
	apex := step.decision with input as call(url_dest("https", "example.org", 443)) with data.stead.tenants as entries
	apex.outcome == "deny"
	lookalike := step.decision with input as call(url_dest("https", "evilexample.org", 443)) with data.stead.tenants as entries
	lookalike.outcome == "deny"
}

test_allow_scheme_host_and_port_entry if {
	d := step.decision with input as call(url_dest("https", "hooks.example.com", 8443))
		with data.stead.tenants as egress_tenant(["https://hooks.example.com:8443"])
	d.outcome == "allow"
}

test_allow_scheme_entry_on_default_port if {
	d := step.decision with input as call(url_dest("https", "hooks.example.com", 443))
		with data.stead.tenants as egress_tenant(["https://hooks.example.com"])
	d.outcome == "allow"
}

test_deny_scheme_entry_on_other_port_or_scheme if {
	entries := egress_tenant(["https://hooks.example.com:8443"])
	port := step.decision with input as call(url_dest("https", "hooks.example.com", 443)) with data.stead.tenants as entries
	port.reasons == ["egress_denied: https://hooks.example.com:443 is not in tenant acme's egress list"]
	scheme := step.decision with input as call(url_dest("http", "hooks.example.com", 8443)) with data.stead.tenants as entries
	scheme.outcome == "deny"
}

test_allow_star_entry if {
	d := step.decision with input as call(url_dest("https", "anything.example", 443)) with data.stead.tenants as egress_tenant(["*"])
	d.outcome == "allow"
}

mail_to(domains) := object.union(email_step, {
	"operation": {"risk": "low"},
	"step": {"destinations": [{"kind": "mail", "host": h} | some h in domains]},
})

test_allow_mail_to_listed_domain if {
	d := step.decision with input as mail_to(["example.com"]) with data.stead.tenants as egress_tenant(["mail:example.com"])
	d.outcome == "allow"
}

test_deny_mail_to_one_unlisted_domain if {
	d := step.decision with input as mail_to(["example.com", "evil.example"])
		with data.stead.tenants as egress_tenant(["mail:example.com", "evil.example"])
	d.reasons == ["egress_denied: mail:evil.example is not in tenant acme's egress list"]
}

test_deny_host_entry_does_not_admit_mail if {
	d := step.decision with input as mail_to(["example.com"]) with data.stead.tenants as egress_tenant(["example.com"])
	d.outcome == "deny"
}

test_deny_external_operation_without_destinations if {
	d := step.decision with input as object.remove(email_step, ["step"]) with data.stead.tenants as tenants
	some reason in d.reasons
	startswith(reason, "egress_denied: operation email.send has external side effects but states no destinations")
}

test_deny_malformed_destinations if {
	bad := step.decision with input as object.union(call(api), {"step": {"destinations": "api.example.com"}})
		with data.stead.tenants as egress_tenant(["*"])
	"input.step.destinations must be an array of destinations, not string" in bad.reasons
	odd := step.decision with input as call({"host": 7}) with data.stead.tenants as egress_tenant(["*"])
	"input.step.destinations[0] must be an object with kind and host" in odd.reasons
}

tainted_call(taints) := object.union(call(api), {"step": {"tainted": taints}})

tainted_reason(sources) := sprintf(
	"step call sends data to https://api.example.com:443 with arguments from %s; a human confirms tainted egress",
	[sources],
)

test_approve_llm_tainted_egress_to_listed_host if {
	d := step.decision with input as tainted_call(["llm"]) with data.stead.tenants as egress_tenant(["api.example.com"])
	d.outcome == "approve"
	d.reasons == [tainted_reason("llm")]
}

test_approve_memory_tainted_egress if {
	d := step.decision with input as tainted_call(["llm", "memory"]) with data.stead.tenants as egress_tenant(["api.example.com"])
	d.reasons == [tainted_reason("llm, memory")]
}

test_approve_egress_without_provenance_as_unknown if {
	d := step.decision with input as object.remove(call(api), ["step"]) with data.stead.tenants as egress_tenant(["api.example.com"])
	d.outcome == "deny" # no destinations either: an external operation must state them
	bare := json.remove(tainted_call([]), ["step/tainted"])
	e := step.decision with input as bare with data.stead.tenants as egress_tenant(["api.example.com"])
	e.reasons == [tainted_reason("unknown")]
}

test_allow_tainted_egress_after_approval if {
	approved := object.union(tainted_call(["llm"]), {"approvals": [approve("user:alice")]})
	d := step.decision with input as approved with data.stead.tenants as egress_tenant(["api.example.com"])
	d == {"outcome": "allow", "reasons": ["approved"], "approval": null}
}

test_allow_tainted_egress_when_tenant_opts_out if {
	cfg := {"acme": {"operations": ["*"], "egress": ["api.example.com"], "approve_tainted_egress": false}}
	d := step.decision with input as tainted_call(["llm"]) with data.stead.tenants as cfg
	d.outcome == "allow"
}

test_deny_tainted_egress_to_unlisted_host_even_when_opted_out if {
	cfg := {"acme": {"operations": ["*"], "egress": ["other.example.com"], "approve_tainted_egress": false}}
	d := step.decision with input as tainted_call(["llm"]) with data.stead.tenants as cfg
	d.reasons == ["egress_denied: https://api.example.com:443 is not in tenant acme's egress list"]
}

test_allow_tainted_step_that_sends_nothing_outside if {
	d := step.decision with input as object.union(read_step, {"step": {"tainted": ["llm", "memory"]}})
		with data.stead.tenants as tenants
	d.outcome == "allow"
}

test_allow_tainted_read_to_a_listed_host if {
	read := object.union(tainted_call(["llm", "memory"]), {"operation": {"side_effect": "read", "risk": "low"}})
	d := step.decision with input as read with data.stead.tenants as egress_tenant(["api.example.com"])
	d.outcome == "allow"
}

test_deny_tainted_read_to_an_unlisted_host if {
	read := object.union(tainted_call(["llm"]), {"operation": {"side_effect": "read", "risk": "low"}})
	d := step.decision with input as read with data.stead.tenants as egress_tenant(["other.example"])
	d.reasons == ["egress_denied: https://api.example.com:443 is not in tenant acme's egress list"]
}

test_allow_own_secret_reference if {
	own := object.union(call(api), {"step": {"secrets": ["secret://acme/http/api_token"], "tainted": []}})
	d := step.decision with input as own with data.stead.tenants as egress_tenant(["api.example.com"])
	d.outcome == "allow"
}

test_deny_another_tenants_secret_reference if {
	other := object.union(call(api), {"step": {"secrets": ["secret://acme-eu/http/api_token"]}})
	d := step.decision with input as other with data.stead.tenants as egress_tenant(["api.example.com"])
	d.reasons == ["secret_refused: step call uses secret://acme-eu/http/api_token, which does not belong to tenant acme"]
}
