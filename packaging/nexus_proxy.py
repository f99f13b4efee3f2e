from gevent import monkey; monkey.patch_all()  # noqa: E702, I001 — must precede every other import

"""The single-file binary's entry point (`make binary` → dist/nexus-proxy, built with
packaging/nexus-proxy.spec); `python packaging/nexus_proxy.py …` runs it unfrozen.

    nexus-proxy                       serve, like `make run`
    nexus-proxy serve [--port P] …    the same, with options
    nexus-proxy <group> <command> …   the operations CLI (`flask --app wsgi <group> …`)

Data lives in the user's data folder (NEXUS_HOME, else XDG_DATA_HOME/claude-nexus-proxy or
~/.local/share/claude-nexus-proxy; ~/Library/Application Support/claude-nexus-proxy on macOS):
the SQLite database, the spool, credential files, test samples and the dashboard's session key
go there unless the environment or the `.env` file sets them. The settings table itself is
untouched: the binary only passes its own defaults, as the settings `create_app` accepts.
"""

import os
import sys
from pathlib import Path

if not getattr(sys, "frozen", False):  # unfrozen: `app` is beside this folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click
from dotenv import dotenv_values
from flask import Flask

from app import create_app
from app.commandline import Group
from app.config import ConfigError
from app.dashboard.secret import secret_key
from app.version import __version__

PROG = "nexus-proxy"
FOLDER_NAME = "claude-nexus-proxy"


def data_dir(environ=os.environ, platform: str = sys.platform) -> Path:
    """The user's data folder for the proxy: NEXUS_HOME, else the platform's convention."""
    if environ.get("NEXUS_HOME"):
        return Path(environ["NEXUS_HOME"]).expanduser().absolute()
    home = Path.home()
    if platform == "darwin":
        return home / "Library" / "Application Support" / FOLDER_NAME
    if platform == "win32":
        return Path(environ.get("LOCALAPPDATA") or home / "AppData" / "Local") / FOLDER_NAME
    xdg = environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else home / ".local" / "share"  # XDG: relative = unset
    return base / FOLDER_NAME


def user_settings(env_file: str | None) -> dict[str, str]:
    """What the user set, as the app reads it: the `.env` file overlaid by the environment."""
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ)
    return values


def data_defaults(folder: Path, user: dict[str, str]) -> dict[str, str]:
    """Settings pointing into `folder`, for those the user left unset. SECRET_KEY unset means
    the key generated once and kept in the folder (as `make run` keeps it in data/)."""
    wanted = {
        "DATABASE_URL": f"sqlite:///{folder / 'nexus.db'}",
        "SPOOL_DIR": str(folder / "spool"),
        "CREDENTIALS_DIR": str(folder / "credentials"),
        "TEST_SAMPLES_DIR": str(folder / "test-samples"),
    }
    chosen = {name: value for name, value in wanted.items() if name not in user}
    if not user.get("SECRET_KEY", "").strip():
        chosen["SECRET_KEY"] = secret_key(None, folder / "secret_key")
    return chosen


def build_app(env_file: str | None, **settings: str) -> tuple[Flask, Path, list[str]]:
    """The app with the data-folder defaults; a bad setting ends the process in one line.
    Returns the app, the data folder and the names of the settings that point into it."""
    user = user_settings(env_file)
    folder = data_dir(user)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # holds credentials and the key
        defaults = data_defaults(folder, user)
    except (OSError, ValueError) as err:
        sys.exit(f"error: cannot use the data folder {folder}: {err}")
    try:
        app = create_app({**defaults, **settings}, env_file=env_file)
    except ConfigError as err:
        sys.exit(f"error: invalid setting {err}")
    return app, folder, sorted(defaults)


FILES = {"DATABASE_URL": "nexus.db", "SPOOL_DIR": "spool/", "CREDENTIALS_DIR": "credentials/",
         "TEST_SAMPLES_DIR": "test-samples/", "SECRET_KEY": "secret_key"}


def _describe(folder: Path, defaulted: list[str]) -> str:
    kept = ", ".join(FILES[name] for name in FILES if name in defaulted)
    return f"Data folder: {folder} ({kept or 'unused: your settings name every path'})"


class CLI(Group):
    """`nexus-proxy`: `serve` (the default) and the app's command groups, which need the app
    (built with the data-folder defaults) and an app context, as `flask` gives them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_app(ctx).cli.list_commands(ctx)))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        own = super().get_command(ctx, name)
        if own is not None:
            return own
        app = _app(ctx)
        command = app.cli.get_command(ctx, name)
        if command is not None:
            ctx.with_resource(app.app_context())
        return command

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Data"):
            folder = data_dir(user_settings(_env_file(ctx)))
            formatter.write(f"{'':>{formatter.current_indent}}{folder}\n")  # never wrapped
            formatter.write_text("(NEXUS_HOME moves it). Settings: the environment, or .env in "
                                 "the working directory.")


def _env_file(ctx: click.Context) -> str:
    return ctx.find_root().params.get("env_file") or ".env"


def _app(ctx: click.Context) -> Flask:
    meta = ctx.find_root().meta  # one app per invocation, built on first need
    if "nexus.app" not in meta:
        meta["nexus.app"] = build_app(_env_file(ctx))[0]
    return meta["nexus.app"]


@click.group(PROG, cls=CLI, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--env-file", metavar="PATH",
              help="Read settings from this file (default: .env, if present).")
@click.version_option(__version__, "-V", "--version", prog_name=PROG,
                      message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, env_file: str | None) -> None:
    """Claude Nexus Proxy: with no command, serve (like `nexus-proxy serve`); otherwise run an
    operations command (`nexus-proxy db status`, `nexus-proxy users create NAME`, …)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve_command)


@cli.command("serve")
@click.option("--host", help="Listen address (default: HOST, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Listen port (default: PORT, 3000).")
@click.option("--env-file", metavar="PATH",
              help="Read settings from this file (default: .env, if present).")
@click.pass_context
def serve_command(ctx: click.Context, host: str | None, port: int | None,
                  env_file: str | None) -> None:
    """Serve the proxy, dashboard and API with gevent until SIGTERM or Ctrl-C."""
    from app.serve import serve

    overrides = {"HOST": host} if host else {}
    if port:
        overrides["PORT"] = str(port)
    app, folder, defaulted = build_app(env_file or _env_file(ctx), **overrides)
    print(_describe(folder, defaulted), flush=True)
    sys.exit(serve(app))


def main() -> None:
    cli.main(prog_name=PROG)


if __name__ == "__main__":
    main()
