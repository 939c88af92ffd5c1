"""The service's settings: one typed object, read from ``BRIDGE_*`` environment variables and an
optional YAML file (``BRIDGE_SETTINGS_FILE``), validated at start-up.

Environment variables win over the file. Every problem is reported at once, in words a hospital
administrator can act on (see :func:`load_settings`). Outside ``mode=demo`` placeholder secrets are
refused, following fastapi/full-stack-fastapi-template's "changethis" check.

One module per group of settings, each with its own checks: :mod:`.service` (mode, HTTP, database, data
keys), :mod:`.ehr_connection`, :mod:`.feeds`, :mod:`.whatsapp_api`, :mod:`.portal`, :mod:`.site`,
:mod:`.conversation` (with reminders and the survey), :mod:`.delivery` (with instances) and :mod:`.audit`
(with retention); :mod:`.model` puts them together, :mod:`.sources` reads the YAML file and
:mod:`.loading` reports the problems.
"""

from adapter.settings.errors import SettingsError
from adapter.settings.loading import load_settings
from adapter.settings.model import Settings
from adapter.settings.site import DEFAULT_MAPPINGS_DIR
from adapter.settings.values import DEMO_SECRET, decode_key

__all__ = ["DEFAULT_MAPPINGS_DIR", "DEMO_SECRET", "Settings", "SettingsError", "decode_key", "load_settings"]
