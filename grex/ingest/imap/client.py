"""Connecting: TLS, login, and which errors are worth a retry."""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
from pathlib import Path
from typing import Any

from grex.config import Account
from grex.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    TLSError,
)

# ---------------------------------------------------------------- connecting


class _Transient(Exception):
    """A network failure worth retrying (dropped connection, refused, timeout)."""


def _imapclient():
    import imapclient  # deferred: `grex search` never talks IMAP

    return imapclient


def tls_context(account: Account) -> ssl.SSLContext:
    """System CAs plus ``ca_file``; hostname and certificate always verified."""
    ctx = ssl.create_default_context()
    if account.ca_file:
        path = Path(account.ca_file).expanduser()
        try:
            ctx.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"account {account.name!r}: ca_file {path} unusable: {e}") from None
    return ctx


def connect(account: Account, password: str | None = None) -> Any:
    """A logged-in IMAPClient for ``account``; errors become grex's SyncError subclasses."""
    imapclient = _imapclient()
    where = f"{account.host}:{account.port}"
    if account.tls == "none" and not (account.is_loopback and account.allow_insecure):
        raise ConfigError(f"account {account.name!r}: tls = 'none' refused",
                          hint="only for a loopback host with allow_insecure = true")
    ctx = tls_context(account)
    secret = password if password is not None else account.password()
    try:
        if account.tls == "imaps":
            client = imapclient.IMAPClient(account.host, port=account.port, ssl=True,
                                           ssl_context=ctx, timeout=account.timeout)
        else:
            client = imapclient.IMAPClient(account.host, port=account.port, ssl=False,
                                           timeout=account.timeout)
            if account.tls == "starttls":
                if not client.has_capability("STARTTLS"):
                    raise TLSError(f"{where} does not offer STARTTLS",
                                   hint="use tls = \"imaps\" and the IMAPS port")
                client.starttls(ctx)
    except socket.gaierror as e:
        raise ConnectError(f"cannot resolve host {account.host!r}: {e.strerror}",
                           hint=f"check host in account {account.name!r}") from None
    except ssl.SSLCertVerificationError as e:
        raise TLSError(f"certificate of {where} not trusted: {e.verify_message}",
                       hint="set ca_file to the server's CA if it is self-signed") from None
    except ssl.SSLError as e:
        raise TLSError(f"TLS with {where} failed: {e.reason or e}",
                       hint="check port and tls (imaps vs starttls)") from None
    except (OSError, EOFError, imapclient.exceptions.IMAPClientAbortError) as e:
        raise _Transient(f"cannot connect to {where}: {e}") from None
    try:
        client.login(account.username, secret)
    except imapclient.exceptions.LoginError as e:
        _close(client)
        text = e.args[0] if e.args else ""
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        raise AuthError(f"login as {account.username!r} at {where} failed: {text}",
                        hint="check username and password_command / GREX_IMAP_PASSWORD") from None
    except (OSError, EOFError, imapclient.exceptions.IMAPClientAbortError) as e:
        raise _Transient(f"connection to {where} lost at login: {e}") from None
    return client


def _close(client: Any) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - the connection may already be gone
        with contextlib.suppress(Exception):
            client.shutdown()


_NET_ERRNOS = {errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.EPIPE,
               errno.ETIMEDOUT, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}


def _is_transient(e: BaseException) -> bool:
    """A dropped or refused connection, a timeout, a server going away: worth a retry.
    Local failures (a KB file that can't be written) are not."""
    import imaplib

    imapclient = _imapclient()
    if isinstance(e, ssl.SSLCertVerificationError):
        return False
    if isinstance(e, (_Transient, ConnectionError, TimeoutError, EOFError, ssl.SSLError,
                      imaplib.IMAP4.abort, imapclient.exceptions.IMAPClientAbortError)):
        return True
    return isinstance(e, OSError) and e.errno in _NET_ERRNOS


