//! The editor schema of jobs.toml (`cronmail schema`), made from the raw types: each
//! field's doc comment is its description there.

use super::raw::{RawJob, RawTop};

/// The JSON Schema of jobs.toml, for editors (taplo, Even Better TOML) and
/// `cronmail schema`. TOML has no null, so an optional key is only left out.
pub fn schema() -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let job = generator.subschema_for::<RawJob>();
    let mut schema = generator.into_root_schema_for::<RawTop>().to_value();
    let obj = schema.as_object_mut().expect("an object schema");
    obj.insert("title".into(), "cronmail jobs.toml".into());
    // A job has exactly one of `schedule`, `rrule` (with its `start`) and `at`.
    if let Some(job) = obj
        .get_mut("$defs")
        .and_then(|d| d.get_mut("Job"))
        .and_then(serde_json::Value::as_object_mut)
    {
        job.insert(
            "oneOf".into(),
            serde_json::json!([
                {"required": ["schedule"], "not": {"anyOf": [{"required": ["rrule"]}, {"required": ["at"]}]}},
                {"required": ["rrule", "start"], "not": {"anyOf": [{"required": ["schedule"]}, {"required": ["at"]}]}},
                {"required": ["at"], "not": {"anyOf": [{"required": ["schedule"]}, {"required": ["rrule"]}]}},
            ]),
        );
    }
    obj["properties"]
        .as_object_mut()
        .expect("properties")
        .insert(
            "job".into(),
            serde_json::json!({
                "description": "The jobs, each a [[job]] table.",
                "type": "array",
                "items": job.to_value(),
            }),
        );
    drop_null(&mut schema);
    schema
}

/// Takes `null` out of every schema (`Option` adds it; TOML cannot write it).
fn drop_null(value: &mut serde_json::Value) {
    use serde_json::Value;
    let Value::Object(map) = value else { return };
    if let Some(Value::Array(types)) = map.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            map.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(any)) = map.get_mut("anyOf") {
        any.retain(|s| s.get("type").is_none_or(|t| t != "null"));
        if let [only] = any.as_slice() {
            let only = only.clone();
            map.remove("anyOf");
            if let Value::Object(inner) = only {
                map.extend(inner);
            }
        }
    }
    for v in map.values_mut() {
        match v {
            Value::Object(_) => drop_null(v),
            Value::Array(items) => items.iter_mut().for_each(drop_null),
            _ => {}
        }
    }
}
