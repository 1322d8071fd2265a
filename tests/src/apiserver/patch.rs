//! The patch formats: JSON merge patch (RFC 7386), a strategic merge patch for built-in kinds,
//! JSON patch (RFC 6902), and the field sets that `managedFields` records.

use serde_json::{Map, Value, json};

/// The merge key of a list of objects in a built-in kind, by the list's field name, as the Go
/// types' `patchMergeKey` tags say. Lists not named here are replaced whole.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "conditions" | "addresses" => Some("type"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ownerReferences" => Some("uid"),
        "hostAliases" | "podIPs" | "hostIPs" => Some("ip"),
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => Some("containerPort"),
        "ports" => Some("port"),
        _ => None,
    }
}

/// Lists of scalars that a strategic merge unions rather than replaces.
fn merges_as_set(field: &str) -> bool {
    field == "finalizers"
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// A strategic merge patch: a merge patch in which lists of objects with a merge key merge item
/// by item, `finalizers` merge as a set, and the directives `$patch: delete|replace`,
/// `$deleteFromPrimitiveList/<field>`, `$retainKeys` and `$setElementOrder/<field>` are honoured
/// (the last only in that it is accepted).
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch_map.clone();
            replaced.remove("$patch");
            *target = Value::Object(replaced);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some(other) => return Err(format!("unknown patch type: {other}")),
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else {
        return Ok(());
    };
    for (key, value) in patch_map {
        if key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(remove)) =
                (map.get_mut(field), value.as_array())
            {
                items.retain(|i| !remove.contains(i));
            }
            continue;
        }
        if value.is_null() {
            map.remove(key);
            continue;
        }
        match (map.get_mut(key), value) {
            (Some(Value::Array(existing)), Value::Array(incoming)) => {
                merge_list(key, existing, incoming)?;
            }
            (Some(existing @ Value::Object(_)), Value::Object(_)) => {
                strategic_merge(existing, value)?;
                if existing.as_object().is_some_and(Map::is_empty)
                    && value.get("$patch").and_then(Value::as_str) == Some("delete")
                {
                    map.remove(key);
                }
            }
            _ => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, value)?;
                strip_directives(&mut fresh);
                map.insert(key.clone(), fresh);
            }
        }
    }
    if let Some(Value::Array(retain)) = patch_map.get("$retainKeys") {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        map.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn merge_list(field: &str, existing: &mut Vec<Value>, incoming: &[Value]) -> Result<(), String> {
    if merges_as_set(field) {
        for item in incoming {
            if !existing.contains(item) {
                existing.push(item.clone());
            }
        }
        return Ok(());
    }
    let objects = incoming.iter().all(Value::is_object) && existing.iter().all(Value::is_object);
    let Some(key) = merge_key(field, incoming).filter(|_| objects) else {
        *existing = incoming.to_vec();
        for item in existing.iter_mut() {
            strip_directives(item);
        }
        return Ok(());
    };
    for item in incoming {
        let id = item.get(key).cloned().unwrap_or(Value::Null);
        let at = existing.iter().position(|e| e.get(key) == Some(&id));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (at, delete) {
            (Some(at), true) => {
                existing.remove(at);
            }
            (None, true) => {}
            (Some(at), false) => strategic_merge(&mut existing[at], item)?,
            (None, false) => {
                let mut fresh = item.clone();
                strip_directives(&mut fresh);
                existing.push(fresh);
            }
        }
    }
    Ok(())
}

fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// RFC 6902, as the API server applies it: all or nothing, and a `test` for `null` passes on a
/// missing path (the Go library the API server uses reads a missing value as null; clients
/// such as kube-rs's finalizer helper rely on it).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let operations: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| e.to_string())?;
    let mut patched = target.clone();
    for operation in operations.0 {
        if let json_patch::PatchOperation::Test(test) = &operation
            && test.value.is_null()
            && patched.pointer(test.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(&mut patched, &[operation]).map_err(|e| e.to_string())?;
    }
    *target = patched;
    Ok(())
}

/// The `fieldsV1` set of the fields a value sets: `f:<field>` for map keys and, in lists with a
/// merge key, `k:{"<key>":<value>}` for their items. Leaves are `{}`.
pub fn field_set(value: &Value) -> Value {
    fn walk(field: &str, value: &Value) -> Value {
        match value {
            Value::Object(map) if !map.is_empty() => {
                let mut set = Map::new();
                for (k, v) in map {
                    set.insert(format!("f:{k}"), walk(k, v));
                }
                Value::Object(set)
            }
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                let Some(key) = merge_key(field, items) else {
                    return json!({});
                };
                let mut set = Map::new();
                for item in items {
                    let id = json!({ key: item.get(key).cloned().unwrap_or(Value::Null) });
                    let mut entry = walk("", item);
                    if let Value::Object(m) = &mut entry {
                        m.insert(".".to_owned(), json!({}));
                    }
                    set.insert(format!("k:{id}"), entry);
                }
                Value::Object(set)
            }
            _ => json!({}),
        }
    }
    walk("", value)
}

/// The field set of the fields `new` sets with a value different from `old`'s.
pub fn changed_field_set(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(before), Value::Object(after)) => {
            let mut set = Map::new();
            for (k, v) in after {
                let changed = match before.get(k) {
                    Some(b) if b == v => continue,
                    Some(b) => changed_field_set(b, v),
                    None => field_set(v),
                };
                set.insert(format!("f:{k}"), changed);
            }
            Value::Object(set)
        }
        _ => json!({}),
    }
}

/// The union of two field sets.
pub fn union_field_sets(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut out = x.clone();
            for (k, v) in y {
                let merged = match out.get(k) {
                    Some(existing) => union_field_sets(existing, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, other) => other.clone(),
    }
}

/// Removes from `target` the fields of the field set `previous` that neither `now` nor `others`
/// holds: what server-side apply does with the fields a manager applied before and applies no
/// more, unless another manager owns them too.
pub fn remove_disowned(target: &mut Value, previous: &Value, now: &Value, others: &Value) {
    let Value::Object(previous) = previous else {
        return;
    };
    let empty = json!({});
    for (key, set) in previous {
        let now = now.get(key);
        let others = others.get(key);
        let keep = now.is_some() || others.is_some();
        let (now, others) = (now.unwrap_or(&empty), others.unwrap_or(&empty));
        if let (Some(field), Value::Object(map)) = (key.strip_prefix("f:"), &mut *target) {
            if !keep {
                map.remove(field);
            } else if let Some(child) = map.get_mut(field) {
                remove_disowned(child, set, now, others);
            }
        } else if let (Some(id), Value::Array(items)) = (key.strip_prefix("k:"), &mut *target) {
            let Ok(Value::Object(id)) = serde_json::from_str::<Value>(id) else {
                continue;
            };
            let identified = |item: &Value| id.iter().all(|(k, v)| item.get(k) == Some(v));
            if !keep {
                items.retain(|item| !identified(item));
            } else if let Some(item) = items.iter_mut().find(|item| identified(item)) {
                remove_disowned(item, set, now, others);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_for_null_passes_on_a_missing_path_and_patches_are_all_or_nothing() {
        let mut object = serde_json::json!({"metadata": {"name": "a"}});
        json_patch(
            &mut object,
            &serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["x"]},
            ]),
        )
        .unwrap();
        assert_eq!(object["metadata"]["finalizers"], serde_json::json!(["x"]));
        let before = object.clone();
        let failed = json_patch(
            &mut object,
            &serde_json::json!([
                {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}},
                {"op": "test", "path": "/metadata/finalizers", "value": null},
            ]),
        );
        assert!(failed.is_err());
        assert_eq!(object, before);
    }

    #[test]
    fn fields_a_manager_stops_applying_go_unless_another_owns_them() {
        let mut status = json!({"status": {
            "phase": "Done", "pending": [{"name": "a"}], "note": "x",
            "volumes": [{"name": "v1", "size": 1}, {"name": "v2", "size": 2}],
        }});
        let previous = field_set(&status);
        let now = field_set(
            &json!({"status": {"phase": "Done", "volumes": [{"name": "v1", "size": 1}]}}),
        );
        let others = json!({"f:status": {"f:note": {}}});
        remove_disowned(&mut status, &previous, &now, &others);
        assert_eq!(
            status,
            json!({"status": {"phase": "Done", "note": "x", "volumes": [{"name": "v1", "size": 1}]}})
        );
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_merges_lists_by_their_merge_key() {
        let mut pod = json!({
            "metadata": {"finalizers": ["a"]},
            "spec": {"containers": [{"name": "c1", "image": "x"}, {"name": "c2", "image": "y"}],
                     "tolerations": [{"key": "t"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}
        });
        let patch = json!({
            "metadata": {"finalizers": ["b"]},
            "spec": {"containers": [{"name": "c2", "image": "z"}, {"name": "c1", "$patch": "delete"}],
                     "tolerations": [{"key": "u"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Scheduled", "status": "True"}]}
        });
        strategic_merge(&mut pod, &patch).unwrap();
        assert_eq!(
            pod,
            json!({
                "metadata": {"finalizers": ["a", "b"]},
                "spec": {"containers": [{"name": "c2", "image": "z"}], "tolerations": [{"key": "u"}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Scheduled", "status": "True"}]}
            })
        );
        strategic_merge(
            &mut pod,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(pod["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn field_sets_name_every_set_field() {
        let set =
            field_set(&json!({"spec": {"a": 1, "containers": [{"name": "c", "image": "i"}]}}));
        assert_eq!(
            set,
            json!({"f:spec": {"f:a": {}, "f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:name": {}, "f:image": {}}}}})
        );
        let changed = changed_field_set(
            &json!({"a": 1, "b": {"c": 1, "d": 2}}),
            &json!({"a": 1, "b": {"c": 2, "d": 2}}),
        );
        assert_eq!(changed, json!({"f:b": {"f:c": {}}}));
    }
}
