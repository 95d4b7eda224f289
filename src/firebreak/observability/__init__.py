"""Layer 7: metrics, logs and traces as subscribers of `firebreak.events`.

Nothing here is needed to run workflows; each part subscribes to the event hub when
installed and unsubscribes on ``close()``. Prometheus and OpenTelemetry are optional
extras, imported only when their part is first used::

    from firebreak.observability import install_metrics, start_metrics_server
    metrics = install_metrics()                        # firebreak[prometheus]
    server = start_metrics_server(9464, metrics=metrics)

    from firebreak.observability import install_tracing
    tracing = install_tracing()                        # firebreak[otel]

    from firebreak.observability import configure_logging, install_logging
    configure_logging(json=True)                       # stdlib only
    event_log = install_logging()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from firebreak.observability.logs import (
    EventLogger,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    install_logging,
)

if TYPE_CHECKING:
    from firebreak.observability.otel import OtelTracing, install_tracing
    from firebreak.observability.prometheus import (
        METRIC_NAMES,
        PrometheusMetrics,
        install_metrics,
    )
    from firebreak.observability.server import MetricsServer, start_metrics_server

__all__ = [
    "METRIC_NAMES",
    "EventLogger",
    "JsonFormatter",
    "MetricsServer",
    "OtelTracing",
    "PrometheusMetrics",
    "TextFormatter",
    "configure_logging",
    "install_logging",
    "install_metrics",
    "install_tracing",
    "start_metrics_server",
]

# Names whose module needs an optional extra: imported on first use.
_LAZY = {
    "METRIC_NAMES": ("prometheus", "prometheus"),
    "PrometheusMetrics": ("prometheus", "prometheus"),
    "install_metrics": ("prometheus", "prometheus"),
    "MetricsServer": ("server", "prometheus"),
    "start_metrics_server": ("server", "prometheus"),
    "OtelTracing": ("otel", "otel"),
    "install_tracing": ("otel", "otel"),
}


def __getattr__(name: str) -> Any:
    try:
        module, extra = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    try:
        loaded = importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as exc:
        raise ImportError(
            f"firebreak.observability.{name} needs the {extra!r} extra: "
            f"pip install 'firebreak[{extra}]' ({exc})"
        ) from exc
    value = getattr(loaded, name)
    globals()[name] = value
    return value
