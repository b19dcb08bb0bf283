pytest_plugins = [
    "fixtures_export",
]
