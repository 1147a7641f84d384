# OPA's own API authorization (--authentication=token --authorization=basic).
#
# Not part of the Stead bundle in policies/: OPA loads it beside the bundle, with the
# token data file written by `stead dev up` / `stead policy tokens`. That file maps the
# SHA-256 of each bearer token to a role, so neither this policy nor OPA's data holds a
# usable token:
#
#   {"system": {"stead_authz": {"tokens": {"<sha256 hex of token>": "decision" | "admin"}}}}
#
# decision  workers and the CLI: ask Stead's decisions (GET/POST /v1/data/stead/...),
#           nothing else: no writes, no policies, no queries, no OPA's own data.
# admin     operators and `stead policy push`: read and change data and policies.
# Nobody reads or writes data.system through the API (the token hashes live there),
# and /health stays open so readiness probes need no credential.
package system.authz

default allow := false

# Readiness probes (`stead dev up`, compose healthchecks) carry no credential.
allow if {
	input.method == "GET"
	input.path in {["health"], ["health", "live"], ["health", "ready"]}
}

allow if {
	role == "decision"
	input.method in {"GET", "POST"}
	stead_data
}

allow if {
	role == "admin"
	input.method in {"GET", "PUT", "PATCH", "POST", "DELETE"}
	data_below_root
	not system_data
}

allow if {
	role == "admin"
	input.method in {"GET", "PUT", "DELETE"}
	input.path[0] == "v1"
	input.path[1] == "policies"
}

# The role of the presented bearer token; undefined without one or for an unknown one.
role := data.system.stead_authz.tokens[crypto.sha256(input.identity)]

# /v1/data/stead/...: the decisions and the tenant data policy reads.
stead_data if {
	data_below_root
	input.path[2] == "stead"
}

# /v1/data/<something>: never the root document, which holds data.system too.
data_below_root if {
	input.path[0] == "v1"
	input.path[1] == "data"
	count(input.path) > 2
	every segment in array.slice(input.path, 2, count(input.path)) {
		clean_segment(segment)
	}
}

system_data if input.path[2] == "system"

# No empty, "." or ".." segments: the path OPA evaluates is the path decided here.
clean_segment(segment) if {
	segment != ""
	not segment in {".", ".."}
}
