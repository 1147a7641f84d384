# METADATA
# title: Stead system
# description: |
#   Readiness and identity of the loaded policy set. A readiness check queries
#   data.stead.system.health and treats an undefined result as "policies not loaded".
package stead.system # regal ignore:directory-package-mismatch

# The bundle build may stamp its revision into data.stead.config.revision;
# a policy directory loaded by hand reports "dev".
default revision := "dev"

revision := data.stead.config.revision if is_string(data.stead.config.revision)

# METADATA
# entrypoint: true
health := {"ok": true, "revision": revision}
