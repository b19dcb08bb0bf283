"""Shared fixtures. Each area's fixtures live in tests/fixtures_<area>.py, one line below."""

pytest_plugins = [
    "tests.fixtures_core",
    "tests.fixtures_imap",
    "tests.fixtures_search",
    "tests.fixtures_export",
    "tests.fixtures_extract",
]


def pytest_configure(config: object) -> None:
    """A SIGTERM (a CI timeout, `kill`) stops the run like Ctrl-C does, so session fixtures
    tear down: the session's Dovecot is stopped instead of left running."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, stop)
