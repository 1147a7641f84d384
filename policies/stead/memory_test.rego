package stead.memory_test # regal ignore:directory-package-mismatch

import data.stead.memory

tenants := {
	"shop": {"memory": {"pii_readers": [
		{"principals": ["user:alice"], "agents": ["planner"], "namespaces": ["customers", "crm/*"]},
		{"principals": ["*"], "namespaces": ["public-profiles"]},
	]}},
	"bare": {"operations": ["*"]},
}

pii(overrides) := object.union(
	{"tenant": "shop", "principal": "user:alice", "agent": "planner", "namespace": "customers", "sensitivity": "pii"},
	overrides,
)

test_allow_public_and_internal_for_anyone if {
	memory.read with input as pii({"sensitivity": "public", "tenant": "bare"}) with data.stead.tenants as tenants
	memory.read with input as pii({"sensitivity": "internal", "principal": "user:eve"}) with data.stead.tenants as tenants
}

test_allow_pii_for_granted_principal_and_agent if {
	memory.read with input as pii({}) with data.stead.tenants as tenants
}

test_allow_pii_under_a_namespace_prefix if {
	memory.read with input as pii({"namespace": "crm/orders"}) with data.stead.tenants as tenants
}

test_allow_pii_direct_read_without_agent if {
	memory.read with input as pii({"agent": null}) with data.stead.tenants as tenants
}

test_allow_pii_wildcard_principal_direct_read if {
	memory.read with input as pii({"principal": "user:bob", "agent": null, "namespace": "public-profiles"})
		with data.stead.tenants as tenants
}

test_deny_pii_for_ungranted_principal if {
	not memory.read with input as pii({"principal": "user:eve"}) with data.stead.tenants as tenants
}

test_deny_pii_for_ungranted_agent if {
	not memory.read with input as pii({"agent": "summarizer"}) with data.stead.tenants as tenants
}

test_deny_pii_to_an_agent_when_the_grant_names_none if {
	not memory.read with input as pii({"principal": "user:bob", "namespace": "public-profiles"})
		with data.stead.tenants as tenants
}

test_deny_pii_outside_granted_namespaces if {
	not memory.read with input as pii({"namespace": "payroll"}) with data.stead.tenants as tenants
	not memory.read with input as pii({"namespace": "crmx"}) with data.stead.tenants as tenants
}

test_deny_pii_for_tenant_without_grants if {
	not memory.read with input as pii({"tenant": "bare"}) with data.stead.tenants as tenants
	not memory.read with input as pii({"tenant": "unknown"}) with data.stead.tenants as tenants
}

test_deny_pii_grants_of_another_tenant if {
	not memory.read with input as pii({"tenant": "bare", "namespace": "customers"}) with data.stead.tenants as tenants
}

test_deny_secret_even_for_granted_reader if {
	not memory.read with input as pii({"sensitivity": "secret"}) with data.stead.tenants as tenants
}

test_deny_without_input if {
	not memory.read with data.stead.tenants as tenants
}

fresh_ops := {"t1": {"memory": {"consistency": {"fresh": ["ops", "orders/*"]}}}}

test_consistency_defaults_to_indexed if {
	memory.consistency == "indexed" with input as {"tenant": "t1", "namespaces": ["ops"]}
}

test_consistency_fresh_for_a_listed_namespace if {
	memory.consistency == "fresh" with input as {"tenant": "t1", "namespaces": ["orders/eu"]}
		with data.stead.tenants as fresh_ops
}

test_consistency_indexed_for_an_unlisted_namespace if {
	memory.consistency == "indexed" with input as {"tenant": "t1", "namespaces": ["brand"]}
		with data.stead.tenants as fresh_ops
}

test_consistency_fresh_for_every_namespace_when_any_is if {
	memory.consistency == "fresh" with input as {"tenant": "t1", "namespaces": null}
		with data.stead.tenants as fresh_ops
}
