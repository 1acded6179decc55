"""Settings are declared once, in ``Settings``; the table, the variables and the CLI help follow from it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fhirbox.cli import main
from fhirbox.settings import SETTINGS, Settings


def test_each_field_is_one_setting_named_after_it() -> None:
    defaults = Settings()
    for setting in SETTINGS:
        assert setting.env == "FHIRBOX_" + setting.name.upper()
        assert getattr(defaults, setting.name) == setting.default
        assert setting.doc


def test_from_env_parses_variables_and_overrides_win() -> None:
    environ = {"FHIRBOX_PORT": "9000", "FHIRBOX_CHANGE_POLL_INTERVAL": "0.5", "FHIRBOX_HOST": ""}
    settings = Settings.from_env(environ, database_url="sqlite:///x.db", workers=None)
    assert (settings.port, settings.change_poll_interval) == (9000, 0.5)
    assert (settings.host, settings.workers, settings.database_url) == ("127.0.0.1", 1, "sqlite:///x.db")
    with pytest.raises(ValueError, match=r"^FHIRBOX_PORT: must be a TCP port \(0-65535\)"):
        Settings.from_env({"FHIRBOX_PORT": "70000"})


def test_serve_flags_are_documented_from_the_declarations() -> None:
    help_text = " ".join(CliRunner().invoke(main, ["serve", "--help"]).output.split())
    assert "TCP port the HTTP server listens on. [env FHIRBOX_PORT; default 8080]" in help_text
    assert "Number of server processes. [env FHIRBOX_WORKERS; default 1]" in help_text


@pytest.mark.parametrize(
    "command", [["serve"], ["keys", "list"], ["policy", "check", "--client", "c", "GET", "/"]]
)
def test_every_command_reports_a_bad_variable_as_a_usage_error(command: list[str]) -> None:
    result = CliRunner().invoke(main, command, env={"FHIRBOX_WORKERS": "0"})
    assert result.exit_code == 2
    assert "FHIRBOX_WORKERS: must be a positive integer, got '0'" in result.output
