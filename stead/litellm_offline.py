"""The one way Stead imports litellm: lazily, quiet and offline.

Imported lazily because it takes seconds and playbook-only workers never need it.
Without the two variables below the import fetches a model price list from GitHub (and
logs a warning when offline); the packaged copy is enough for cost accounting. They are
set only if the operator has not chosen otherwise, and only work before the first import
of litellm anywhere in the process, which is why every user goes through here.
"""

from __future__ import annotations

import os
from functools import cache
from types import ModuleType


@cache
def litellm() -> ModuleType:
    """The litellm module, imported on first use with its offline switches set."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    import litellm as module

    module.suppress_debug_info = True
    # Older litellm versions phone home unless this flag is False; current ones have a
    # proxy-only ``litellm.telemetry`` package, which must not be shadowed.
    if not isinstance(vars(module).get("telemetry"), ModuleType):
        module.telemetry = False
    return module
