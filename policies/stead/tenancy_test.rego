package stead.tenancy_test # regal ignore:directory-package-mismatch

import data.stead.tenancy

test_allow_star_admits_any_operation if {
	tenancy.operation_allowed(["*"], "email.send")
}

test_allow_exact_name_admits_that_operation if {
	tenancy.operation_allowed(["http.request", "records.put"], "records.put")
}

test_allow_adapter_wildcard_admits_its_operations if {
	tenancy.operation_allowed(["records.*"], "records.put")
}

test_deny_adapter_wildcard_does_not_admit_other_adapters if {
	not tenancy.operation_allowed(["records.*"], "recordsx.put")
	not tenancy.operation_allowed(["records.*"], "email.send")
}

test_deny_operation_missing_from_allow_list if {
	not tenancy.operation_allowed(["http.request"], "email.send")
}

test_deny_empty_allow_list_admits_nothing if {
	not tenancy.operation_allowed([], "http.request")
}
