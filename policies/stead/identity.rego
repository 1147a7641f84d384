# METADATA
# title: Stead approval authentication
# description: |
#   How a tenant's approvers prove who they are, asked by the identity.verify_approval
#   activity with input {"tenant": ...}. "token" (the default) requires a principal
#   token issued by Stead and scoped to the approval; "none" counts the claimed name,
#   and is meant for development tenants only. A tenant policy does not know, or any
#   value other than "none", gets "token": approvals fail closed.
package stead.identity # regal ignore:directory-package-mismatch

default approval_authentication := "token"

# METADATA
# entrypoint: true
approval_authentication := "none" if data.stead.tenants[input.tenant].approval_authentication == "none"
