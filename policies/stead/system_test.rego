package stead.system_test # regal ignore:directory-package-mismatch

import data.stead.system

test_allow_health_is_defined_with_dev_revision if {
	system.health == {"ok": true, "revision": "dev"} with data.stead.config as {}
}

test_allow_health_reports_configured_revision if {
	system.health == {"ok": true, "revision": "2024-06-01.3"} with data.stead.config.revision as "2024-06-01.3"
}

test_allow_health_ignores_non_string_revision if {
	system.health.revision == "dev" with data.stead.config.revision as 7
}
