# METADATA
# title: Stead memory read decision
# description: |
#   Asked by the memory service before personal data (sensitivity "pii") leaves
#   Postgres for a principal, or for an agent acting for one (a recall that feeds a
#   planner prompt, `stead memory get`). Grants are data, per tenant:
#   data.stead.tenants[<tenant>].memory.pii_readers, a list of
#   {"principals": [...], "agents": [...], "namespaces": [...]}. A grant without
#   "agents" admits only direct reads (agent null); without "namespaces", every
#   namespace. "*" matches anything; "crm/*" matches every namespace under crm/.
#   Secrets are never readable through this decision; public and internal are.
package stead.memory # regal ignore:directory-package-mismatch

default read := false

# METADATA
# entrypoint: true
read if input.sensitivity in {"public", "internal"}

read if {
	input.sensitivity == "pii"
	some grant in pii_grants
	principal_granted(grant)
	agent_granted(grant)
	namespace_granted(grant)
}

pii_grants := grants if {
	grants := data.stead.tenants[input.tenant].memory.pii_readers
	is_array(grants)
}

principal_granted(grant) if "*" in grant.principals

principal_granted(grant) if input.principal in grant.principals

# A direct read by the principal itself names no agent.
agent_granted(_) if is_null(object.get(input, "agent", null))

agent_granted(grant) if {
	is_string(input.agent)
	matches(object.get(grant, "agents", []), input.agent)
}

namespace_granted(grant) if {
	is_string(input.namespace)
	matches(object.get(grant, "namespaces", ["*"]), input.namespace)
}

# matches holds when a list of names admits one: "*", the name itself, or "prefix/*".
matches(names, _) if "*" in names

matches(names, name) if name in names

matches(names, name) if {
	some pattern in names
	endswith(pattern, "/*")
	startswith(name, trim_suffix(pattern, "*"))
}

# METADATA
# title: A namespace's consistency policy for recall
# description: |
#   "fresh": recall also ranks, by meaning, writes the vector index has not caught up
#   with (a reader sees its own writes; costs an embedding per unindexed write);
#   "indexed": recall ranks what the index holds, and finds unindexed writes only
#   through their terms (fast). Data, per tenant:
#   data.stead.tenants[<tenant>].memory.consistency.fresh, a list of namespace
#   patterns ("*", "ops", "orders/*"). A recall over every namespace (namespaces
#   null) is fresh when any pattern is. Undefined or unreachable: the service reads
#   "fresh", the stronger guarantee.
# entrypoint: true
default consistency := "indexed"

consistency := "fresh" if {
	is_null(object.get(input, "namespaces", null))
	count(fresh_patterns) > 0
}

consistency := "fresh" if {
	some namespace in input.namespaces
	matches(fresh_patterns, namespace)
}

fresh_patterns := patterns if {
	patterns := data.stead.tenants[input.tenant].memory.consistency.fresh
	is_array(patterns)
}
