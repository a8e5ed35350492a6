"""The README is the front door: every setting, command and close code it must show is there."""

from __future__ import annotations

from pathlib import Path

from collab.cli import build_parser
from collab.config import env_name, flag_name, setting_fields
from tests.conftest import RunningServer

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    for field in setting_fields():
        row = next(
            (
                line
                for line in README.splitlines()
                if line.startswith(f"| `{flag_name(field.name)}`")
            ),
            None,
        )
        assert row is not None, f"{flag_name(field.name)} is missing from the README"
        assert f"`{env_name(field.name)}`" in row
        # A tuple's default as its variable would give it: comma-separated.
        default = ",".join(field.default) if isinstance(field.default, tuple) else field.default
        assert f"`{default}`" in row, f"README default of {field.name} is stale"


def test_every_command_is_in_the_readme() -> None:
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    for command in subparsers.choices:  # type: ignore[union-attr]
        assert f"collab {command}" in README


def test_readme_gives_the_test_command_that_ci_runs() -> None:
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "./scripts/test.sh" in README
    assert "./scripts/test.sh" in ci


async def test_the_close_codes_are_documented(server: RunningServer) -> None:
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for code in (1001, 1002, 1003, 1009, 1013, 4403, 4404, 4429, 4501):
        assert f"| {code} |" in readme, code
    del server  # the fixture only makes sure a server starts with the defaults
