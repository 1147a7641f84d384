"""Where playbooks come from: the operator's folder, then installed plugins' folders.

A package adds playbooks by declaring, in its ``pyproject.toml``::

    [project.entry-points."stead.playbooks"]
    crm = "stead_crm:playbooks"

where ``playbooks()`` returns the folder of its ``<name>.yaml`` files. The operator's
``STEAD_PLAYBOOK_DIR`` is searched first, so a playbook there replaces a plugin's of
the same name. The folders are read once per process (workers restart to pick up a
newly installed plugin, as they do for its adapters); a plugin that fails to load, or
names no folder, stops the lookup with its name in the message.
"""

from __future__ import annotations

import functools
from pathlib import Path

from stead.plugins import PluginError, describe, plugin_entry_points

GROUP = "stead.playbooks"


@functools.cache
def plugin_playbook_dirs(group: str = GROUP) -> tuple[Path, ...]:
    """The playbook folders of every installed ``stead.playbooks`` entry point."""
    folders: list[Path] = []
    for ep in plugin_entry_points(group):
        try:
            folder = Path(ep.load()())
        except Exception as exc:
            raise PluginError(
                f"playbook plugin {describe(ep)} failed to load ({type(exc).__name__}: {exc}); "
                "fix or uninstall the package that provides it"
            ) from exc
        if not folder.is_dir():
            raise PluginError(f"playbook plugin {describe(ep)} names {folder}, not a folder")
        folders.append(folder)
    return tuple(folders)


def search_path(playbook_dir: Path, *, plugins: bool = True) -> tuple[Path, ...]:
    """The folders a playbook name is looked up in, in order."""
    return (playbook_dir, *(plugin_playbook_dirs() if plugins else ()))
