"""Validates TOML documents against cronmail's JSON Schema with an independent
implementation: Python's tomllib and the `jsonschema` package (Draft 2020-12).

    python schema_check.py SCHEMA.json < [{"label": ..., "toml": ...}, ...]

Prints [{"label": ..., "errors": [...]}, ...]: an empty list of errors is valid. The
schema itself is first checked against its metaschema (exit 2 if it is not valid)."""

import json
import sys
import tomllib

import jsonschema

schema = json.load(open(sys.argv[1]))
validator_class = jsonschema.validators.validator_for(schema)
try:
    validator_class.check_schema(schema)
except jsonschema.exceptions.SchemaError as e:
    print(f"the schema is not a valid JSON Schema: {e.message}", file=sys.stderr)
    sys.exit(2)
validator = validator_class(schema)

results = []
for doc in json.load(sys.stdin):
    try:
        data = tomllib.loads(doc["toml"])
    except tomllib.TOMLDecodeError as e:
        results.append({"label": doc["label"], "errors": [f"not TOML: {e}"]})
        continue
    errors = sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(data)
    )
    results.append({"label": doc["label"], "errors": errors})
json.dump(results, sys.stdout)
