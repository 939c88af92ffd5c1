"""HL7 v2 event feeds beside FHIR: MLLP transport, ACKs, SIU/ORU parsing and their FHIR R4 shapes.

- :mod:`ehr.hl7.mllp` frames and unframes messages (HL7 v2 MLLP, Release 2).
- :mod:`ehr.hl7.ack` builds original-mode acknowledgements (HL7 v2.5.1 chapter 2, 2.9.2).
- :mod:`ehr.hl7.config` holds the per-sending-facility field positions.
- :mod:`ehr.hl7.messages` turns a message into typed events (:mod:`ehr.hl7.events`) or a typed
  rejection (:mod:`ehr.hl7.errors`); :mod:`ehr.hl7.mapping` turns events into FHIR R4 dicts;
  :mod:`ehr.hl7.ordering` tells a late message from a newer one.
- :mod:`ehr.hl7.ports` is what storage implements; :mod:`ehr.hl7.listener` and :mod:`ehr.hl7.client`
  are the MLLP server and sender.
"""
