"""``bridge alerts`` and ``bridge sending``: what an operator must look at (:mod:`adapter.ops.alerts`),
and the sending circuit breaker (:mod:`adapter.outbox.circuit_breaker`) that an account-level error from
Meta trips; acknowledging and resuming are audited."""

from __future__ import annotations

from typing import Annotated

import typer

from adapter.cli.support import audit_admin, migrated_engine, settings_or_exit

sending_app = typer.Typer(help="The sending circuit breaker.", no_args_is_help=True)
alerts_app = typer.Typer(help="Things an operator must look at.", no_args_is_help=True)


@sending_app.command("status")
def sending_status() -> None:
    """Whether sending is paused (an account-level error from Meta), since when and why."""
    from adapter.outbox.circuit_breaker import sending_paused

    flag = sending_paused(migrated_engine(settings_or_exit()))
    typer.echo("sending: running" if flag is None else f"sending: PAUSED since {flag.set_at:%Y-%m-%d %H:%M:%S} UTC "
                                                         f"({flag.reason})")


@sending_app.command("resume")
def sending_resume() -> None:
    """Resume sending after fixing the cause of the pause (token, policy, payment, ...)."""
    from adapter.outbox.circuit_breaker import resume_sending

    engine = migrated_engine(settings_or_exit())
    resumed = resume_sending(engine)
    typer.echo("sending resumed" if resumed else "sending was not paused")
    audit_admin(engine, "sending.resume", resumed=resumed)


@alerts_app.command("list")
def alerts_list() -> None:
    """Open alerts: id, time, kind, detail."""
    from adapter.ops.alerts import open_alerts

    for alert in open_alerts(migrated_engine(settings_or_exit())):
        typer.echo(f"{alert.id}\t{alert.created_at:%Y-%m-%d %H:%M:%S}\t{alert.kind}\t{alert.detail}")


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[int | None, typer.Argument(help="One alert's id; all when omitted.")] = None,
) -> None:
    """Acknowledge an alert (or all of them) once handled."""
    from adapter.ops.alerts import acknowledge

    engine = migrated_engine(settings_or_exit())
    count = acknowledge(engine, alert_id)
    typer.echo(f"acknowledged {count}")
    audit_admin(engine, "alerts.ack", entity=f"alert/{alert_id}" if alert_id is not None else None, acknowledged=count)

