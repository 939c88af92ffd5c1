"""``bridge notices``: operator notices to patients (:mod:`adapter.scheduling.site_notices`).

``bridge notices site-closure --site Location/ID --from 2026-12-24 --to 2026-12-26 --kind closed`` queues
one message to every opted-in patient booked at that site in that range (local days, inclusive);
``--kind moved --new-site LABEL`` says where the appointments move to. The running service sends them,
outside the quiet hours. Running the same notice again queues nothing new. The command is audited.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from adapter.cli.support import audit_admin, fail, migrated_engine, service_or_exit, settings_or_exit

if TYPE_CHECKING:
    from adapter.scheduling.site_notices import NoticeReport

notices_app = typer.Typer(help="Operator notices to patients (site closures and moves).", no_args_is_help=True)


@notices_app.callback()
def _notices() -> None:
    """Operator notices to patients (site closures and moves)."""  # a group even with one command


def _day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise fail(f"{option} must be a date such as 2026-12-24", 2) from None


@notices_app.command("site-closure")
def site_closure(
    site: Annotated[str, typer.Option(help="The site's Location reference, e.g. Location/north; it needs a "
                                           "label in the setting site_labels.")],
    first: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD, site time zone).")],
    last: Annotated[str, typer.Option("--to", help="Last day, inclusive.")],
    kind: Annotated[Literal["closed", "moved"], typer.Option(help="closed, or moved (then give --new-site).")],
    new_site: Annotated[str | None, typer.Option(help="For --kind moved: the new site's label, one of the "
                                                      "setting site_labels.")] = None,
) -> None:
    """Tell every opted-in patient booked at a site in a date range that it is closed or moved."""
    import asyncio

    from adapter.scheduling.site_notices import SiteNotice, SiteNoticeError, send_site_notice
    from adapter.service import make_fhir_client
    from ehr.errors import FhirError

    settings = settings_or_exit()
    engine = migrated_engine(settings)
    service = service_or_exit(settings)
    notice = SiteNotice(site=site, first_day=_day(first, "--from"), last_day=_day(last, "--to"), kind=kind,
                        new_site=new_site)

    async def run() -> NoticeReport:
        async with make_fhir_client(settings) as fhir:
            return await send_site_notice(service.decider, fhir, notice)

    try:
        report = asyncio.run(run())
    except SiteNoticeError as error:
        raise fail(str(error), 2) from None
    except FhirError as error:  # the message names the operation, never a patient
        raise fail(f"the EHR could not be searched: {error}", 1) from None
    audit_admin(engine, "notices.site-closure", entity=site, kind=kind, first=first, last=last)
    typer.echo(_summary(report))


def _summary(report: NoticeReport) -> str:
    skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(report.skipped.items())) or "none"
    return (f"{report.appointments} appointment(s) matched; {report.queued} patient(s) queued, {report.already} "
            f"already notified, {report.blocked} blocked by the PHI guard; skipped: {skipped}")
