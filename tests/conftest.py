"""Shared fixtures. Each area's fixtures live in tests/fixtures_<area>.py, one line below."""

pytest_plugins = [
    "tests.fixtures_core",
    "tests.fixtures_imap",
    "tests.fixtures_search",
    "tests.fixtures_export",
    "tests.fixtures_extract",
]
