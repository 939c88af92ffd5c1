from __future__ import annotations

import pytest

from adapter.settings import DEFAULT_MAPPINGS_DIR
from mappings.loader import load_rules
from mappings.policy import PhiProfile
from mappings.rules import RuleSet
from tests.mappings.helpers import PUBLIC_BASE_URL
from whatsapp.catalogue import TemplateCatalogue


@pytest.fixture(scope="session")
def catalogue() -> TemplateCatalogue:
    return TemplateCatalogue.load(public_base_url=PUBLIC_BASE_URL)


@pytest.fixture(scope="session")
def rule_sets(catalogue: TemplateCatalogue) -> dict[PhiProfile, RuleSet]:
    return {profile: load_rules(DEFAULT_MAPPINGS_DIR, catalogue, profile) for profile in ("default", "strict")}
