"""Every kind of audit record becomes a valid FHIR R4 AuditEvent shaped by its IHE BALP profile."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from fhir.resources.R4B.bundle import Bundle

from adapter.audit.balp import BALP, DCM, KIND_SYSTEM, SEQ_SYSTEM, kinds_for_code, to_audit_event, to_bundle
from adapter.audit.tables import AuditEvent
from adapter.audit.trail import Action, AuditEntry, Kind, Outcome, as_row

AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
OBSERVER = "bridge.hospital.example"


def _event(entry: AuditEntry, event_id: int = 7) -> AuditEvent:
    return AuditEvent(id=event_id, **as_row(entry, AT))  # type: ignore[arg-type]


def _codes(resource: dict[str, object], field: str) -> set[tuple[str, str]]:
    value = resource[field]
    codings = value if isinstance(value, list) else [value]
    return {(c["system"], c["code"]) for c in codings}  # type: ignore[index]


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_validates_as_an_r4_audit_event(kind: Kind) -> None:
    entry = AuditEntry(kind, Action.EXECUTE, Outcome.MINOR_FAILURE, agent="user:alice", agent_role="auditor",
                       source="192.0.2.10", patient_ref="Patient/example-1", entity_ref="link/42",
                       purpose="complaint review", detail={"op": "x", "count": 3})
    resource = to_audit_event(_event(entry), 12, source_observer=OBSERVER)
    parsed = FhirAuditEvent.model_validate(resource)
    assert parsed.outcome == "4"
    assert (KIND_SYSTEM, kind.value) in _codes(resource, "subtype")
    assert kind.value in kinds_for_code(kind.value)
    seq_entities = [e for e in resource["entity"]
                    if e.get("what", {}).get("identifier", {}).get("system") == SEQ_SYSTEM]
    assert [e["what"]["identifier"]["value"] for e in seq_entities] == ["12"]
    assert resource["recorded"] == "2026-11-20T09:30:00+00:00"
    assert resource["agent"][0]["network"] == {"address": "192.0.2.10", "type": "2"}


def test_a_disclosure_is_a_privacy_disclosure_with_the_patient_as_recipient() -> None:
    entry = AuditEntry(Kind.DISCLOSURE, Action.READ, patient_ref="Patient/example-1",
                       entity_ref="Appointment/example-9/_history/2", detail={"template": "appointment_reminder"})
    resource = to_audit_event(_event(entry), None, source_observer=OBSERVER)
    FhirAuditEvent.model_validate(resource)
    assert resource["meta"]["profile"] == [BALP + "PrivacyDisclosure.Source"]
    assert _codes(resource, "type") == {(DCM, "110106")}
    assert ("http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle", "disclose") in _codes(resource, "subtype")
    recipient = [a for a in resource["agent"] if a.get("type", {}).get("coding", [{}])[0].get("code") == "110152"]
    assert recipient[0]["who"]["reference"] == "Patient/example-1"
    patient = [e for e in resource["entity"] if e["role"]["code"] == "1"]
    data = [e for e in resource["entity"] if e.get("role", {}).get("code") == "4"]
    assert patient[0]["what"] == {"reference": "Patient/example-1"}
    assert data[0]["what"] == {"reference": "Appointment/example-9/_history/2"}
    assert not [e for e in resource["entity"] if "audit-seq" in json.dumps(e)]  # not chained yet: no seq
    assert "1555" not in json.dumps(resource)


def test_queries_carry_their_parameters_as_a_query_entity() -> None:
    entry = AuditEntry(Kind.AUDIT_ACCESS, Action.EXECUTE, agent="user:alice", detail={"q.type": "link-access"})
    resource = to_audit_event(_event(entry), 3, source_observer=OBSERVER)
    FhirAuditEvent.model_validate(resource)
    assert resource["meta"]["profile"] == [BALP + "Query"]
    query = next(e for e in resource["entity"] if e.get("role", {}).get("code") == "24")["query"]
    assert json.loads(base64.b64decode(query)) == {"q.type": "link-access"}


def test_login_and_logout_are_dicom_user_authentication() -> None:
    login = to_audit_event(_event(AuditEntry(Kind.LOGIN, Action.EXECUTE, detail={"op": "login"})), 1,
                           source_observer=OBSERVER)
    logout = to_audit_event(_event(AuditEntry(Kind.LOGIN, Action.EXECUTE, detail={"op": "logout"})), 2,
                            source_observer=OBSERVER)
    assert _codes(login, "type") == {(DCM, "110114")}
    assert (DCM, "110122") in _codes(login, "subtype")
    assert (DCM, "110123") in _codes(logout, "subtype")
    assert kinds_for_code(f"{DCM}|110114") == {"login"}
    assert kinds_for_code("110106") == {"disclosure"}


def test_a_bundle_is_a_valid_searchset_with_links() -> None:
    resources = [to_audit_event(_event(AuditEntry(Kind.PATIENT_READ, Action.READ,
                                                  patient_ref="Patient/example-1"), i), i, source_observer=OBSERVER)
                 for i in range(1, 4)]
    bundle = to_bundle(resources, 10, {"self": "http://x.example/audit/AuditEvent?_count=3",
                                       "next": "http://x.example/audit/AuditEvent?_count=3&_offset=3"})
    parsed = Bundle.model_validate(bundle)
    assert parsed.total == 10 and len(parsed.entry or []) == 3
    assert [link.relation for link in parsed.link or []] == ["self", "next"]


def test_mapping_many_records_gives_each_its_own_sequence() -> None:
    event = _event(AuditEntry(Kind.DISCLOSURE, Action.READ, agent="system", patient_ref="Patient/example-1",
                              entity_ref="Appointment/example-9", detail={"template": "reminder"}))
    mapped = [to_audit_event(event, seq, source_observer=OBSERVER) for seq in range(20_000)]
    assert len({json.dumps(resource, sort_keys=True) for resource in mapped}) == 20_000  # seq is in each
