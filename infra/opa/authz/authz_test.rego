package system.authz_test

import data.system.authz

tokens := {
	crypto.sha256("decision-secret"): "decision",
	crypto.sha256("admin-secret"): "admin",
}

ask(method, path, identity) if {
	authz.allow with input as {"method": method, "path": path, "identity": identity}
		with data.system.stead_authz.tokens as tokens
}

ask_anonymous(method, path) if {
	authz.allow with input as {"method": method, "path": path}
		with data.system.stead_authz.tokens as tokens
}

test_allow_health_without_a_token if {
	ask_anonymous("GET", ["health"])
	ask_anonymous("GET", ["health", "live"])
	ask_anonymous("GET", ["health", "ready"])
}

test_deny_custom_health_rules_and_writes_without_a_token if {
	not ask_anonymous("GET", ["health", "anything"])
	not ask_anonymous("POST", ["health"])
}

test_deny_everything_else_without_a_token if {
	not ask_anonymous("POST", ["v1", "data", "stead", "step", "decision"])
	not ask_anonymous("PUT", ["v1", "data", "stead", "tenants", "x"])
	not ask_anonymous("PUT", ["v1", "policies", "p"])
	not ask_anonymous("GET", ["v1", "data", "system", "stead_authz"])
}

test_deny_an_unknown_token if {
	not ask("POST", ["v1", "data", "stead", "step", "decision"], "guess")
	not ask("POST", ["v1", "data", "stead", "step", "decision"], "")
}

test_allow_decision_token_to_ask_stead_decisions if {
	ask("POST", ["v1", "data", "stead", "step", "decision"], "decision-secret")
	ask("POST", ["v1", "data", "stead", "plan", "decision"], "decision-secret")
	ask("GET", ["v1", "data", "stead", "tenants", "shop", "reconcile"], "decision-secret")
}

test_deny_decision_token_writes_policies_and_queries if {
	not ask("PUT", ["v1", "data", "stead", "tenants", "x"], "decision-secret")
	not ask("PATCH", ["v1", "data", "stead", "tenants"], "decision-secret")
	not ask("DELETE", ["v1", "data", "stead", "tenants", "x"], "decision-secret")
	not ask("PUT", ["v1", "policies", "p"], "decision-secret")
	not ask("GET", ["v1", "policies"], "decision-secret")
	not ask("POST", ["v1", "query"], "decision-secret")
	not ask("POST", ["v1", "compile"], "decision-secret")
	not ask("GET", ["v1", "config"], "decision-secret")
}

test_deny_decision_token_outside_stead if {
	not ask("POST", ["v1", "data"], "decision-secret")
	not ask("GET", ["v1", "data", "system", "stead_authz", "tokens"], "decision-secret")
	not ask("POST", ["v1", "data", "system", "authz", "allow"], "decision-secret")
	not ask("GET", ["v1", "data", "stead", "..", "system"], "decision-secret")
	not ask("GET", ["v1", "data", "stead", "", "x"], "decision-secret")
}

test_allow_admin_token_to_change_data_and_policies if {
	ask("PUT", ["v1", "data", "stead", "tenants", "x"], "admin-secret")
	ask("PATCH", ["v1", "data", "stead", "tenants"], "admin-secret")
	ask("DELETE", ["v1", "data", "stead", "tenants", "x"], "admin-secret")
	ask("PUT", ["v1", "policies", "stead", "extra.rego"], "admin-secret")
	ask("GET", ["v1", "policies"], "admin-secret")
	ask("POST", ["v1", "data", "stead", "step", "decision"], "admin-secret")
}

test_deny_admin_token_the_root_and_system_documents if {
	not ask("PUT", ["v1", "data"], "admin-secret")
	not ask("GET", ["v1", "data"], "admin-secret")
	not ask("PUT", ["v1", "data", "system", "stead_authz", "tokens"], "admin-secret")
	not ask("GET", ["v1", "data", "system", "stead_authz"], "admin-secret")
	not ask("POST", ["v1", "query"], "admin-secret")
}
