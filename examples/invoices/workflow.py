"""An invoice workflow that stays up when its services fail.

OCR reads the scan, the amounts are checked, the invoice is matched to a purchase order,
the accounting entry is posted, the document is archived. The services are simulated
with seeded faults (`firebreak.demos.invoice_agents.InvoiceWorld`): poor scans that hang
the OCR, 503s everywhere, PO references that do not match as printed, duplicates.

    firebreak run examples.invoices.workflow:invoice_workflow --input examples/invoices/sample.json
    firebreak demo invoices --n 1000        # the batch, naive vs. this workflow

`firebreak demo invoices` builds this same workflow with
`firebreak.demos.invoice_agents.build_workflow` (a test checks they agree).
"""

from __future__ import annotations

import random
from typing import Any

import firebreak as fb
from firebreak.demos.invoice_agents import (
    OCR_TIMEOUT,
    SERVICE_TIMEOUT,
    InvoiceWorld,
    check_invoice,
)

world = InvoiceWorld(seed=7)  # the simulated OCR, tax, ERP and archive services, real time

retry = fb.Retry(attempts=3, base=1.0, cap=8.0, rng=random.Random(7))
# A poor scan does not read better the second time: OCR retries 503s only; a timeout or an
# unreadable total goes straight to the enhanced engine.
ocr_retry = fb.Retry(attempts=3, base=1.0, cap=8.0, on=fb.Transient, rng=random.Random(7))

# A malformed invoice is rejected before any agent runs, and dead-lettered with the reason.
invoice_workflow = fb.Workflow("invoice", deadline=300, input=check_invoice)


def readable(output: dict[str, Any]) -> dict[str, Any]:
    """Reject an OCR result without a readable total (the fallback engine runs instead)."""
    if output.get("total") is None:
        raise ValueError("OCR could not read the total")
    return output


async def ocr_enhanced(ctx: fb.Context, invoice: dict[str, Any]) -> Any:
    """The slower OCR engine made for bad scans."""
    return await world.ocr(ctx, invoice, enhanced=True)


@invoice_workflow.agent(
    timeout=OCR_TIMEOUT,  # per attempt
    retry=ocr_retry,
    breaker="ocr-api",  # every caller of the OCR API shares one breaker
    validate=readable,
    fallbacks=[ocr_enhanced],
)  # critical (the default): no extraction, no invoice
async def extract(ctx: fb.Context, invoice: dict[str, Any]) -> Any:
    """OCR the scanned invoice."""
    return await world.ocr(ctx, invoice, enhanced=False)


@invoice_workflow.agent(
    after=[extract], timeout=SERVICE_TIMEOUT, retry=retry, breaker="tax-api"
)  # the amounts are checked by the tax service: it gets a breaker too
async def validate(ctx: fb.Context, extract: dict[str, Any]) -> Any:
    """Lines + VAT must equal the total; a mismatch is permanent (dead-lettered)."""
    return await world.check_amounts(ctx, extract)


async def match_po_tolerant(ctx: fb.Context, validate: dict[str, Any]) -> Any:
    """Normalised reference, else the vendor's open orders of the same amount.

    Several candidates: raises `fb.NeedsHuman` with them as suggestions (review queue).
    """
    return await world.find_po(ctx, validate, fuzzy=True)


@invoice_workflow.agent(
    after=[validate],
    timeout=SERVICE_TIMEOUT,
    retry=retry,
    breaker="erp-api",
    fallbacks=[match_po_tolerant],
    critical=False,  # no PO found at all: post the entry flagged "PO unmatched"
    default=None,
)
async def match_po(ctx: fb.Context, validate: dict[str, Any]) -> Any:
    """Look the printed PO reference up in the ERP, exactly as printed."""
    return await world.find_po(ctx, validate, fuzzy=False)


async def reverse_entry(ctx: fb.Context, entry: dict[str, Any]) -> None:
    """Saga compensation: book the reversing entry if the run fails after posting."""
    await world.reverse(ctx, entry)


@invoice_workflow.agent(
    after=[validate, match_po],
    timeout=SERVICE_TIMEOUT,
    retry=retry,
    breaker="erp-api",
    compensate=reverse_entry,
)
async def post_entry(
    ctx: fb.Context, validate: dict[str, Any], match_po: dict[str, Any] | None
) -> Any:
    """Post the accounting entry (idempotent per ``ctx.idempotency_key``)."""
    return await world.post(ctx, validate, match_po)


@invoice_workflow.agent(
    after=[extract, post_entry], timeout=SERVICE_TIMEOUT, retry=retry, breaker="dms-api"
)
async def archive(ctx: fb.Context, extract: dict[str, Any], post_entry: Any) -> Any:  # noqa: ARG001
    """File the document; a duplicate fails the run, and the entry is reversed."""
    return await world.archive(ctx, extract)
