"""The satisfaction survey: one 1-5 question after a fulfilled appointment, answered into the EHR.

Flow (once per appointment):

1. An Appointment version whose status *enters* ``fulfilled``
   (https://hl7.org/fhir/R4/valueset-appointmentstatus.html) queues one survey message, natural key
   ``survey:<appointment>`` (:func:`queue_survey`, called from the decide transaction). The service only
   asks patients it already messages: the number is the one on file for the patient
   (:class:`~adapter.recipients.tables.WhatsAppContact`), the language that of their latest notification, consent
   is checked as for any notification. The Encounter is not watched: a fulfilled Appointment is the
   signal (DESIGN: the pipeline is driven by Appointment changes).
2. The message is an interactive list of five rows (free-form, so only inside the 24-hour customer
   service window); its fallback, sent when the window is closed, is the approved template
   ``satisfaction_survey`` whose quick-reply button ("Rate my visit") opens the list. That tap opens
   the window, so the list can then be sent as a reply (:func:`survey_list`).
3. Each row id and the button payload are opaque action tokens (:mod:`adapter.outbox.action_tokens`; action
   ``survey_answer`` with the score as detail, or ``survey_open``); no PHI travels.
4. The chosen row becomes an :class:`~adapter.conversation.tables.ActionRequest` of kind ``survey_answer`` (score in
   ``slot_ref``), carried out by :mod:`adapter.conversation.actions`: :func:`write_answer` creates a
   QuestionnaireResponse (https://hl7.org/fhir/R4/questionnaireresponse.html) that references the
   shipped Questionnaire (``mappings/questionnaires/satisfaction.json``) by canonical, ``subject`` and
   ``source`` the patient, ``status`` ``completed``. The create is conditional on an identifier derived from
   the appointment (https://hl7.org/fhir/R4/http.html#ccreate; matched through ``meta.tag``), so a retried
   request never writes a second response; the first tap also retires the other four rows
   (:func:`retire_answers`), so a second answer gets "already done". It is audited as a ``patient-create``
   (:func:`answer_entry`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from adapter.audit.fhir_access import PATIENT_AGENT, versioned_ref
from adapter.audit.trail import Action, AuditEntry, Kind, Outcome
from adapter.outbox.store import OutboxStore, notified_language
from adapter.outbox.tables import ActionToken
from adapter.recipients.consent import ConsentSource
from adapter.recipients.contacts import ContactBook
from adapter.recipients.tables import WhatsAppContact
from adapter.storage.db import utcnow
from ehr.client import FhirClient
from portal_links.tokens import token_hash
from whatsapp.interactive import list_message, text_message

QUESTIONNAIRE_FILE = Path(__file__).resolve().parents[2] / "mappings" / "questionnaires" / "satisfaction.json"
SURVEY_TEMPLATE = "satisfaction_survey"
RULE_ID = "survey.satisfaction"
IDENTIFIER_SYSTEM = "urn:fhir-whatsapp-bridge:survey-response"
TOKEN_TTL = timedelta(days=14)
OPEN, ANSWER = "survey_open", "survey_answer"
SCORES = ("1", "2", "3", "4", "5")

# What the patient reads (no PHI: nothing about the visit but that it happened).
TEXTS: dict[str, dict[str, Any]] = {
    "en_US": {"body": "Thank you for your visit. How would you rate it? Tap below and choose 1 to 5.",
              "button": "Rate 1 to 5", "section": "Your rating",
              "rows": ["1 - Very poor", "2 - Poor", "3 - Fair", "4 - Good", "5 - Very good"],
              "thanks": "Thank you! Your rating was recorded. In an emergency, call your local emergency number."},
    "es": {"body": "Gracias por su visita. ¿Cómo la valoraría? Toque abajo y elija del 1 al 5.",
           "button": "Valorar del 1 al 5", "section": "Su valoración",
           "rows": ["1 - Muy mala", "2 - Mala", "3 - Regular", "4 - Buena", "5 - Muy buena"],
           "thanks": "¡Gracias! Su valoración quedó registrada. En una emergencia, llame al número de emergencias "
                     "local."},
}


class SurveyError(ValueError):
    """The shipped Questionnaire is missing or not the shape the survey needs."""


@cache
def questionnaire() -> dict[str, Any]:
    """The shipped Questionnaire (R4): one required ``choice`` item with five codings."""
    try:
        loaded: dict[str, Any] = json.loads(QUESTIONNAIRE_FILE.read_text(encoding="utf-8"))
        item = loaded["item"][0]
        codes = [option["valueCoding"]["code"] for option in item["answerOption"]]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise SurveyError(f"{QUESTIONNAIRE_FILE} is not the survey Questionnaire: {error}") from error
    if loaded.get("resourceType") != "Questionnaire" or tuple(codes) != SCORES or not loaded.get("url"):
        raise SurveyError(f"{QUESTIONNAIRE_FILE} needs resourceType Questionnaire, a url and codes 1..5")
    return loaded


def canonical() -> str:
    """``url|version`` of the shipped Questionnaire (R4 canonical reference with a version)."""
    shipped = questionnaire()
    return f"{shipped['url']}|{shipped['version']}" if shipped.get("version") else str(shipped["url"])


def _texts(language: str) -> dict[str, Any]:
    return TEXTS.get(language) or TEXTS.get(language.split("_")[0]) or TEXTS["en_US"]


def _mint(session: Session, action: str, patient_ref: str, appointment_ref: str, detail: str | None) -> str:
    """An opaque action token (the same table and hashing as :func:`adapter.outbox.action_tokens.mint_action_token`,
    whose action list belongs to the appointment buttons)."""
    token, now = secrets.token_urlsafe(16), utcnow()
    session.add(ActionToken(token_hash=token_hash(token), action=action, patient_ref=patient_ref,
                            resource_ref=appointment_ref, version_id=None, detail=detail, created_at=now,
                            expires_at=now + TOKEN_TTL))
    return token


def survey_list(session: Session, patient_ref: str, appointment_ref: str, language: str) -> dict[str, Any]:
    """The interactive list 1..5 (Cloud API ``interactive``/``list``); each row id is a fresh token."""
    texts = _texts(language)
    rows = [(_mint(session, ANSWER, patient_ref, appointment_ref, score), title, None)
            for score, title in zip(SCORES, texts["rows"], strict=True)]
    return list_message(texts["body"], texts["button"], rows, section_title=texts["section"])


def survey_template(session: Session, patient_ref: str, appointment_ref: str, language: str) -> dict[str, Any]:
    """The ``satisfaction_survey`` template (outside the window); its button opens the list."""
    payload = _mint(session, OPEN, patient_ref, appointment_ref, None)
    return {"name": SURVEY_TEMPLATE, "language": {"code": language}, "components": [
        {"type": "button", "sub_type": "quick_reply", "index": "0",
         "parameters": [{"type": "payload", "payload": payload}]}]}


def retire_answers(session: Session, patient_ref: str, appointment_ref: str) -> None:
    """Marks every unused answer token of this survey used: the first answer is the answer."""
    now = utcnow()
    for token in session.exec(select(ActionToken).where(
            col(ActionToken.action) == ANSWER, col(ActionToken.patient_ref) == patient_ref,
            col(ActionToken.resource_ref) == appointment_ref, col(ActionToken.used_at).is_(None))):
        token.used_at = now
        session.add(token)


def thanks_message(language: str) -> dict[str, Any]:
    return text_message(_texts(language)["thanks"])


def survey_key(appointment_ref: str) -> str:
    return f"survey:{appointment_ref}"


def _language_of(session: Session, phone_index: bytes, default: str) -> str:
    code = notified_language(session, phone_index, default)
    return code if code in TEXTS else default


def queue_survey(session: Session, outbox: OutboxStore, contacts: ContactBook, consent: ConsentSource,
                 appointment: dict[str, Any], patient_ref: str | None, default_language: str) -> str | None:
    """Queues the survey for a just-fulfilled appointment; returns the outbox key, or None with no
    number on file, no consent, no patient, or a survey already asked for this appointment."""
    appointment_ref = f"Appointment/{appointment.get('id')}"
    key = survey_key(appointment_ref)
    if patient_ref is None or OutboxStore.exists(session, key) or not consent.may_message(session, patient_ref):
        return None
    contact = session.exec(select(WhatsAppContact).where(col(WhatsAppContact.patient_ref) == patient_ref)
                           .order_by(col(WhatsAppContact.id).desc())).first()
    if contact is None:
        return None
    language = _language_of(session, contact.phone_index, default_language)
    message = survey_list(session, patient_ref, appointment_ref, language)
    fallback = survey_template(session, patient_ref, appointment_ref, language)
    queued = outbox.enqueue_message(session, natural_key=key, rule_id=RULE_ID, resource_ref=appointment_ref,
                                    patient_ref=patient_ref, recipient=contacts.phone_of(contact), message=message,
                                    due_at=utcnow(), purpose="notify", fallback=fallback)
    return key if queued else None


def response_identifier(appointment_ref: str) -> str:
    """A stable, opaque identifier value per appointment (no appointment id in the response)."""
    return hashlib.sha256(f"survey:{appointment_ref}".encode()).hexdigest()[:32]


def questionnaire_response(patient_ref: str, appointment_ref: str, score: str,
                           authored: datetime | None = None) -> dict[str, Any]:
    """The R4 QuestionnaireResponse for one answer; raises :class:`SurveyError` for a score not 1..5."""
    shipped = questionnaire()
    item = shipped["item"][0]
    option = next((o["valueCoding"] for o in item["answerOption"] if o["valueCoding"]["code"] == score), None)
    if option is None:
        raise SurveyError(f"a survey answer is 1 to 5, not {score!r}")
    moment = (authored or utcnow()).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "resourceType": "QuestionnaireResponse",
        # The tag repeats the identifier because ``_tag`` is searchable on every server (conditional create).
        "meta": {"tag": [{"system": IDENTIFIER_SYSTEM, "code": response_identifier(appointment_ref)}]},
        "identifier": {"system": IDENTIFIER_SYSTEM, "value": response_identifier(appointment_ref)},
        "questionnaire": canonical(),
        "status": "completed",
        "subject": {"reference": patient_ref},
        "source": {"reference": patient_ref},
        "authored": moment,
        "item": [{"linkId": item["linkId"], "text": item["text"], "answer": [{"valueCoding": dict(option)}]}],
    }


@dataclass(frozen=True)
class SurveyAnswer:
    """What writing one answer did: the stored response and its audit entry."""

    response: dict[str, Any]
    audit: AuditEntry


async def write_answer(fhir: FhirClient, patient_ref: str, appointment_ref: str, score: str) -> SurveyAnswer:
    """Creates the QuestionnaireResponse (conditionally: once per appointment); FHIR errors propagate so
    the action request is retried (:mod:`adapter.conversation.actions`)."""
    body = questionnaire_response(patient_ref, appointment_ref, score)
    # R4 defines ``identifier`` as a QuestionnaireResponse search parameter, but not every server supports it
    # (the test server does not); ``_tag`` is common to all resources.
    stored = await fhir.create(body, if_none_exist=[("_tag", f"{IDENTIFIER_SYSTEM}|{body['identifier']['value']}")])
    return SurveyAnswer(stored, answer_entry(stored, patient_ref))


def answer_entry(stored: dict[str, Any], patient_ref: str) -> AuditEntry:
    """BALP PatientCreate: the patient (agent) asked, the service created the response (the answer
    itself is not copied into the trail; the versioned reference leads to it)."""
    return AuditEntry(kind=Kind.PATIENT_CREATE, action=Action.CREATE, outcome=Outcome.SUCCESS, agent=PATIENT_AGENT,
                      patient_ref=patient_ref, entity_ref=versioned_ref(stored, "QuestionnaireResponse"),
                      detail={"request": ANSWER, "via": "whatsapp", "performer": "system"})
