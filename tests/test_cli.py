"""The CLI builds Settings from flags, then COLLAB_* variables, then defaults."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collab.auth import verify
from collab.cli import build_parser, main, settings_from
from collab.config import Settings


def settings_for(argv: list[str], environ: dict[str, str] | None = None) -> Settings:
    return settings_from(build_parser().parse_args(["serve", *argv]), environ or {})


def test_defaults_are_the_documented_ones() -> None:
    settings = settings_for([])
    assert (settings.host, settings.port, settings.db) == ("127.0.0.1", 1234, Path("collab.db"))


def test_flags_win_over_environment_which_wins_over_defaults() -> None:
    environ = {"COLLAB_PORT": "4000", "COLLAB_DB": "/tmp/env.db", "COLLAB_DB_SYNC": "full"}
    settings = settings_for(["--port", "5000"], environ)
    assert settings.port == 5000
    assert settings.db == Path("/tmp/env.db")
    assert settings.db_sync == "full"


def test_a_renamed_setting_keeps_its_old_flag_and_variable() -> None:
    assert settings_for(["--snapshot-updates", "7"], {}).version_updates == 7
    assert settings_for([], {"COLLAB_SNAPSHOT_SECONDS": "2.5"}).version_seconds == 2.5
    assert (
        settings_for(
            [], {"COLLAB_VERSION_SECONDS": "3", "COLLAB_SNAPSHOT_SECONDS": "2"}
        ).version_seconds
        == 3
    )


def test_every_setting_has_a_flag_and_a_variable() -> None:
    settings = settings_for(
        ["--version-updates", "7", "--room-grace-seconds", "1.5", "--base-path", "/c"],
        {"COLLAB_MAX_MESSAGE_BYTES": "1000", "COLLAB_LOG_LEVEL": "debug"},
    )
    assert settings.version_updates == 7
    assert settings.room_grace_seconds == 1.5
    assert settings.base_path == "/c"
    assert settings.max_message_bytes == 1000
    assert settings.log_level == "debug"


SECRET = "whsec_" + "A" * 32


def test_webhooks_are_a_repeated_flag_or_a_comma_separated_variable() -> None:
    flags = ["--webhook", "http://a/x", "--webhook", "https://b/y,http://a/x"]
    settings = settings_for([*flags, "--webhook-secret", SECRET])
    assert settings.webhook == ("http://a/x", "https://b/y")
    environ = {"COLLAB_WEBHOOK": "http://c/z, https://d", "COLLAB_WEBHOOK_SECRET": SECRET}
    assert settings_for([], environ).webhook == ("http://c/z", "https://d")
    assert settings_for(["--webhook", "http://e"], environ).webhook == ("http://e",)
    assert "***" in repr(settings) and SECRET not in repr(settings)


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        (["--webhook", "http://a/x"], {}),  # no secret
        (["--webhook", "mailto:x@y"], {"COLLAB_WEBHOOK_SECRET": SECRET}),
        ([], {"COLLAB_WEBHOOK": "not a url", "COLLAB_WEBHOOK_SECRET": SECRET}),
        ([], {"COLLAB_PORT": "many"}),
        ([], {"COLLAB_DB_SYNC": "sometimes"}),
        (["--version-updates", "0"], {}),
        (["--base-path", "no-slash"], {}),
    ],
)
def test_bad_values_are_usage_errors(argv: list[str], environ: dict[str, str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", *argv], environ)
    assert exited.value.code == 2


@pytest.mark.slow  # runs the command line in a child process
def test_python_dash_m_collab_prints_its_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "collab", "--version"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert result.stdout.startswith("collab ")


@pytest.mark.slow  # runs the command line in a child process
def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "collab",
                "serve",
                "--port",
                str(port),
                "--db",
                str(tmp_path / "x.db"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "cannot serve" in result.stderr


@pytest.mark.slow  # runs the command line in a child process
def test_token_mints_what_it_is_asked_for() -> None:
    secret = "s" * 40
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    command = [sys.executable, "-m", "collab", "token", "team/*", "--read-only", "--ttl", "15m"]
    minted = subprocess.run(
        [*command, "--subject", "ada"],
        capture_output=True,
        timeout=60,
        env={**environ, "COLLAB_AUTH_SECRET": secret},
    )
    assert minted.returncode == 0, minted.stderr
    grant = verify(secret, minted.stdout.decode().strip(), now=time.time())
    assert (grant.permission, grant.docs, grant.subject) == ("read", "team/*", "ada")
    assert grant.expires_at is not None and 800 < grant.expires_at - time.time() <= 900
    without = subprocess.run(command, capture_output=True, timeout=60, env=environ)
    assert without.returncode != 0 and b"COLLAB_AUTH_SECRET" in without.stderr


def test_db_is_a_sqlite_path_or_a_postgresql_url_whose_password_never_shows() -> None:
    from collab.config import DatabaseURL, describe_db

    assert settings_for(["--db", "/tmp/x.db"], {}).db == Path("/tmp/x.db")
    url = "postgresql://app:s3cret@db.internal:5432/collab"
    db = settings_for(["--db", url], {}).db
    assert isinstance(db, DatabaseURL) and str(db) == url  # the driver gets it whole
    assert "s3cret" not in repr(db) and "s3cret" not in describe_db(db)
    assert describe_db(db) == "postgresql://app:***@db.internal:5432/collab"
    assert settings_for([], {"COLLAB_DB": "postgres://h/d"}).db == DatabaseURL("postgres://h/d")
