"""Repository root conftest: registers the shared test fixtures as a plugin (pytest only allows
``pytest_plugins`` here)."""

pytest_plugins = ["tests.support.fixtures"]
