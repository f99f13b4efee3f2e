"""The click classes every command group uses: a wrong argument is one line, never a page.

click answers a usage error with the usage line, a hint and the error, over four lines; an
operator scripting the CLI (or reading a container log) wants the error alone, with where to
look. `Group` and its commands raise `OneLineUsageError`, which prints
`Error: <what>. See 'flask db upgrade --help'.` and exits 2 as click does.
"""

from __future__ import annotations

import click


class OneLineUsageError(click.UsageError):
    def show(self, file=None) -> None:
        message = self.format_message().rstrip(".")
        where = f". See '{self.ctx.command_path} --help'." if self.ctx is not None else "."
        click.echo(f"Error: {message}{where}", file=file, err=file is None)


def _one_line(err: click.UsageError) -> OneLineUsageError:
    if isinstance(err, OneLineUsageError):
        return err
    return OneLineUsageError(err.format_message(), err.ctx)


class Command(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:
            raise _one_line(err) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as err:  # raised by a command's own checks
            raise _one_line(err) from None


class Group(click.Group):
    """A command group whose commands (`@group.command(...)`) answer usage errors in one line."""

    command_class = Command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:
            raise _one_line(err) from None

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as err:  # an unknown command name
            raise _one_line(err) from None
