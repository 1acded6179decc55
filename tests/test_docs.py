"""The README stays true to the code it documents."""

from __future__ import annotations

from click.testing import CliRunner

from fhirbox.cli import main
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
