"""Reads an OpenMetrics text from stdin with the Prometheus client's own parser and prints
every sample as one JSON line: {"name", "labels", "value"}. A text the parser refuses fails."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps({"name": sample.name, "labels": sample.labels, "value": sample.value}))
