# METADATA
# title: Stead approval and start authentication
# description: |
#   How a tenant's approvers and run starters prove who they are, asked by the run's
#   admission (runs.open) with input {"tenant": ...}. "token" (the default) requires a
#   principal token issued by Stead and narrowed to the approval or to the start;
#   "none" counts the claimed name (for a start: any enabled principal of a managed
#   tenant, anyone in an unmanaged one), and is meant for development tenants only.
#   A tenant policy does not know, or any value other than "none", gets "token":
#   approvals and starts fail closed. Only policy data opts out; never run input.
package stead.identity # regal ignore:directory-package-mismatch

default approval_authentication := "token"

# METADATA
# entrypoint: true
approval_authentication := "none" if data.stead.tenants[input.tenant].approval_authentication == "none"

default start_authentication := "token"

# METADATA
# entrypoint: true
start_authentication := "none" if data.stead.tenants[input.tenant].start_authentication == "none"
