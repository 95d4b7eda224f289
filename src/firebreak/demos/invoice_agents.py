"""The invoice case study: a seeded simulation of the services and the workflow built on it.

An accounts-payable workflow: OCR reads a scanned invoice, the amounts are checked, the
invoice is matched to a purchase order, an accounting entry is posted and the document is
archived. The services are simulated (`InvoiceWorld`) with seeded faults:

* **OCR** (``ocr-api``): poor scans make the standard engine hang (the attempt times out)
  or return an unreadable total; now and then a 503.
* **amount checks** (a tax-rate service): 503s; a few invoices whose lines do not add up.
* **purchase orders** (ERP): 503s; references printed in another format ("po 012345"),
  missing references on recurring orders of the same amount (two candidates: a person
  must choose), unknown purchases (no candidate at all).
* **ledger** (ERP) and **archive** (DMS): 503s; the archive refuses duplicates of invoices
  it already holds — after the entry was posted, so the saga must reverse it.

The fault of every call is a pure function of ``(seed, invoice id, agent, attempt)``
(`InvoiceWorld.draw`), never of the order of calls, so two runs of a batch — naive and
protected — face the very same faults; what differs is only what the patterns make of them.
`build_workflow` defines both variants on the same agents.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

import firebreak as fb
from firebreak.clock import Clock, system_clock

__all__ = [
    "AmountMismatch",
    "DuplicateInvoice",
    "FaultRates",
    "InvoiceWorld",
    "Ledger",
    "NoExactMatch",
    "NoPurchaseOrder",
    "ServiceUnavailable",
    "build_workflow",
    "check_invoice",
]

HANG: Final = 600.0
"""Seconds a hung call would take: far beyond any timeout, so the timeout always fires."""

OCR_TIMEOUT: Final = 15.0
"""Seconds an OCR attempt may take (a good scan takes 3-7 s, a poor one 7-10 s)."""

SERVICE_TIMEOUT: Final = 10.0
"""Seconds an attempt on the other services may take (they answer in 0.5-3 s)."""

_VENDORS: Final = (
    ("ACM", "Acme Office Supply"),
    ("NWL", "Nordwind Logistics"),
    ("BLU", "Bluebird Cleaning"),
    ("KST", "Kestrel IT Services"),
    ("ORI", "Orion Print & Copy"),
    ("PAL", "Paloma Catering"),
    ("TRI", "Trident Facility Mgmt"),
    ("VER", "Verdant Plants"),
)


class ServiceUnavailable(fb.Transient):
    """HTTP 503 from a simulated service, with a Retry-After in seconds."""

    status_code = 503

    def __init__(self, service: str, *, retry_after: float = 1.0) -> None:
        super().__init__(f"{service}: 503 service unavailable", retry_after=retry_after)


class AmountMismatch(fb.Permanent):
    """The invoice's lines, VAT and total do not agree (or the total is unreadable)."""


class NoExactMatch(fb.Permanent):
    """The printed purchase-order reference names no open purchase order as printed."""


class NoPurchaseOrder(fb.Permanent):
    """No open purchase order of the vendor fits the invoice at all."""


class DuplicateInvoice(fb.Permanent):
    """The archive already holds this vendor invoice number: it was processed before."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRates:
    """How often each fault occurs; the defaults land the naive run near 78 % success."""

    poor_scan: float = 0.06
    """Share of invoices scanned badly."""
    ocr_hang_on_poor: float = 0.5
    """Per attempt on a poor scan: the standard OCR hangs (its timeout fires)."""
    ocr_garbled_on_poor: float = 0.25
    """Per attempt on a poor scan: the standard OCR returns no readable total."""
    enhanced_fails_on_poor: float = 0.05
    """Per attempt on a poor scan: the enhanced OCR engine hangs too."""
    ocr_503: float = 0.03
    """Per attempt: the OCR API answers 503."""
    service_503: float = 0.02
    """Per attempt: the tax, ERP or archive service answers 503."""
    po_reformatted: float = 0.06
    """Share of invoices printing their PO reference in another format ("po 012345")."""
    po_recurring_no_ref: float = 0.015
    """Share billing a recurring order without a reference: two POs fit, a person picks."""
    po_unknown: float = 0.01
    """Share without a reference whose amount fits no open PO: posted unmatched."""
    bad_amounts: float = 0.008
    """Share whose lines do not add up to the total: rejected."""
    duplicates: float = 0.004
    """Share re-sent although archived before: the posted entry must be reversed."""

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise fb.ConfigError(name, f"must be a probability in [0, 1], got {value!r}")
        if self.ocr_hang_on_poor + self.ocr_garbled_on_poor + self.ocr_503 > 1.0:
            raise fb.ConfigError("ocr_hang_on_poor", "OCR fault rates add up to more than 1")


@dataclass(slots=True)
class Ledger:
    """The simulated general ledger: entries posted once per idempotency key, reversals."""

    posted: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Entries by id."""
    reversed: set[str] = field(default_factory=set)
    """Ids of the entries reversed by a compensation."""

    def open_entries(self) -> set[str]:
        """Entries posted and not reversed."""
        return set(self.posted) - self.reversed


class InvoiceWorld:
    """The simulated services and the invoices they see, all derived from one seed.

    Args:
        seed: the seed of the invoices, the purchase orders and every fault.
        clock: what the services sleep on (virtual time in the demo).
        rates: how often each fault occurs.
    """

    def __init__(
        self, seed: int = 7, *, clock: Clock = system_clock, rates: FaultRates | None = None
    ) -> None:
        self.seed = seed
        self.clock = clock
        self.rates = rates or FaultRates()
        self.ledger = Ledger()
        self._po_index = {po["number"]: po for code, _ in _VENDORS for po in self.open_pos(code)}
        # Last month's invoice numbers, already in the archive: duplicates reuse them.
        self.archived_before = frozenset(
            f"{code}-PREV-{k:03d}" for code, _ in _VENDORS for k in range(50)
        )

    # -- the data ---------------------------------------------------------------------------

    def open_pos(self, vendor: str) -> list[dict[str, Any]]:
        """The vendor's open purchase orders: four one-off orders and a recurring pair."""
        return _open_pos(self.seed, vendor)

    def invoice(self, index: int) -> dict[str, Any]:
        """Invoice number `index` of the batch: what the scanner delivers, as JSON data."""
        rng = random.Random(f"{self.seed}/invoice/{index}")
        rates = self.rates
        code, name = _VENDORS[rng.randrange(len(_VENDORS))]
        pos = self.open_pos(code)
        po = pos[rng.randrange(4)]  # a one-off order
        net, ref = po["amount"], po["number"]
        kind = rng.random()
        edge = rates.po_reformatted
        if kind < edge:
            ref = _reformat(ref, rng)
        elif kind < (edge := edge + rates.po_recurring_no_ref):
            net, ref = pos[4]["amount"], ""
        elif kind < edge + rates.po_unknown:
            net, ref = round(sum(p["amount"] for p in pos) / 3 + 0.37, 2), ""
        vat = 0.19
        total = round(net * (1 + vat), 2)
        if rng.random() < rates.bad_amounts:
            total = round(total + rng.choice((10.0, 100.0, -1.0)), 2)
        first = round(net * rng.uniform(0.3, 0.7), 2)
        duplicate = rng.random() < rates.duplicates
        return {
            "id": f"INV-{index:06d}",
            "number": f"{code}-PREV-{rng.randrange(50):03d}"
            if duplicate
            else f"{code}-{index:06d}",
            "vendor": code,
            "vendor_name": name,
            "po_ref": ref,
            "currency": "EUR",
            "lines": [
                {"description": "goods and services", "amount": first},
                {"description": "delivery and handling", "amount": round(net - first, 2)},
            ],
            "vat_rate": vat,
            "total": total,
            "scan": "poor" if rng.random() < rates.poor_scan else "good",
        }

    def draw(self, invoice_id: str, agent: str, attempt: int) -> random.Random:
        """The random source of one call: a pure function of seed, invoice, agent, attempt."""
        return random.Random(f"{self.seed}/{invoice_id}/{agent}/{attempt}")

    # -- the services ------------------------------------------------------------------------

    async def _call(
        self, service: str, rng: random.Random, *, fails: float, latency: tuple[float, float]
    ) -> None:
        """One request: a 503 with probability `fails`, else a uniform latency."""
        if rng.random() < fails:
            await self.clock.sleep(0.2)
            raise ServiceUnavailable(service)
        await self.clock.sleep(rng.uniform(*latency))

    async def ocr(self, ctx: fb.Context, invoice: Mapping[str, Any], *, enhanced: bool) -> Any:
        """Read the scan: the standard engine, or the slower enhanced one made for bad scans."""
        rng = self.draw(invoice["id"], "ocr-enhanced" if enhanced else ctx.agent, ctx.attempt)
        r, poor = rng.random(), invoice["scan"] == "poor"
        rates = self.rates
        garbled = False
        if enhanced:
            if poor and r < rates.enhanced_fails_on_poor:
                await self.clock.sleep(HANG)
        elif r < rates.ocr_503:
            await self.clock.sleep(0.2)
            raise ServiceUnavailable("ocr-api")
        elif poor and r < rates.ocr_503 + rates.ocr_hang_on_poor:
            await self.clock.sleep(HANG)
        elif poor:
            garbled = r < rates.ocr_503 + rates.ocr_hang_on_poor + rates.ocr_garbled_on_poor
        low, high = (9.0, 12.0) if enhanced else (7.0, 10.0) if poor else (3.0, 7.0)
        await self.clock.sleep(rng.uniform(low, high))
        fields = {k: invoice[k] for k in ("id", "number", "vendor", "po_ref", "currency")}
        return {
            **fields,
            "lines": [dict(line) for line in invoice["lines"]],
            "vat_rate": invoice["vat_rate"],
            "total": None if garbled else invoice["total"],
        }

    async def check_amounts(self, ctx: fb.Context, extract: Mapping[str, Any]) -> Any:
        """Check lines + VAT = total (the VAT rate comes from a tax service)."""
        rng = self.draw(extract["id"], ctx.agent, ctx.attempt)
        await self._call("tax-api", rng, fails=self.rates.service_503, latency=(0.5, 1.5))
        net = round(sum(line["amount"] for line in extract["lines"]), 2)
        total = extract["total"]
        if total is None:
            raise AmountMismatch(f"{extract['id']}: the total is unreadable")
        expected = round(net * (1 + extract["vat_rate"]), 2)
        if abs(total - expected) > 0.011:
            raise AmountMismatch(f"{extract['id']}: total {total} but lines + VAT = {expected}")
        return {k: extract[k] for k in ("id", "number", "vendor", "po_ref", "currency")} | {
            "net": net,
            "total": total,
        }

    async def find_po(self, ctx: fb.Context, validate: Mapping[str, Any], *, fuzzy: bool) -> Any:
        """Look the invoice's PO up in the ERP: exactly as printed, or the tolerant way.

        The tolerant way normalises the reference ("po 012345" = "PO-12345"); without a
        usable reference it takes the vendor's open orders of exactly the invoice's net
        amount: one is the match, several go to a person with the candidates attached.
        """
        rng = self.draw(validate["id"], ctx.agent, ctx.attempt)
        latency = (2.0, 3.0) if fuzzy else (1.0, 2.0)
        await self._call("erp-api", rng, fails=self.rates.service_503, latency=latency)
        ref, vendor = validate["po_ref"], validate["vendor"]
        po = self._po_index.get(ref)
        if po is not None and po["vendor"] == vendor:
            return {"po": po["number"], "how": "exact"}
        if not fuzzy:
            raise NoExactMatch(f"{validate['id']}: no open PO {ref!r} of {vendor}")
        wanted = _normalise(ref)
        orders = self.open_pos(vendor)
        by_ref = [p for p in orders if wanted and _normalise(p["number"]) == wanted]
        if len(by_ref) == 1:
            return {"po": by_ref[0]["number"], "how": "normalised reference"}
        by_amount = [p for p in orders if abs(p["amount"] - validate["net"]) < 0.005]
        if len(by_amount) == 1:
            return {"po": by_amount[0]["number"], "how": "amount"}
        if by_amount:
            raise fb.NeedsHuman(
                f"{validate['id']}: no PO reference; {len(by_amount)} open orders of {vendor} "
                f"match {validate['net']:.2f} {validate['currency']}",
                suggestions=[{"po": p["number"], "what": p["what"]} for p in by_amount],
            )
        raise NoPurchaseOrder(f"{validate['id']}: no open PO of {vendor} fits {ref!r}")

    async def post(
        self, ctx: fb.Context, validate: Mapping[str, Any], match_po: Mapping[str, Any] | None
    ) -> Any:
        """Post the entry in the ledger, once per idempotency key."""
        rng = self.draw(validate["id"], ctx.agent, ctx.attempt)
        await self._call("erp-api", rng, fails=self.rates.service_503, latency=(1.0, 2.0))
        entry = {
            "entry_id": f"JE-{ctx.run_id}",
            "key": ctx.idempotency_key,
            "amount": validate["total"],
            "po": match_po["po"] if match_po else None,
            "flag": None if match_po else "PO unmatched: check before payment",
        }
        self.ledger.posted.setdefault(entry["entry_id"], entry)
        return entry

    async def reverse(self, ctx: fb.Context, entry: Mapping[str, Any]) -> None:  # noqa: ARG002
        """Compensation: book the reversing entry."""
        await self.clock.sleep(1.0)
        self.ledger.reversed.add(entry["entry_id"])

    async def archive(self, ctx: fb.Context, extract: Mapping[str, Any]) -> Any:
        """File the document in the DMS, which refuses invoices it already holds."""
        rng = self.draw(extract["id"], ctx.agent, ctx.attempt)
        await self._call("dms-api", rng, fails=self.rates.service_503, latency=(0.5, 1.0))
        if extract["number"] in self.archived_before:
            raise DuplicateInvoice(f"{extract['id']}: {extract['number']} was processed before")
        return {"document_id": f"DOC-{extract['id']}"}


_INVOICE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "number": str,
    "vendor": str,
    "vendor_name": str,
    "po_ref": str,
    "currency": str,
    "lines": list,
    "vat_rate": (int, float),
    "total": (int, float),
    "scan": str,
}


def check_invoice(value: Any) -> Any:
    """Input schema of the invoice workflow: the fields, their types, sane amounts.

    Declared on the protected workflow (``Workflow(..., input=check_invoice)``): a
    malformed invoice is rejected before any agent runs and dead-lettered with the reason.
    """
    if not isinstance(value, Mapping):
        raise TypeError(f"an invoice is a JSON object, got {type(value).__name__}")
    for name, kind in _INVOICE_FIELDS.items():
        if name not in value:
            raise ValueError(f"invoice field {name!r} is missing")
        if isinstance(value[name], bool) or not isinstance(value[name], kind):
            raise TypeError(f"invoice field {name!r} has the wrong type: {value[name]!r}")
    for text in ("id", "number", "vendor", "vendor_name", "currency", "po_ref"):
        if not value[text].isprintable() or (not value[text] and text != "po_ref"):
            raise ValueError(f"invoice field {text!r} is not printable text")
    if value["scan"] not in ("good", "poor"):
        raise ValueError(f"invoice field 'scan' must be good or poor, got {value['scan']!r}")
    if value["total"] < 0 or not value["lines"]:
        raise ValueError("invoice total is negative or it has no lines")
    for line in value["lines"]:
        if not isinstance(line, Mapping) or not isinstance(line.get("amount"), int | float):
            raise TypeError(f"invoice line {line!r} has no amount")
    return value


def build_workflow(world: InvoiceWorld, *, protected: bool = True) -> fb.Workflow:
    """The invoice workflow on `world`'s services: with firebreak's patterns, or naive.

    Protected: retries with backoff, breakers per service, an enhanced-OCR fallback and an
    output check on OCR, tolerant PO matching that may ask a person (`NeedsHuman`) or
    degrade (posted unmatched), and a compensation that reverses the entry if the run
    fails after posting. Naive: the same agents, one attempt each, all critical, nothing
    else — only the timeouts, which any HTTP client has.
    """
    retry = fb.Retry(attempts=3, base=1.0, cap=8.0, rng=random.Random(world.seed))
    # A poor scan does not read better the second time: OCR retries 503s only, and a
    # timeout or an unreadable result goes straight to the enhanced engine.
    ocr_retry = fb.Retry(attempts=3, base=1.0, cap=8.0, on=fb.Transient, rng=retry.rng)
    on = protected
    wf = (
        fb.Workflow("invoice", deadline=300, input=check_invoice)
        if on
        else fb.Workflow("invoice-naive", deadline=300)
    )

    async def ocr_enhanced(ctx: fb.Context, invoice: dict[str, Any]) -> Any:
        return await world.ocr(ctx, invoice, enhanced=True)

    @wf.agent(
        timeout=OCR_TIMEOUT,
        retry=ocr_retry if on else None,
        breaker="ocr-api" if on else None,
        validate=_readable if on else None,
        fallbacks=[ocr_enhanced] if on else [],
    )
    async def extract(ctx: fb.Context, invoice: dict[str, Any]) -> Any:
        return await world.ocr(ctx, invoice, enhanced=False)

    @wf.agent(
        after=[extract],
        timeout=SERVICE_TIMEOUT,
        retry=retry if on else None,
        breaker="tax-api" if on else None,  # the amounts are checked by the tax service
    )
    async def validate(ctx: fb.Context, extract: dict[str, Any]) -> Any:
        return await world.check_amounts(ctx, extract)

    async def match_po_tolerant(ctx: fb.Context, validate: dict[str, Any]) -> Any:
        return await world.find_po(ctx, validate, fuzzy=True)

    optional: dict[str, Any] = {"critical": False, "default": None} if on else {}

    @wf.agent(
        after=[validate],
        timeout=SERVICE_TIMEOUT,
        retry=retry if on else None,
        breaker="erp-api" if on else None,
        fallbacks=[match_po_tolerant] if on else [],
        **optional,
    )
    async def match_po(ctx: fb.Context, validate: dict[str, Any]) -> Any:
        return await world.find_po(ctx, validate, fuzzy=False)

    @wf.agent(
        after=[validate, match_po],
        timeout=SERVICE_TIMEOUT,
        retry=retry if on else None,
        breaker="erp-api" if on else None,
        compensate=world.reverse if on else None,
    )
    async def post_entry(
        ctx: fb.Context, validate: dict[str, Any], match_po: dict[str, Any] | None
    ) -> Any:
        return await world.post(ctx, validate, match_po)

    @wf.agent(
        after=[extract, post_entry],
        timeout=SERVICE_TIMEOUT,
        retry=retry if on else None,
        breaker="dms-api" if on else None,
    )
    async def archive(ctx: fb.Context, extract: dict[str, Any], post_entry: Any) -> Any:  # noqa: ARG001
        return await world.archive(ctx, extract)

    return wf


def _readable(output: Any) -> Any:
    """OCR output check: a scan whose total could not be read is no extraction."""
    if output.get("total") is None:
        raise ValueError("OCR could not read the total")
    return output


@cache
def _open_pos(seed: int, vendor: str) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}/po/{vendor}")
    amounts: set[float] = set()
    while len(amounts) < 5:
        amounts.add(round(rng.uniform(80.0, 9000.0), 2))
    *one_off, recurring = sorted(amounts)
    pos = [
        {"number": f"PO-{vendor}{k}{rng.randrange(1000, 9999)}", "amount": amount, "what": "order"}
        for k, amount in enumerate(one_off)
    ]
    pos += [
        {
            "number": f"PO-{vendor}{4 + k}{rng.randrange(1000, 9999)}",
            "amount": recurring,
            "what": f"monthly service, {month}",
        }
        for k, month in enumerate(("March", "April"))
    ]
    return [{**po, "vendor": vendor} for po in pos]


def _reformat(ref: str, rng: random.Random) -> str:
    """The same reference as another system prints it."""
    body = ref.removeprefix("PO-")
    return rng.choice((f"po {body.lower()}", f"PO#{body}", f"P.O. {body}", f"PO-0{body}"))


def _normalise(ref: str) -> str:
    """Upper case, letters and digits only, leading zeros and the PO prefix dropped."""
    text = re.sub(r"[^0-9A-Z]", "", ref.upper())
    return text.removeprefix("PO").lstrip("0")
