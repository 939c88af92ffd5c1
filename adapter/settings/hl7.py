"""Settings of the HL7 v2 feed: an MLLP listener (MLLP Release 2, optionally inside TLS as the IHE ITI
"Secure Node" profile runs it) for SIU scheduling and ORU^R01 results messages, the per-facility
field positions (:func:`ehr.hl7.config.load_config`, read from a YAML file and validated here, at
start-up), and where the patient's phone comes from (PID-13, or the FHIR Patient found by PID-3).
Off unless ``hl7_enabled``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

from ehr.hl7.config import Hl7Config, Hl7ConfigError, load_config


def load_hl7_mapping(path: Path | None) -> Hl7Config:
    """The field positions in ``path`` (YAML: ``default:`` and ``facilities:``), or HL7 v2.5.1's defaults.

    Raises :class:`ValueError` whose text says what to fix in which facility and setting."""
    if path is None:
        return load_config({})
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping with 'default' and/or 'facilities'")
    try:
        return load_config(data)
    except Hl7ConfigError as exc:
        raise ValueError(f"{path}: {exc}") from exc


class Hl7Settings(BaseModel):
    # --- HL7 v2 feed
    hl7_enabled: bool = Field(
        False, description="Start an MLLP listener for HL7 v2 SIU (S12-S17, S26) and ORU^R01 messages with "
        "`bridge serve`; each message is stored before its ACK and decided like a FHIR event.")
    hl7_listen_host: str = Field("127.0.0.1", description="Address the MLLP listener binds (`0.0.0.0`: all).")
    hl7_listen_port: int = Field(2575, ge=1, le=65535, description="TCP port of the MLLP listener (2575 is "
                                 "HL7's registered port).")
    hl7_tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain) of the MLLP listener; with `hl7_tls_key_file`, MLLP runs inside "
        "TLS. Unset: plain TCP (keep it on a private network or behind the interface engine's VPN).")
    hl7_tls_key_file: Path | None = Field(None, description="PEM private key of `hl7_tls_cert_file`.")
    hl7_mapping_file: Path | None = Field(
        None, description="YAML file of field positions per sending facility (MSH-4), e.g. `facilities: {CLINIC: "
        "{filler_id: SCH-1}}`; unset: HL7 v2.5.1's positions. Checked at start-up.")
    hl7_patient_source: Literal["message", "fhir"] = Field(
        "message", description="Where an HL7 patient's phone and language come from: `message` (PID-13 mobile, "
        "PID-15; the patient is `Patient/<MRN>` for consent) or `fhir` (the FHIR Patient found by the PID-3 "
        "identifier; the patient is that Patient's reference).")
    hl7_store_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="Longest a message's storage may take before the listener answers `AE` "
        "(the engine resends).")

    hl7_writeback_via_fhir: bool = Field(
        False, description="Write taps on HL7-fed appointments (confirm, cancel, reschedule) back through the FHIR "
        "API, to the Appointment found by its filler identifier; needs `hl7_patient_source=fhir`. Not found, or "
        "off: an SRM message, else an operator alert.")
    hl7_srm_host: str | None = Field(
        None, description="MLLP destination (the scheduling system or interface engine) for SRM^S03 (confirmation) "
        "and SRM^S04 (cancellation) requests on HL7-fed appointments; its ACK is awaited and a refusal retried. "
        "Unset: such taps become an operator alert (a staff work item), never dropped.")
    hl7_srm_port: int = Field(2575, ge=1, le=65535, description="TCP port of `hl7_srm_host`.")

    @field_validator("hl7_mapping_file")
    @classmethod
    def _mapping(cls, value: Path | None) -> Path | None:
        load_hl7_mapping(value)  # raises with every problem, named by facility and setting
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> Any:
        cert, key = self.hl7_tls_cert_file, self.hl7_tls_key_file
        if (cert is None) != (key is None):
            raise ValueError("hl7_tls_cert_file and hl7_tls_key_file go together: set both for TLS, or neither")
        for name, path in (("hl7_tls_cert_file", cert), ("hl7_tls_key_file", key)):
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a file")
        if self.hl7_writeback_via_fhir and self.hl7_patient_source != "fhir":
            raise ValueError("hl7_writeback_via_fhir needs hl7_patient_source=fhir: the FHIR Appointment names the "
                             "FHIR Patient, which a patient known only by MRN cannot be matched to")
        return self
