"""The core stands without the field cases' plugin (``examples/stead-cases``).

The cases reach Stead only through entry points (``stead.adapters``, ``stead.playbooks``,
``stead.cli``, ``stead.demos``); ``tests/test_architecture.py`` checks that no core module
imports them. Here: what the core offers with those entry points left out (each loader
takes its group or a ``plugins=False``, the seam the core itself uses), the clear errors
a case's run or demo gets without the plugin, and the plugin's hooks when installed.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from adapters.registry import default_catalog
from stead.cli.main import app
from stead.cli.plugins import add_plugin_commands, plugin_demo
from stead.contracts.run import RunRequest
from stead.errors import ConfigError
from stead.planning.playbooks import PlaybookNotFound, available_playbooks, load_playbook
from stead.planning.preflight import preflight
from stead_cases import playbooks as cases_playbooks
from tests.conftest import REPO, settings_for

CASE_OPERATIONS = {
    "content.brief",
    "content.calendar",
    "content.package",
    "llm.generate",
    "platform.publish",
    "shop.products",
    "shop.adjust_stock",
    "warehouse.stock",
    "commerce.reconcile",
}
GENERIC = {"core.echo", "http.request", "records.put", "sql.query", "email.send", "webhook.post"}
ABSENT = f"stead.absent-{uuid.uuid4().hex[:8]}"  # an entry-point group nothing provides


def test_the_core_catalog_has_the_generic_adapters_and_none_of_the_cases() -> None:
    core = set(default_catalog(plugins=False).names())
    assert core >= GENERIC
    assert not core & CASE_OPERATIONS
    # Installed (as `make test` does), the plugin adds them through `stead.adapters`.
    assert set(default_catalog().names()) >= CASE_OPERATIONS


def test_a_case_playbook_without_the_plugin_fails_before_it_starts(tmp_path: Path) -> None:
    source = (cases_playbooks() / "commerce-reconcile.yaml").read_text()
    request = RunRequest(
        tenant="shop",
        principal="agent:reconciler",
        playbook_source=source,
        inputs={"shop_url": "http://127.0.0.1:9", "skus": ["A-1"]},
    )
    with pytest.raises(ConfigError) as caught:
        preflight(request, settings_for(tmp_path), catalog=default_catalog(plugins=False))
    message = str(caught.value)
    assert "shop.adjust_stock" in message and "commerce.reconcile" in message
    assert "is not in the adapter catalog" in message and "install that plugin" in message


def test_the_core_finds_no_case_playbook_by_name_without_the_plugin() -> None:
    assert available_playbooks(REPO / "playbooks", plugins=False) == ["records-demo"]
    with pytest.raises(PlaybookNotFound, match=r"no playbook 'content-weekly' in .*playbooks "):
        load_playbook("content-weekly", REPO / "playbooks", plugins=False)
    # The plugin's folder comes after the operator's: found by name once installed.
    assert load_playbook("content-weekly", REPO / "playbooks").name == "content-weekly"


def test_a_case_demo_without_the_plugin_says_how_to_install_it() -> None:
    with pytest.raises(ConfigError) as caught:
        plugin_demo("content", group=ABSENT)
    assert "no demo 'content' is installed (installed demos: none)" in str(caught.value)
    assert "pip install -e examples/stead-cases" in str(caught.value)


def test_stead_demo_names_the_installed_demos_for_an_unknown_one() -> None:
    result = CliRunner().invoke(app, ["demo", "nosuch"])
    assert result.exit_code == 1
    assert "installed demos: commerce, content" in " ".join(result.output.split())


def test_the_core_cli_has_no_webhook_command_without_the_plugin() -> None:
    core = typer.Typer()
    add_plugin_commands(core, group=ABSENT)
    assert core.registered_groups == []
    # With the plugin installed, `stead webhook serve` is mounted from its entry point.
    assert CliRunner().invoke(app, ["webhook", "serve", "--help"]).exit_code == 0


def install_command_plugin(root: Path, body: str, command: str) -> tuple[str, str]:
    """A real installed distribution under ``root`` whose ``app`` is a ``stead.cli``-style
    entry point named ``command``, in a group of its own; ``(module, group)``."""
    module = f"steadcli_{uuid.uuid4().hex[:8]}"
    (root / module).mkdir()
    (root / module / "__init__.py").write_text(textwrap.dedent(body))
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    group = f"stead.cli-{uuid.uuid4().hex[:8]}"
    (info / "entry_points.txt").write_text(f"[{group}]\n{command} = {module}:app\n")
    return module, group


def test_a_broken_command_plugin_fails_only_its_own_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, group = install_command_plugin(
        tmp_path, "raise RuntimeError('half installed')\n", "broken"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cli = typer.Typer()

    @cli.command()
    def fine() -> None:
        print("fine")

    add_plugin_commands(cli, group=group)
    assert CliRunner().invoke(cli, ["fine"]).output == "fine\n"
    broken = CliRunner().invoke(cli, ["broken"])
    assert broken.exit_code == 1
    assert "half installed" in broken.output and f"{module}:app" in broken.output


def test_a_plugin_command_cannot_take_over_a_core_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module, group = install_command_plugin(
        tmp_path,
        """
        import typer

        app = typer.Typer()

        @app.command()
        def go() -> None:
            print("the plugin's approve")
        """,
        "approve",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cli = typer.Typer()

    @cli.command()
    def approve() -> None:
        print("the core's approve")

    @cli.command()
    def other() -> None:
        print("other")

    add_plugin_commands(cli, group=group)
    said = " ".join(capsys.readouterr().err.split())
    assert f"plugin command 'approve' ({module}:app) is not mounted" in said
    assert CliRunner().invoke(cli, ["approve"]).output == "the core's approve\n"
    assert len(cli.registered_groups) == 0
