"""grex's exceptions: one root, a small tree, each with an exit code.

    GrexError                  every error grex reports to a user (exit 1)
    ├── ConfigError            grex.toml / environment / flags invalid (exit 78, EX_CONFIG)
    ├── KBError                the knowledge base is missing, locked or damaged
    │   ├── KBNotFound         no KB at the path (run `grex init`) (exit 1)
    │   └── KBLocked           another writer holds the KB lock (exit 75, EX_TEMPFAIL)
    ├── ParseError             one message could not be parsed (it gets quarantined)
    ├── ImportSourceError      a path given to `grex import` can't be read (exit 66, EX_NOINPUT)
    ├── SyncError              IMAP sync failed (exit 69, EX_UNAVAILABLE, unless a subclass says)
    │   ├── AuthError          wrong user or password (exit 77, EX_NOPERM)
    │   ├── TLSError           certificate or TLS failure (exit 76, EX_PROTOCOL)
    │   ├── ConnectError       host unknown or unreachable (exit 68, EX_NOHOST)
    │   └── FolderError        a configured folder does not exist (exit 67)
    ├── NLPError               the spaCy model can't be loaded or run (exit 1)
    ├── QueryError             a search query can't be parsed (exit 2: a usage error)
    ├── NotFound               a thread id or name given matches nothing or several (exit 2)
    ├── IndexError_            the search index is missing or damaged (exit 1)
    ├── ExportError            the HTML site can't be written (exit 73, EX_CANTCREAT)
    ├── Interrupted            stopped by SIGTERM after finishing its batch (exit 143)
    └── SchedulerError         crontab(1) missing or refusing the new table (exit 69)

Third-party exceptions are wrapped where they enter grex, with a message that says what
failed and what to do. The CLI catches GrexError in one place.
"""

from __future__ import annotations


class GrexError(Exception):
    """The root of every error grex reports. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(GrexError):
    exit_code = 78


class KBError(GrexError):
    exit_code = 1


class KBNotFound(KBError):
    exit_code = 1


class KBLocked(KBError):
    exit_code = 75


class ParseError(GrexError):
    exit_code = 1


class ImportSourceError(GrexError):
    exit_code = 66


class SyncError(GrexError):
    exit_code = 69


class AuthError(SyncError):
    exit_code = 77


class TLSError(SyncError):
    exit_code = 76


class ConnectError(SyncError):
    exit_code = 68


class FolderError(SyncError):
    exit_code = 67


class NLPError(GrexError):
    exit_code = 1


class QueryError(GrexError):
    """A query that can't be parsed; ``position`` points at the problem when known."""

    exit_code = 2

    def __init__(self, message: str, *, query: str = "", position: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.query = query
        self.position = position


class NotFound(GrexError):
    """What the command line named (a thread id or prefix, an entity type, a query that
    must not be empty) matches nothing, or more than one thing."""

    exit_code = 2


class IndexError_(GrexError):
    exit_code = 1


class ExportError(GrexError):
    """The site can't be written: output path not ours, another export running, disk."""

    exit_code = 73


class Interrupted(GrexError):
    """Stopped by SIGTERM (or a second SIGINT) after finishing the current batch."""

    exit_code = 143


class SchedulerError(GrexError):
    """crontab(1) is missing or refused the new table."""

    exit_code = 69


__all__ = [
    "AuthError", "ConfigError", "ConnectError", "ExportError", "FolderError", "GrexError",
    "ImportSourceError", "IndexError_", "Interrupted", "KBError", "KBLocked", "KBNotFound",
    "NLPError", "ParseError", "QueryError", "SchedulerError", "SyncError", "TLSError",
]
