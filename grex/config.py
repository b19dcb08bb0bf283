"""Configuration: defaults < grex.toml < GREX_* environment < flags.

Every field is validated once, here; an invalid one is named in a one-line ConfigError
("grex.toml: accounts[0].port: expected an integer, got 'x'"). Passwords are never read
from the file: an account gets its password from ``password_command`` or the environment
(``GREX_IMAP_PASSWORD``, or ``GREX_IMAP_PASSWORD_<ACCOUNT>`` for one of several accounts).
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from grex.errors import ConfigError

CONFIG_NAME = "grex.toml"
DEFAULT_KB = Path("indexes") / "default"

TLS_MODES = ("imaps", "starttls", "none")
UNSHARE_MODES = ("remove", "keep")


@dataclass(frozen=True)
class Account:
    name: str
    host: str
    port: int = 993
    tls: str = "imaps"  # imaps | starttls | none (loopback + allow_insecure only)
    ca_file: str = ""
    username: str = ""
    password_command: str = ""
    folders: tuple[str, ...] = ("INBOX",)
    share_keyword: str = "grex-share"  # "" chooses whole folders
    search: str = ""  # extra IMAP SEARCH criteria
    whole_thread: bool = True
    on_unshare: str = "remove"  # remove | keep
    allow_insecure: bool = False
    timeout: float = 30.0

    def __repr__(self) -> str:  # never leak a command line that may embed a secret
        return f"Account(name={self.name!r}, host={self.host!r}, port={self.port})"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def password(self, env: Mapping[str, str] | None = None) -> str:
        """The password: account-specific env, generic env, then password_command."""
        env = os.environ if env is None else env
        specific = f"GREX_IMAP_PASSWORD_{_env_key(self.name)}"
        if env.get(specific):
            return env[specific]
        if env.get("GREX_IMAP_PASSWORD"):
            return env["GREX_IMAP_PASSWORD"]
        if self.password_command:
            try:
                out = subprocess.run(
                    shlex.split(self.password_command), capture_output=True, text=True,
                    timeout=60, check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                raise ConfigError(
                    f"account {self.name!r}: password_command could not run ({type(e).__name__})"
                ) from None
            if out.returncode != 0:
                raise ConfigError(
                    f"account {self.name!r}: password_command exited {out.returncode}"
                )
            lines = out.stdout.splitlines()
            return lines[0] if lines else ""
        raise ConfigError(
            f"account {self.name!r}: no password",
            hint=f"set password_command in {CONFIG_NAME}, or GREX_IMAP_PASSWORD",
        )


@dataclass(frozen=True)
class NLPConfig:
    model: str = "en_core_web_sm"
    n_process: int = 0  # 0: the CPU count
    batch_size: int = 64
    max_chars: int = 20_000  # longer new text is truncated (noted in the result)


@dataclass(frozen=True)
class ThreadingConfig:
    subject_merge: bool = False


@dataclass(frozen=True)
class IndexConfig:
    enabled: bool = True


@dataclass(frozen=True)
class ExportConfig:
    html_dir: str = ""  # when set, every sync refreshes the site there
    redact: bool = False
    title: str = "grex knowledge base"


@dataclass(frozen=True)
class Config:
    kb: Path = DEFAULT_KB
    accounts: tuple[Account, ...] = ()
    nlp: NLPConfig = field(default_factory=NLPConfig)
    threading: ThreadingConfig = field(default_factory=ThreadingConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    source: str = ""  # the grex.toml read, or ""

    def account(self, name: str) -> Account:
        for a in self.accounts:
            if a.name == name:
                return a
        known = ", ".join(a.name for a in self.accounts) or "none configured"
        raise ConfigError(f"no account named {name!r} ({known})")


_SECTIONS: dict[str, type] = {
    "nlp": NLPConfig, "threading": ThreadingConfig, "index": IndexConfig, "export": ExportConfig,
}


def _env_key(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def resolve_kb_path(flag: str | Path | None, env: Mapping[str, str] | None = None) -> Path:
    """--kb flag, else GREX_KB, else the default (grex.paths: a checkout's indexes/default,
    elsewhere $XDG_DATA_HOME/grex/default)."""
    from grex.paths import kb_path

    return Path(kb_path(str(flag) if flag else None, env)[0])


def _coerce(where: str, ftype: Any, value: Any) -> Any:
    """Validate one value against a dataclass field type (as written in the annotations)."""
    t = ftype if isinstance(ftype, str) else getattr(ftype, "__name__", str(ftype))
    if t == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false",
                                                        "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if t == "int":
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if t == "float":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if t == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if t.startswith("tuple[str"):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise ConfigError(f"{where}: unsupported field type {t}")  # pragma: no cover


def _build(cls: type, where: str, data: Mapping[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown field",
                              hint="valid: " + ", ".join(sorted(known)))
        kwargs[key] = _coerce(f"{where}.{key}", known[key].type, value)
    try:
        return cls(**kwargs)
    except TypeError as e:
        missing = [n for n, f in known.items() if n not in kwargs
                   and f.default is f.default_factory]
        raise ConfigError(f"{where}: missing field {', '.join(missing) or e}") from None


def _validate_account(where: str, a: Account) -> Account:
    if not a.name:
        raise ConfigError(f"{where}.name: must not be empty")
    if not a.host:
        raise ConfigError(f"{where}.host: must not be empty")
    if a.tls not in TLS_MODES:
        raise ConfigError(f"{where}.tls: expected one of {', '.join(TLS_MODES)}, got {a.tls!r}")
    if a.on_unshare not in UNSHARE_MODES:
        raise ConfigError(
            f"{where}.on_unshare: expected one of {', '.join(UNSHARE_MODES)}, got {a.on_unshare!r}"
        )
    if not 0 < a.port < 65536:
        raise ConfigError(f"{where}.port: expected 1-65535, got {a.port}")
    if a.tls == "none" and not (a.is_loopback and a.allow_insecure):
        raise ConfigError(
            f"{where}.tls: 'none' sends the password in clear text",
            hint="refused unless host is loopback and allow_insecure = true",
        )
    if not a.folders:
        raise ConfigError(f"{where}.folders: must name at least one folder")
    return a


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


_ENV_ACCOUNT = {
    "GREX_IMAP_HOST": "host", "GREX_IMAP_PORT": "port", "GREX_IMAP_USER": "username",
    "GREX_IMAP_CAFILE": "ca_file", "GREX_IMAP_TLS": "tls", "GREX_IMAP_FOLDERS": "folders",
    "GREX_IMAP_SHARE_KEYWORD": "share_keyword",
}


def load_config(
    kb_path: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read the KB's grex.toml (if any), then the environment, then ``overrides``.

    ``overrides`` maps dotted names to values, e.g. ``{"nlp.model": "en_core_web_md"}``.
    Environment: ``GREX_<SECTION>_<FIELD>`` (``GREX_NLP_MODEL``, ``GREX_EXPORT_HTML_DIR``);
    ``GREX_IMAP_HOST/PORT/USER/CAFILE/TLS/FOLDERS/SHARE_KEYWORD`` override the fields of the
    only configured account, or define one account named ``env`` when none is configured.
    """
    env = os.environ if env is None else env
    kb = resolve_kb_path(kb_path, env)
    path = kb / CONFIG_NAME
    raw: dict[str, Any] = _read_toml(path) if path.is_file() else {}
    where = CONFIG_NAME

    unknown = set(raw) - set(_SECTIONS) - {"accounts"}
    if unknown:
        raise ConfigError(f"{where}: unknown section {sorted(unknown)[0]!r}",
                          hint="valid: accounts, " + ", ".join(_SECTIONS))

    sections: dict[str, dict[str, Any]] = {}
    for name in _SECTIONS:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
        sections[name] = dict(value)
    for name, cls in _SECTIONS.items():
        for f in fields(cls):
            key = f"GREX_{name.upper()}_{f.name.upper()}"
            if key in env:
                sections[name][f.name] = env[key]
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section in sections and value is not None:
            sections[section][key] = value

    accounts_raw = raw.get("accounts", [])
    if not isinstance(accounts_raw, list):
        raise ConfigError(f"{where}: accounts must be an array of tables ([[accounts]])")
    if "password" in str([list(a) for a in accounts_raw if isinstance(a, dict)]):
        for i, a in enumerate(accounts_raw):
            if isinstance(a, dict) and "password" in a:
                raise ConfigError(
                    f"{where}: accounts[{i}].password: passwords are never kept in the file",
                    hint="use password_command or GREX_IMAP_PASSWORD",
                )
    env_account = {field_: env[k] for k, field_ in _ENV_ACCOUNT.items()
                   if env.get(k) or (k == "GREX_IMAP_SHARE_KEYWORD" and k in env)}
    if env_account and len(accounts_raw) <= 1:
        base = dict(accounts_raw[0]) if accounts_raw else {"name": "env"}
        base.update(env_account)
        accounts_raw = [base]
    accounts = []
    for i, a in enumerate(accounts_raw):
        w = f"{where}: accounts[{i}]"
        if not isinstance(a, dict):
            raise ConfigError(f"{w}: must be a table")
        accounts.append(_validate_account(w, _build(Account, w, a)))
    names = [a.name for a in accounts]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: two accounts share a name")

    built = {name: _build(cls, f"{where}: [{name}]", sections[name])
             for name, cls in _SECTIONS.items()}
    if built["nlp"].n_process < 0 or built["nlp"].batch_size < 1 or built["nlp"].max_chars < 100:
        raise ConfigError(f"{where}: [nlp] n_process >= 0, batch_size >= 1, max_chars >= 100")
    return Config(kb=kb, accounts=tuple(accounts), source=str(path) if raw else "", **built)


def with_kb(config: Config, kb: Path) -> Config:
    return replace(config, kb=kb)


DEFAULT_TOML = """\
# grex knowledge base configuration.
# Precedence: built-in defaults < this file < GREX_* environment variables < command flags.
# Passwords never go in this file: use password_command or GREX_IMAP_PASSWORD.

# One [[accounts]] table per IMAP account whose shared threads come into this KB.
# [[accounts]]
# name = "work"
# host = "imap.example.com"
# port = 993
# tls = "imaps"              # imaps | starttls | none (refused unless host is loopback
#                            #   and allow_insecure = true)
# ca_file = ""               # extra CA, e.g. a self-signed server's certificate
# username = "me@example.com"
# password_command = "pass show mail"   # or GREX_IMAP_PASSWORD; never logged
# folders = ["INBOX", "Projects/*"]
# share_keyword = "grex-share"          # only messages with this keyword are chosen;
#                                       #   "" chooses whole folders
# search = ""                           # optional extra IMAP SEARCH criteria
# whole_thread = true                   # a chosen message brings its whole thread
# on_unshare = "remove"                 # remove | keep

[nlp]
# spaCy pipeline loaded by name; falls back to the en_core_web_sm package.
# model = "en_core_web_sm"
# n_process = 0              # worker processes for large batches; 0 = CPU count
# max_chars = 20000          # longer new text is truncated before analysis

[threading]
# subject_merge = false      # also join threads by normalized subject (off like notmuch)

[export]
# html_dir = ""              # when set, every sync refreshes the static site there
# redact = false             # mask email addresses and phone numbers in page text
# title = "grex knowledge base"
"""
