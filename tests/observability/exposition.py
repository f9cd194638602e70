"""Reading Prometheus text exposition in the tests: sample values, and the metric names a target exports."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
             "summary": ("_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",), "unknown": ("",)}


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def exported(text: str) -> dict[str, set[str]]:
    """Every series name a target exports (counters with _total, histograms with _bucket/_count/_sum), even
    a family with no sample yet, mapped to the label names seen on its samples."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(k for k in sample.labels if k != "le")
    return names


_NAME = re.compile(r"\boca_[a-zA-Z0-9_]*\b")


def metric_names(expr: str) -> set[str]:
    """The oca_* metric names a PromQL expression reads (our names all start with oca_)."""
    return set(_NAME.findall(expr))


_SELECTOR = re.compile(r"\b(oca_[a-zA-Z0-9_]*)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched on) for each `metric{...}` selector in a PromQL expression."""
    return [(m.group(1), set(_MATCHER.findall(m.group(2)))) for m in _SELECTOR.finditer(expr)]
