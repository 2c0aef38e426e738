"""The bearer tokens a caller may present, from a file (one per line, re-read when it changes)
and/or the environment, compared in constant time. Shared by every front end."""

from __future__ import annotations

import hmac
import logging
import time
from pathlib import Path

from service.errors import StartupError, Unauthenticated
from service.settings import SecuritySettings, setting_label

RELOAD_CHECK_S = 1.0
log = logging.getLogger(__name__)


def reason(error: Exception) -> str:
    """An OS or decoding error in a few words, without the path (the caller names it)."""
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


class TokenStore:
    def __init__(self, path: Path | None, inline: str) -> None:
        self.path, self.inline = path, [t.strip() for t in inline.split(",") if t.strip()]
        self.stamp: tuple[int, int] | None = None
        self.checked = 0.0
        self.problem = ""  # the last reload failure, logged once
        self.tokens = [t.encode() for t in self.inline]
        if path is not None:
            try:
                self.read(path)
            except (OSError, UnicodeDecodeError) as e:
                raise StartupError(
                    f"{setting_label('auth_tokens_file')} {path}: {reason(e)}"
                ) from None
            self.checked = time.monotonic()

    def read(self, path: Path) -> None:
        stat = path.stat()
        if (stat.st_mtime_ns, stat.st_size) != self.stamp:
            lines = path.read_text(encoding="utf-8").splitlines()
            tokens = self.inline + [t.strip() for t in lines if t.strip()]
            self.tokens = [t.encode() for t in tokens]
            self.stamp = (stat.st_mtime_ns, stat.st_size)

    def refresh(self) -> None:
        """Re-read the file if it changed (looked at no more than once a second). A file that
        went missing or cannot be read keeps the last good set (logged once), as a Secret
        being swapped or a bad edit must not lock every caller out."""
        now = time.monotonic()
        if self.path is None or now - self.checked < RELOAD_CHECK_S:
            return
        self.checked = now
        try:
            self.read(self.path)
        except (OSError, UnicodeDecodeError) as e:
            if reason(e) != self.problem:
                self.problem = reason(e)
                log.warning(
                    "tokens file unreadable; keeping the last good tokens",
                    extra={"file": str(self.path), "error": self.problem},
                )
            self.stamp = None  # read it again as soon as it is back
            return
        if self.problem:
            self.problem = ""
            log.info("tokens file read again", extra={"file": str(self.path)})

    def check(self, token: str | None, missing: str) -> None:
        """Unauthenticated unless `token` is one of these; `missing` names where a caller of
        this front end puts it (the message when it is absent)."""
        if token is None:
            raise Unauthenticated(f"missing {missing}")
        if not self.accepts(token):
            raise Unauthenticated("the bearer token is not valid")

    def accepts(self, token: str) -> bool:
        self.refresh()
        given = token.encode()
        # Every configured token is compared (no early exit), each in constant time.
        matches = [hmac.compare_digest(given, t) for t in self.tokens]
        return any(matches)


def token_store(security: SecuritySettings) -> TokenStore | None:
    """The configured tokens, or None when none is configured (no authentication)."""
    if security.auth_tokens_file is None and security.auth_tokens is None:
        return None
    inline = security.auth_tokens.get_secret_value() if security.auth_tokens else ""
    return TokenStore(security.auth_tokens_file, inline)
