"""Root conftest: puts the repository on sys.path and loads shared pytest plugins."""

pytest_plugins = ["tests.lab.fixtures"]
