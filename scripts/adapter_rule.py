#!/usr/bin/env python3
"""The prometheus-adapter rule behind the backend HPA, for scripts/deploy-check.sh.

check FILE...: every file (ConfigMap `config.yaml`, chart values `rules.custom`, rendered Helm
manifests) must carry the same single rule for http_request_own_duration_p999_seconds; prints its
metricsQuery.
substitute QUERY SERIES MATCHERS GROUPBY: fills the adapter's Go-template placeholders as the
adapter does for a pods query, so promtool can run the very query the HPA's number comes from.
Needs PyYAML (installed with yamllint in the deploy tools' venv, or Debian python3-yaml).
"""

import sys

import yaml

METRIC = "http_request_own_duration_p999_seconds"


def rules_in(doc):
    """Adapter rules found in one YAML document of any of the three shapes."""
    if not isinstance(doc, dict):
        return []
    if doc.get("kind") == "ConfigMap":
        config = (doc.get("data") or {}).get("config.yaml")
        return (yaml.safe_load(config) or {}).get("rules", []) if config else []
    rules = doc.get("rules")
    if isinstance(rules, dict):
        return rules.get("custom", [])
    return rules if isinstance(rules, list) else []


def check(paths):
    queries = {}
    for path in paths:
        with open(path, encoding="utf-8") as file:
            found = [
                rule
                for doc in yaml.safe_load_all(file)
                for rule in rules_in(doc)
                if rule.get("name", {}).get("as") == METRIC
            ]
        if len(found) != 1:
            sys.exit(f"adapter_rule: {path}: {len(found)} rules for {METRIC}, want 1")
        queries[path] = found[0]
    first = next(iter(queries.values()))
    for path, rule in queries.items():
        if rule != first:
            sys.exit(f"adapter_rule: {path} differs from {paths[0]}:\n{rule}\n{first}")
    print(first["metricsQuery"])


def substitute(query, series, matchers, group_by):
    return (
        query.replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", matchers)
        .replace("<<.GroupBy>>", group_by)
    )


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "check":
        check(sys.argv[2:])
    elif len(sys.argv) == 6 and sys.argv[1] == "substitute":
        print(substitute(*sys.argv[2:]))
    else:
        sys.exit(__doc__)
