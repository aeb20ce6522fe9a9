"""Bearer tokens already verified, remembered until they expire: a client sends the same token with every
call, and checking its signature and claims each time cost more than the rest of starting a chat stream."""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt

from modelhub_common.auth import Principal, verify_token

# As long as verify_token accepts a token past its expiry (clock skew between services).
_LEEWAY_SECONDS = 30.0


class VerifiedTokens:
    def __init__(self, secret: Callable[[], str], issuer: str, *, max_entries: int = 10_000) -> None:
        self._secret = secret
        self._issuer = issuer
        self._max_entries = max_entries
        self._secret_in_use = ""
        # token -> (its caller, when to stop trusting it on the wall clock)
        self._entries: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        """The token's caller; raises :class:`~modelhub_common.errors.AuthError` as ``verify_token`` does."""
        secret = self._secret()
        if secret != self._secret_in_use:  # a new secret invalidates everything verified with the old one
            self._entries.clear()
            self._secret_in_use = secret
        now = time.time()
        entry = self._entries.get(token)
        if entry is not None and now < entry[1]:
            return entry[0]
        principal = verify_token(token, secret, issuer=self._issuer, leeway_seconds=_LEEWAY_SECONDS)
        # The signature was checked just above; this only reads the expiry back.
        expires = jwt.decode(token, options={"verify_signature": False}).get("exp")
        if isinstance(expires, int | float):
            if len(self._entries) >= self._max_entries:
                self._entries = {t: e for t, e in self._entries.items() if now < e[1]}
                if len(self._entries) >= self._max_entries:
                    self._entries.clear()
            self._entries[token] = (principal, float(expires) + _LEEWAY_SECONDS)
        return principal
