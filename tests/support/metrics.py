"""A service's Prometheus metrics, read as a scraper reads them."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import TLS
from tests.support.service import Service

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(service: Service) -> Samples:
    """/metrics without a token, on a connection of its own, as {(sample name, labels): value}."""
    response = httpx.get(service.base_url + "/metrics", timeout=10, verify=TLS)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)
