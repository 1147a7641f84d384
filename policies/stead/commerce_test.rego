package stead.commerce_test # regal ignore:directory-package-mismatch

import data.stead.step

tenants := {"shop": {
	"operations": ["shop.*"],
	"approval_risk": "high",
	"approvers": ["user:ops-lead"],
	"reconcile": {"max_auto_units": 5, "max_auto_value": 100},
	"egress": ["http://127.0.0.1:9"],
}}

adjustment(sku, delta, unit_value) := {"sku": sku, "delta": delta, "unit_value": unit_value}

fix(adjustments) := {
	"tenant": "shop",
	"principal": "service:nightly",
	"run": {"workflow_id": "run-1", "run_id": "r-1", "started_by": "service:nightly"},
	"step": {
		"id": "fix_small",
		"operation": "shop.adjust_stock",
		"args": {"base_url": "http://127.0.0.1:9", "adjustments": adjustments},
		"destinations": [{"kind": "url", "scheme": "http", "host": "127.0.0.1", "port": 9, "label": "http://127.0.0.1:9"}],
		"tainted": [],
	},
	"operation": {"name": "shop.adjust_stock", "side_effect": "external", "risk": "medium", "scopes": ["shop:write"]},
	"budget": {"max_steps": 50, "max_tokens": 200000, "max_usd": 5},
	"spent": {"steps": 3, "tokens": 0, "usd": 0},
	"approvals": [],
}

small := [adjustment("MUG-01", -2, 14), adjustment("CAP-03", 3, 18)]

test_allow_adjustments_within_limits if {
	d := step.decision with input as fix(small) with data.stead.tenants as tenants
	d.outcome == "allow"
}

test_allow_an_empty_batch if {
	d := step.decision with input as fix([]) with data.stead.tenants as tenants
	d.outcome == "allow"
}

test_approve_when_units_are_over_the_limit if {
	d := step.decision with input as fix([adjustment("PIN-06", 6, 1)]) with data.stead.tenants as tenants
	d.outcome == "approve"
	d.reasons == ["stock of PIN-06: 6 units (value 6) is over the auto-fix limits of tenant shop (5 units, value 100)"]
	d.approval.approvers == ["user:ops-lead"]
}

test_approve_when_value_is_over_the_limit if {
	d := step.decision with input as fix([adjustment("LMP-05", -3, 89)]) with data.stead.tenants as tenants
	d.outcome == "approve"
	d.reasons == ["stock of LMP-05: -3 units (value 267) is over the auto-fix limits of tenant shop (5 units, value 100)"]
}

test_approve_the_whole_batch_when_one_adjustment_is_over if {
	d := step.decision with input as fix(array.concat(small, [adjustment("LMP-05", -3, 89)]))
		with data.stead.tenants as tenants
	d.outcome == "approve"
	count(d.reasons) == 1
}

test_approve_more_when_the_limit_is_tightened if {
	tightened := json.patch(tenants, [{"op": "replace", "path": "/shop/reconcile/max_auto_units", "value": 2}])
	d := step.decision with input as fix(small) with data.stead.tenants as tightened
	d.outcome == "approve"
	d.reasons == ["stock of CAP-03: 3 units (value 54) is over the auto-fix limits of tenant shop (2 units, value 100)"]
}

test_approve_every_adjustment_without_limits if {
	d := step.decision with input as fix(small) with data.stead.tenants as {"shop": {"operations": ["*"], "egress": ["127.0.0.1"]}}
	d.outcome == "approve"
	d.reasons == ["tenant shop has no numeric reconcile limits (max_auto_units, max_auto_value), so every stock adjustment is reviewed"]
}

test_approve_an_adjustment_without_numbers if {
	d := step.decision with input as fix([{"sku": "MUG-01", "delta": "-2"}]) with data.stead.tenants as tenants
	d.outcome == "approve"
	d.reasons == ["stock adjustment 0 has no numeric delta and unit_value, so it is reviewed"]
}

test_allow_after_approval_of_a_large_adjustment if {
	big := fix([adjustment("LMP-05", -3, 89)])
	approved := object.union(big, {"approvals": [{"approver": "user:ops-lead", "verdict": "approve"}]})
	d := step.decision with input as approved with data.stead.tenants as tenants
	d.outcome == "allow"
}

test_deny_rules_still_apply_to_adjustments if {
	d := step.decision with input as fix(small) with data.stead.tenants as {"shop": {"operations": ["records.*"]}}
	d.outcome == "deny"
}

test_allow_other_operations_ignore_reconcile_limits if {
	other := object.union(fix(small), {
		"step": {"id": "read", "operation": "shop.products", "args": {"adjustments": [adjustment("X", 99, 99)]}},
		"operation": {"name": "shop.products", "side_effect": "read", "risk": "low", "scopes": []},
	})
	d := step.decision with input as other with data.stead.tenants as tenants
	d.outcome == "allow"
}

# The field cases remember their findings (memory.remember, a low-risk write) and recall
# earlier ones (memory.history, a low-risk read) without a human, under the shipped
# tenant data (policies/stead/data.json); so do the commerce case's per-SKU points
# (memory.observe_many) and the trend it reads (memory.series).
memory_step(tenant, operation, side_effect) := {
	"tenant": tenant,
	"principal": "service:nightly",
	"run": {"workflow_id": "run-1", "run_id": "r-1", "started_by": "service:nightly"},
	"step": {"id": "remember", "operation": operation, "args": {"namespace": "commerce", "key": "reconciliation"}},
	"operation": {"name": operation, "side_effect": side_effect, "risk": "low", "scopes": ["memory:write"]},
	"budget": {"max_steps": 50, "max_tokens": 200000, "max_usd": 5},
	"spent": {"steps": 3, "tokens": 0, "usd": 0},
	"approvals": [],
}

test_allow_the_case_tenants_to_remember_and_recall_history if {
	every tenant in ["shop", "creator"] {
		every op in [
			["memory.remember", "write"], ["memory.history", "read"],
			["memory.observe_many", "write"], ["memory.series", "read"],
		] {
			d := step.decision with input as memory_step(tenant, op[0], op[1])
			d.outcome == "allow"
		}
	}
}
