"""The adapter SDK: what an operation declares (``base``) and the catalog of them (``catalog``).

In the core, not in ``adapters/``, because the planner, plan validation and the CLI's
preflight read the catalog too, and the core imports nothing above it
(docs/architecture.md, "Layers"). Adapters, activities and workers import it from here;
``adapters.base`` re-exports the operation types for third-party plugins written
against it.
"""
