"""What to do next after the registry refused a request: one line, chosen by status and by what was asked.

The registry's message says what is wrong; a hint only adds the next command to run, so statuses whose
messages already say what to do (409: "choose another id", "delete or re-base those first") get none.
"""

from __future__ import annotations

# Matched against the start of the request path: where to look up the ids of that kind of thing.
_LIST_COMMANDS: tuple[tuple[str, str], ...] = (
    ("/api/v1/base-models", "`modelhub base-models list --all` shows the base models"),
    ("/api/v1/connections", "`modelhub connections list` shows the connections"),
    ("/api/v1/groups", "`modelhub groups list` shows the groups, `modelhub users list` the users"),
    ("/api/v1/users", "`modelhub users list` shows the users"),
    ("/api/v1/tokens", "`modelhub users list` shows the users; add one with `modelhub users add`"),
    ("/api/v1/models", "`modelhub models list --all --hidden --disabled` shows every model you can read"),
)
_ADMIN_PREFIXES = ("/api/v1/connections", "/api/v1/users", "/api/v1/groups", "/api/v1/tokens", "/api/v1/base-models")

_BY_STATUS: dict[int, str] = {
    400: "check the command's arguments (`--help` shows them)",
    401: "the token is missing, expired or from another registry: set MODELHUB_TOKEN or pass --token "
    "(an admin can run `modelhub tokens issue USER`)",
    413: "split the file, or use a smaller one",
    415: "send a PNG, JPEG, WebP or GIF image",
    422: "fix what the message names and run the command again",
    502: "the connection's server did not answer as expected: check its URL and that it is running",
}


def _not_found(path: str) -> str:
    for prefix, hint in _LIST_COMMANDS:
        if path.startswith(prefix):
            return f"check the id: {hint}"
    return "check the id and the registry URL"


def _forbidden(path: str) -> str:
    if path.startswith(_ADMIN_PREFIXES):
        return "use an admin's token (`make up` writes one to .modelhub/endpoints.env as MODELHUB_TOKEN)"
    return "ask the model's owner or an admin to share it with you"


def hint_for(status: int, code: str, path: str) -> str | None:
    if code == "import_rejected":
        return "nothing was imported: fix the items listed above, or drop them from the file, and import again"
    if status == 404:
        return _not_found(path)
    if status == 403:
        return _forbidden(path)
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return "the registry failed: `make logs` shows why; retry when it is healthy (`modelhub status`)"
    return None
