"""The README stays true to the code it documents."""

from __future__ import annotations

import re

import click
from click.testing import CliRunner

from fhirbox.cli import main
from fhirbox.settings import SETTINGS
from tests.support import REPO


def test_readme_lists_every_setting_as_declared() -> None:
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- settings-table -->") + len("<!-- settings-table -->")
    end = readme.index("<!-- end settings-table -->")
    printed = CliRunner().invoke(main, ["settings", "--defaults"], env={})
    assert printed.exit_code == 0, printed.output
    assert readme[start:end].strip() == printed.output.strip()


def test_readme_shows_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make run" in readme
    assert "make test" in readme


def command_lines(text: str) -> list[list[str]]:
    """The ``fhirbox`` invocations in the shell blocks of a Markdown text, as argument lists."""
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    found = []
    for line in "\n".join(blocks).splitlines():
        match = re.search(r"(?:\.venv/bin/)?\bfhirbox ((?:[a-z-]+ ?)+)", line.split("#")[0])
        if match and "fhirbox-" not in match.group(0):
            found.append(match.group(1).split())
    return found


def test_the_operations_guide_is_linked_and_names_only_commands_and_settings_that_exist() -> None:
    readme = (REPO / "README.md").read_text()
    guide = (REPO / "docs" / "operations.md").read_text()
    assert "(docs/operations.md)" in readme
    for title in ("## Logs", "## Metrics", "## Audit trail", "## Backups", "## Upgrades and migrations"):
        assert title in guide
    invocations = command_lines(guide) + command_lines(readme)
    assert ["backup"] in [words[:1] for words in invocations]
    for words in invocations:
        names = [word for word in words if not word.startswith("-")]
        if not names:  # `fhirbox --version`
            options = {opt for param in main.get_params(click.Context(main)) for opt in param.opts}
            assert set(words) <= options, words
            continue
        command: click.Command = main
        for name in names:
            if not isinstance(command, click.Group) or name not in command.commands:
                break
            command = command.commands[name]
        assert command is not main, words
    declared = {setting.env for setting in SETTINGS}
    for variable in set(re.findall(r"FHIRBOX_[A-Z_]+", guide)):
        assert variable in declared, variable
