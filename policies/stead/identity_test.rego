package stead.identity_test # regal ignore:directory-package-mismatch

import data.stead.identity

tenants := {
	"acme": {"operations": ["*"]},
	"dev": {"operations": ["*"], "approval_authentication": "none", "start_authentication": "none"},
	"odd": {"operations": ["*"], "approval_authentication": "NONE", "start_authentication": "NONE"},
	"half": {"operations": ["*"], "approval_authentication": "none"},
}

test_allow_token_is_the_default_for_a_configured_tenant if {
	identity.approval_authentication == "token" with input as {"tenant": "acme"} with data.stead.tenants as tenants
}

test_allow_token_for_a_tenant_policy_does_not_know if {
	identity.approval_authentication == "token" with input as {"tenant": "ghost"} with data.stead.tenants as tenants
}

test_allow_none_only_when_the_tenant_opts_out_exactly if {
	identity.approval_authentication == "none" with input as {"tenant": "dev"} with data.stead.tenants as tenants
}

test_deny_opt_out_spelled_otherwise_stays_token if {
	identity.approval_authentication == "token" with input as {"tenant": "odd"} with data.stead.tenants as tenants
}

test_deny_missing_input_stays_token if {
	identity.approval_authentication == "token" with data.stead.tenants as tenants
}

test_allow_start_token_is_the_default_for_a_configured_tenant if {
	identity.start_authentication == "token" with input as {"tenant": "acme"} with data.stead.tenants as tenants
}

test_allow_start_token_for_a_tenant_policy_does_not_know if {
	identity.start_authentication == "token" with input as {"tenant": "ghost"} with data.stead.tenants as tenants
}

test_allow_start_none_only_when_the_tenant_opts_out_exactly if {
	identity.start_authentication == "none" with input as {"tenant": "dev"} with data.stead.tenants as tenants
}

test_deny_start_opt_out_spelled_otherwise_stays_token if {
	identity.start_authentication == "token" with input as {"tenant": "odd"} with data.stead.tenants as tenants
}

test_deny_approval_opt_out_does_not_opt_out_starts if {
	identity.start_authentication == "token" with input as {"tenant": "half"} with data.stead.tenants as tenants
}

test_deny_start_missing_input_stays_token if {
	identity.start_authentication == "token" with data.stead.tenants as tenants
}
