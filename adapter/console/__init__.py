"""The browser console (server-rendered pages under ``/console``) for auditors and operators:
:mod:`adapter.console.web` (sessions, CSRF, headers, rendering), :mod:`adapter.console.routes`
(mounting), and one pages module per audience."""
