"""``modelhub users|groups|tokens ...``: who may use the registry (admin only)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from modelhub_cli import render
from modelhub_cli.errors import ApiError
from modelhub_cli.session import AsJson, open_client, registry_app

users_app = registry_app("Users of the registry (admin only).")
groups_app = registry_app("Groups of users, to share model files with many at once (admin only).")
tokens_app = registry_app("Bearer tokens for users (admin only).")

UserId = Annotated[str, typer.Argument(metavar="USER", help="the user's id, e.g. alice")]
GroupId = Annotated[str, typer.Argument(metavar="GROUP", help="the group's id, e.g. support-team")]

# ---- users


@users_app.command("add")
def add_user(
    ctx: typer.Context,
    user_id: UserId,
    name: Annotated[str, typer.Option("--name", help="display name")],
    email: Annotated[str | None, typer.Option("--email", help="e-mail address")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="give the user the admin role")] = False,
) -> None:
    """Add a user; then issue a token with `modelhub tokens issue ID`.

    Example: modelhub users add alice --name "Alice Doe" --email alice@example.com
    """
    with open_client(ctx) as client:
        user = client.add_user(user_id, name=name, email=email, admin=admin)
    render.success(f"added user '{user.get('id')}' ({user.get('role')})")


@users_app.command("list")
def list_users(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List the users, with their role and groups.

    Example: modelhub users list
    """
    with open_client(ctx) as client:
        users = client.users()
    if as_json:
        render.print_json({"items": users})
        return
    rows = ([u.get("id"), u.get("name"), u.get("email"), u.get("role"), u.get("groups")] for u in users)
    render.show(render.table(["id", "name", "email", "role", "groups"], rows, title="users"))


@users_app.command("rm")
def remove_user(ctx: typer.Context, user_id: UserId) -> None:
    """Remove a user (tokens already issued stay valid until they expire).

    Example: modelhub users rm alice
    """
    with open_client(ctx) as client:
        client.delete_user(user_id)
    render.success(f"removed user '{user_id}'")


@users_app.command("set-password")
def set_password(
    ctx: typer.Context,
    user_id: UserId,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input (one line)")
    ] = False,
) -> None:
    """Set the password the user signs in to the web console with (it also ends a lock-out).

    Asked for twice without echo, or read from standard input with --password-stdin.

    Example: modelhub users set-password alice
    """
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with open_client(ctx) as client:
        client.set_password(user_id, password)
    render.success(f"password of '{user_id}' set")


# ---- groups


@groups_app.command("add")
def add_group(
    ctx: typer.Context, group_id: GroupId, name: Annotated[str, typer.Option("--name", help="display name")]
) -> None:
    """Add a group.

    Example: modelhub groups add support-team --name "Support team"
    """
    with open_client(ctx) as client:
        group = client.add_group(group_id, name=name)
    render.success(f"added group '{group.get('id')}'")


@groups_app.command("list")
def list_groups(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List the groups and their members.

    Example: modelhub groups list
    """
    with open_client(ctx) as client:
        groups = client.groups()
    if as_json:
        render.print_json({"items": groups})
        return
    rows = ([g.get("id"), g.get("name"), g.get("members")] for g in groups)
    render.show(render.table(["id", "name", "members"], rows, title="groups"))


@groups_app.command("rm")
def remove_group(ctx: typer.Context, group_id: GroupId) -> None:
    """Remove a group.

    Example: modelhub groups rm support-team
    """
    with open_client(ctx) as client:
        client.delete_group(group_id)
    render.success(f"removed group '{group_id}'")


@groups_app.command("add-member")
def add_member(ctx: typer.Context, group_id: GroupId, user_id: UserId) -> None:
    """Put a user in a group (tokens issued from now on carry the group).

    Example: modelhub groups add-member support-team alice
    """
    with open_client(ctx) as client:
        client.add_member(group_id, user_id)
    render.success(f"added '{user_id}' to group '{group_id}'")


@groups_app.command("remove-member")
def remove_member(ctx: typer.Context, group_id: GroupId, user_id: UserId) -> None:
    """Take a user out of a group.

    Example: modelhub groups remove-member support-team alice
    """
    with open_client(ctx) as client:
        client.remove_member(group_id, user_id)
    render.success(f"removed '{user_id}' from group '{group_id}'")


# ---- tokens


@tokens_app.command("issue")
def issue_token(
    ctx: typer.Context,
    user_id: UserId,
    ttl_days: Annotated[
        int | None, typer.Option("--ttl-days", min=1, help="lifetime in days (default: the registry's, 30)")
    ] = None,
) -> None:
    """Issue a token for a user and print only the token, so a shell can capture it.

    Example: export MODELHUB_TOKEN=$(modelhub tokens issue alice --ttl-days 7)
    """
    with open_client(ctx) as client:
        issued = client.issue_token(user_id, ttl_seconds=ttl_days * 86_400 if ttl_days is not None else None)
    token = issued.get("token")
    if not isinstance(token, str):
        raise ApiError("the registry's answer holds no token", status=200, hint="is the registry up to date?")
    # The one place the CLI prints a token: alone on stdout so `$(...)` captures exactly it.
    typer.echo(token)
    render.note(f"expires at {issued.get('expires_at')}")
