"""The one error type the dev stack raises.

Every failure to install, start, reach or stop a server ends up as a :class:`DevstackError` whose message
names the component, what went wrong and what to do next, so the CLI and pytest can show it as-is.
"""

from __future__ import annotations

from modelhub_common.errors import ModelhubError


class DevstackError(ModelhubError):
    """A local server or the dev stack could not be prepared, started, reached or stopped."""

    code = "devstack"
