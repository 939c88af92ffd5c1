"""API credentials, sessions and roles for the auditor and admin APIs."""
