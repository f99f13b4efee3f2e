"""Every operations command (SPEC §9.1) has help, and a wrong argument is one clear line."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from app import create_app
from app.commandline import Group
from tests.support import REPO

GROUPS = {"db", "users", "keys", "credentials", "samples", "retention", "conversations"}
FLASK_OWN = {"run", "shell", "routes"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    return create_app(config={"DATABASE_URL": f"sqlite:///{tmp}/nexus.db",
                              "CREDENTIALS_DIR": str(tmp / "creds"),
                              "TEST_SAMPLES_DIR": str(tmp / "samples"),
                              "SPOOL_DIR": str(tmp / "spool")}, env_file=None)


def _commands(app) -> list[tuple[str, str, click.Command]]:
    return [(group_name, name, command)
            for group_name, group in sorted(app.cli.commands.items())
            if group_name not in FLASK_OWN
            for name, command in sorted(group.commands.items())]


def test_the_spec_groups_are_registered_as_one_line_groups(app):
    ours = {name: group for name, group in app.cli.commands.items() if name not in FLASK_OWN}
    assert set(ours) == GROUPS
    for name, group in ours.items():
        assert isinstance(group, Group), name
        assert group.help and len(group.help) > 20, f"{name} has no help text"


def test_every_command_and_option_has_help(app):
    commands = _commands(app)
    assert len(commands) >= 15
    runner = app.test_cli_runner()
    for group, name, command in commands:
        assert command.help and len(command.help) > 20, f"{group} {name} has no help text"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{group} {name} {param.opts[0]} has no help text"
        result = _invoke(runner, [group, name, "--help"])
        assert result.exit_code == 0, (group, name, result.output)
        assert result.output.startswith(f"Usage: flask {group} {name} "), result.output
        assert command.help.split(".")[0].split("\n")[0][:40] in " ".join(result.output.split())


def _invoke(runner, args: list[str]):
    return runner.invoke(args=args, prog_name="flask")


def _one_line_error(result, command_path: str) -> str:
    assert result.exit_code == 2, (command_path, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, (command_path, result.stderr)
    assert lines[0].startswith("Error: ") and lines[0].endswith(f"See '{command_path} --help'.")
    assert result.stdout == ""
    return lines[0]


def test_an_unknown_option_is_one_line(app):
    runner = app.test_cli_runner()
    for group, name, _ in _commands(app):
        result = _invoke(runner, [group, name, "--no-such-option"])
        line = _one_line_error(result, f"flask {group} {name}")
        assert "No such option '--no-such-option'" in line


def test_missing_arguments_and_bad_values_are_one_line(app):
    runner = app.test_cli_runner()
    checked = 0
    for group, name, command in _commands(app):
        path = f"flask {group} {name}"
        required = [p for p in command.params if isinstance(p, click.Argument) and p.required]
        if required:
            line = _one_line_error(_invoke(runner, [group, name]), path)
            assert "Missing argument" in line
            checked += 1
        for param in command.params:
            if isinstance(param, click.Option) and not param.is_flag and \
                    not isinstance(param.type, click.types.StringParamType):
                line = _one_line_error(_invoke(
                    runner, [group, name, param.opts[0], "not-a-value!"]), path)
                assert f"Invalid value for '{param.opts[0]}'" in line
                checked += 1
    assert checked >= 8
    line = _one_line_error(_invoke(runner, ["db", "no-such-command"]), "flask db")
    assert "No such command 'no-such-command'" in line
    # A command's own check of its arguments is a usage error too.
    line = _one_line_error(_invoke(runner, ["conversations", "relink"]),
                           "flask conversations relink")
    assert "exactly one of --since and --days" in line


def test_the_real_command_line_prints_no_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/nexus.db"}
    cases = ((["db", "upgrade", "--bogus"], 2), (["retention", "purge", "--days", "0"], 2),
             (["users", "create"], 2), (["samples", "show", "nothing"], 1), (["db", "status"], 0))
    for args, code in cases:
        run = subprocess.run([sys.executable, "-m", "flask", "--app", str(REPO / "wsgi.py"),
                              *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == code, (args, run.stderr)
        assert "Traceback" not in run.stderr
        if code:
            assert len(run.stderr.strip().splitlines()) == 1, run.stderr
            assert run.stderr.startswith("Error: "), run.stderr
