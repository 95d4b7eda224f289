"""Workflows that exercise every metric, and a scraper that reads /metrics over HTTP."""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

import firebreak as fb
from firebreak.store import CheckpointStore

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Flaky:
    """Fails with `error` the first `failures` calls, then succeeds."""

    failures: int
    error: type[Exception] = ConnectionError
    calls: int = field(default=0)

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")


def invoice_workflow() -> fb.Workflow:
    """extract fails twice then succeeds (2 retries); enrich (optional) always fails;
    post takes a measurable 50 ms. A run ends degraded."""
    wf = fb.Workflow("invoice", deadline=30)
    flaky = Flaky(failures=2)

    @wf.agent(timeout=5, retry=fb.Retry(attempts=3, base=0, cap=0))
    async def extract(ctx: fb.Context, invoice: dict[str, int]) -> int:
        flaky()
        return invoice["amount"]

    @wf.agent(after=[extract], timeout=5, critical=False, default=None)
    async def enrich(ctx: fb.Context, extract: int) -> str:
        raise ValueError("enrichment service said no")

    @wf.agent(after=[extract, enrich], timeout=5)
    async def post(ctx: fb.Context, extract: int, enrich: str | None) -> int:
        await asyncio.sleep(0.05)
        return extract

    return wf


def scan_workflow() -> fb.Workflow:
    """ocr always fails behind breaker ``ocr-api``: runs fail into the dead-letter queue."""
    wf = fb.Workflow("scan", deadline=30)

    @wf.agent(timeout=5, breaker="ocr-api")
    async def ocr(ctx: fb.Context, page: int) -> str:
        raise ConnectionError("ocr-api is down")

    return wf


def kyc_workflow() -> fb.Workflow:
    """check asks a person: the run waits in the review queue."""
    wf = fb.Workflow("kyc")

    @wf.agent(timeout=5)
    async def check(ctx: fb.Context, person: str) -> bool:
        raise fb.NeedsHuman(f"is {person} who they say?", suggestions=[True, False])

    return wf


def breaker_registry() -> fb.BreakerRegistry:
    """A private registry whose breakers open after two failures in a row."""
    return fb.BreakerRegistry(policy=fb.BreakerPolicy(consecutive_failures=2, open_duration=60))


async def run_everything(store: CheckpointStore) -> dict[str, fb.RunResult]:
    """One degraded invoice run, three failed scans (the third rejected by the open
    breaker), one kyc run waiting for review."""
    engine = fb.Engine(store, registry=breaker_registry())
    results = {"invoice": await engine.run(invoice_workflow(), {"amount": 42}, run_id="inv-1")}
    scan = scan_workflow()
    for n in range(1, 4):
        results[f"scan-{n}"] = await engine.run(scan, n, run_id=f"scan-{n}")
    results["kyc"] = await engine.run(kyc_workflow(), "ada", run_id="kyc-1")
    return results


def _get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})  # noqa: S310 - http to localhost
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return response.status, response.headers["Content-Type"], response.read().decode()


async def http_get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    """GET `url` in a thread (the event loop stays free): status, content type, body."""
    return await asyncio.to_thread(_get, url, accept)


def parse(text: str) -> Samples:
    """Samples of an exposition, by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample `name{labels}`, or None when it is absent."""
    return samples.get((name, frozenset(labels.items())))
