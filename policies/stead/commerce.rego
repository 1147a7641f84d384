# Stock adjustments, a part of the step decision (package stead.step, which step.rego
# documents): a shop.adjust_stock step is held for a human when any adjustment in its
# args is over the tenant's auto-fix limits, data.stead.tenants[<tenant>].reconcile =
# {max_auto_units, max_auto_value}. Value is |delta| * unit_value, computed here rather
# than read from the step. A tenant without valid limits, or an adjustment without
# numbers, is reviewed: a missing limit never means "no limit".
package stead.step # regal ignore:directory-package-mismatch

adjustments := input.step.args.adjustments if {
	input.step.operation == "shop.adjust_stock"
	is_array(input.step.args.adjustments)
}

reconcile_limits := tenant_config.reconcile if {
	is_number(tenant_config.reconcile.max_auto_units)
	is_number(tenant_config.reconcile.max_auto_value)
}

approval_triggers contains sprintf(
	"stock of %v: %v units (value %v) is over the auto-fix limits of tenant %s (%v units, value %v)",
	[
		adj.sku, adj.delta, adjustment_value(adj), input.tenant,
		reconcile_limits.max_auto_units, reconcile_limits.max_auto_value,
	],
) if {
	some adj in adjustments
	over_limit(adj)
}

approval_triggers contains sprintf(
	"tenant %s has no numeric reconcile limits (max_auto_units, max_auto_value), so every stock adjustment is reviewed",
	[input.tenant],
) if {
	count(adjustments) > 0
	not reconcile_limits
}

approval_triggers contains sprintf("stock adjustment %d has no numeric delta and unit_value, so it is reviewed", [i]) if {
	some i, adj in adjustments
	not numeric_adjustment(adj)
}

numeric_adjustment(adj) if {
	is_number(adj.delta)
	is_number(adj.unit_value)
}

adjustment_value(adj) := abs(adj.delta) * adj.unit_value

over_limit(adj) if {
	numeric_adjustment(adj)
	abs(adj.delta) > reconcile_limits.max_auto_units
}

over_limit(adj) if {
	numeric_adjustment(adj)
	adjustment_value(adj) > reconcile_limits.max_auto_value
}
