"""RQ job entry points of the webhook worker; each takes ids and is safe to run twice."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from opentelemetry.trace import SpanKind

from services.common import logs, tracing
from services.common.db import transaction
from services.webhook import deliveries, sender
from services.webhook.deliveries import Claim
from services.webhook.metrics import ATTEMPT_SECONDS, ATTEMPTS
from services.webhook.runtime import Runtime, worker_runtime
from services.webhook.sender import Outcome
from services.webhook.signing import signed_headers

logger = logging.getLogger(__name__)


def deliver(attempts: list[list[str | int]]) -> list[str]:
    """Makes a batch of attempts to one endpoint, `[[delivery id, attempt number], ...]`."""
    items = [(str(delivery_id), int(number)) for delivery_id, number in attempts]
    return run_batch(
        worker_runtime(),
        attempts=items,
        traceparents=dict(zip(items, tracing.job_traceparents(len(items)), strict=True)),
    )


def run_batch(
    runtime: Runtime,
    *,
    attempts: Sequence[tuple[str, int]],
    traceparents: Mapping[tuple[str, int], str | None] | None = None,
) -> list[str]:
    """Claims the attempts still due (one transaction), sends them one after the other over one
    kept-alive connection, and records the outcomes (one transaction).

    Returns, per requested attempt, "not due", "delivered", "failed" or "released". A batch
    starts no attempt after `runtime.batch_send_s`, nor after an attempt got no answer at all
    (a timeout or a refused connection: the next would most likely wait as long); the attempts
    it did not send are released (as never claimed) and queued again, so the batch's time is
    bounded without spending their retries. Each attempt sent is a span of the trace in
    `traceparents` (its event's), when tracing is on.
    """
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        claims = deliveries.claim_attempts(
            session,
            attempts=attempts,
            lease_s=runtime.lease_s,
            policy=runtime.policy,
            box=runtime.box,
        )
    started_s = time.monotonic()
    sent: list[tuple[Claim, Outcome]] = []
    unsent: list[Claim] = []
    for claim in claims:
        answered = not sent or sent[-1][1].status_code != 0
        if unsent or not answered or time.monotonic() - started_s > runtime.batch_send_s:
            unsent.append(claim)
            continue
        with (
            logs.bound(delivery_id=claim.delivery_id, event_id=claim.event_id),
            tracing.span(
                "webhook attempt",
                # The job's context when it continues the event's trace, else the event's
                # own (a retry or a replay, enqueued by no request of that trace).
                traceparent=(traceparents or {}).get((claim.delivery_id, claim.attempt_number))
                or claim.traceparent,
                kind=SpanKind.CLIENT,
                attributes={
                    "paymesh.delivery.id": claim.delivery_id,
                    "paymesh.delivery.attempt": claim.attempt_number,
                    "paymesh.event.id": claim.event_id,
                },
            ) as span,
        ):
            outcome = sender.post(
                claim.url,
                body=claim.body,
                headers=signed_headers(
                    event_id=claim.event_id,
                    timestamp=int(time.time()),
                    body=claim.body,
                    secrets=claim.secrets,
                ),
                timeout_s=settings.webhook_timeout_s,
                allow_private=settings.webhook_allow_private_networks,
                clients=runtime.http,
            )
            span.record(
                {"http.response.status_code": outcome.status_code},
                error=None if outcome.delivered else (outcome.error or "not delivered"),
            )
        sent.append((claim, outcome))
    with transaction(runtime.sessions) as session:
        new_attempts = deliveries.record_outcomes(
            session,
            outcomes=[(c.delivery_id, c.attempt_number, outcome) for c, outcome in sent],
            policy=runtime.policy,
            event_bytes_max=settings.webhook_event_bytes_max,
        )
        released = deliveries.release_claims(session, claims=unsent)
    runtime.enqueue(new_attempts + released)
    results = {claim.delivery_id: "released" for claim in unsent}
    for claim, outcome in sent:
        results[claim.delivery_id] = "delivered" if outcome.delivered else "failed"
        if outcome.delivered:
            ATTEMPTS.labels("delivered").inc()
        else:
            ATTEMPTS.labels("rejected" if outcome.status_code else "no_response").inc()
        ATTEMPT_SECONDS.observe(outcome.duration_ms / 1000)
        logger.info(
            "webhook attempt",
            extra={
                "delivery_id": claim.delivery_id,
                "attempt": claim.attempt_number,
                "status_code": outcome.status_code,
                "error": outcome.error,
                "duration_ms": outcome.duration_ms,
            },
        )
    return [results.get(delivery_id, "not due") for delivery_id, _ in attempts]
