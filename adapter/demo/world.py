"""The demo's obviously synthetic world: patients, a practitioner, a site, booked appointments and
final reports, deliberately full of details that must NOT reach the chat; :func:`seed` creates them in
the sandbox EHR and records the opt-ins.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from adapter.demo.stack import DEMO_SITE, DemoStack, demo_engine
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.storage.db import transaction


def synthetic_world(start: datetime) -> dict[str, dict[str, Any]]:
    """Obviously synthetic resources, deliberately full of things that must stay out of chat."""
    when = start.replace(hour=10, minute=30, second=0, microsecond=0)
    return {
        "location": {"resourceType": "Location", "name": "Oncology Wing B (synthetic)"},
        "practitioner": {"resourceType": "Practitioner", "name": [{"family": "Oncologist-Synthetic",
                                                                    "given": ["Doctor"]}]},
        "patient_en": {
            "resourceType": "Patient", "name": [{"family": "Testpatient", "given": ["Synthetic", "Demo"]}],
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-SYN-000417"}],
            "birthDate": "1970-01-01",
            "telecom": [{"system": "phone", "value": "+1 201-555-0123", "use": "mobile"}],
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US"}]},
                               "preferred": True}],
        },
        "patient_es": {
            "resourceType": "Patient", "name": [{"family": "Pacienteprueba", "given": ["Sintetica"]}],
            "birthDate": "1980-02-02",
            "telecom": [{"system": "phone", "value": "+1 201-555-0145", "use": "mobile"}],
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]},
                               "preferred": True}],
        },
        "patient_no_consent": {
            "resourceType": "Patient", "name": [{"family": "Noconsent", "given": ["Synthetic"]}],
            "telecom": [{"system": "phone", "value": "+1 201-555-0167", "use": "mobile"}],
        },
        "appointment": {
            "resourceType": "Appointment", "status": "booked",
            "serviceType": [{"text": "Chemotherapy infusion"}], "description": "Cycle 3 of synthetic regimen",
            "start": when.isoformat(), "end": (when + timedelta(minutes=45)).isoformat(),
        },
        "report": {
            "resourceType": "DiagnosticReport", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "25836-8",
                                 "display": "HIV-1 RNA viral load (synthetic)"}]},
            "conclusion": "Synthetic conclusion: detectable viral load",
        },
    }


def _create(client: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/{resource['resourceType']}", json=resource)
    response.raise_for_status()
    created: dict[str, Any] = response.json()
    return created


def seed(stack: DemoStack) -> dict[str, dict[str, Any]]:
    world = synthetic_world(datetime.now(stack.settings.zone) + timedelta(days=2))
    made: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=stack.ehr.base_url, timeout=10,
                      headers={"Content-Type": "application/fhir+json"}) as client:
        location = dict(world["location"], id=DEMO_SITE.split("/")[1])
        client.put(f"/{DEMO_SITE}", json=location).raise_for_status()
        made["location"] = location
        for key in ("practitioner", "patient_en", "patient_es", "patient_no_consent"):
            made[key] = _create(client, world[key])
        with transaction(demo_engine(stack)) as session:
            for key in ("patient_en", "patient_es"):
                set_consent(session, f"Patient/{made[key]['id']}", OPTED_IN, "admin")
        for patient_key in ("patient_en", "patient_es", "patient_no_consent"):
            appointment = dict(world["appointment"], participant=[
                {"actor": {"reference": f"Patient/{made[patient_key]['id']}", "display": "Synthetic Testpatient"},
                 "status": "needs-action"},  # awaiting the patient's confirmation
                {"actor": {"reference": f"Practitioner/{made['practitioner']['id']}",
                           "display": "Doctor Oncologist-Synthetic"}, "status": "accepted"},
                {"actor": {"reference": f"Location/{made['location']['id']}",
                           "display": "Oncology Wing B (synthetic)"}, "status": "accepted"}])
            made[f"appointment_{patient_key}"] = _create(client, appointment)
        report = dict(world["report"], subject={"reference": f"Patient/{made['patient_en']['id']}"})
        made["report"] = _create(client, report)
        made["report_preliminary"] = _create(client, dict(report, status="preliminary"))
    return made
