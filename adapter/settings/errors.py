"""The one error the settings raise: every problem found, each as a line an administrator can act on."""

from __future__ import annotations


class SettingsError(Exception):
    """Settings are missing or wrong; ``problems`` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("The service cannot start; fix these settings:\n  - " + "\n  - ".join(problems))
