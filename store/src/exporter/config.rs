//! The image config the exporter writes: the frontend's
//! `containerimage.config` with `rootfs`, `history` and `created` made
//! consistent with the layers actually exported.

use serde_json::{Map, Value, json};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Comment on history entries kiln adds for layers the config did not describe.
pub const HISTORY_COMMENT: &str = "kiln.exporter.image.v0";

/// `created` when no `SOURCE_DATE_EPOCH` is given: fixed, never the wall clock.
pub const FIXED_CREATED: &str = "1970-01-01T00:00:00Z";

/// The Go/OCI architecture name of the machine kiln runs on.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The config used when the frontend gave none (as BuildKit's empty image).
pub fn empty_config() -> Map<String, Value> {
    let v = json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/"
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Format unix seconds as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parse the `YYYY-MM-DDTHH:MM:SS` start of an RFC 3339 time as unix
/// seconds (fractions and offsets ignored: this only clamps).
pub fn parse_rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil date (inverse of the algorithm in `rfc3339`).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + s)
}

/// Build the final config JSON. `layers` has one entry per snapshot of the
/// chain, base first: `Some(diff_id)` for a layer that is exported, `None`
/// for an empty diff that is skipped.
///
/// History: entries not marked `empty_layer` are matched to the chain in
/// order. Missing ones are added at the front (they describe base layers);
/// surplus ones are marked empty from the front. The entry of a skipped empty
/// diff is marked `empty_layer`. `created` is `SOURCE_DATE_EPOCH` or
/// [`FIXED_CREATED`].
pub fn finalize_config(
    config: Option<&[u8]>,
    layers: &[Option<Digest>],
    epoch: Option<i64>,
) -> Result<Vec<u8>> {
    let mut cfg = match config {
        None => empty_config(),
        Some(b) if b.iter().all(|c| c.is_ascii_whitespace()) => empty_config(),
        Some(b) => match serde_json::from_slice::<Value>(b).map_err(|source| Error::Json {
            what: "image config",
            source,
        })? {
            Value::Object(m) => m,
            _ => {
                return Err(Error::InvalidImage(
                    "image config is not a JSON object".into(),
                ));
            }
        },
    };
    let created = epoch
        .map(rfc3339)
        .unwrap_or_else(|| FIXED_CREATED.to_owned());

    let mut history: Vec<Value> = match cfg.get("history") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    let is_empty = |h: &Value| {
        h.get("empty_layer")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut non_empty = history.iter().filter(|h| !is_empty(h)).count();
    if non_empty > layers.len() {
        for h in history.iter_mut() {
            if non_empty == layers.len() {
                break;
            }
            if !is_empty(h)
                && let Value::Object(m) = h
            {
                m.insert("empty_layer".into(), Value::Bool(true));
                non_empty -= 1;
            }
        }
    }
    let missing = layers.len() - non_empty;
    let mut added: Vec<Value> = (0..missing)
        .map(|_| json!({"created": created, "created_by": "", "comment": HISTORY_COMMENT}))
        .collect();
    added.extend(history);
    let mut history = added;
    let mut idx = 0;
    for h in history.iter_mut() {
        if is_empty(h) {
            continue;
        }
        if layers.get(idx).is_some_and(|l| l.is_none())
            && let Value::Object(m) = h
        {
            m.insert("empty_layer".into(), Value::Bool(true));
        }
        idx += 1;
    }

    // With SOURCE_DATE_EPOCH no history time may be later than it.
    if let Some(e) = epoch {
        for h in history.iter_mut() {
            if let Value::Object(m) = h {
                let late = match m.get("created").and_then(Value::as_str) {
                    Some(t) => parse_rfc3339(t).is_none_or(|t| t > e),
                    None => false,
                };
                if late {
                    m.insert("created".into(), Value::String(created.clone()));
                }
            }
        }
    }
    let diff_ids: Vec<Value> = layers
        .iter()
        .flatten()
        .map(|d| Value::String(d.to_string()))
        .collect();
    cfg.insert("created".into(), Value::String(created));
    cfg.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );
    cfg.insert("history".into(), Value::Array(history));
    if !cfg.contains_key("architecture") {
        cfg.insert("architecture".into(), Value::String(host_arch().into()));
    }
    if !cfg.contains_key("os") {
        cfg.insert("os".into(), Value::String("linux".into()));
    }
    serde_json::to_vec(&Value::Object(cfg)).map_err(|source| Error::Json {
        what: "image config",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        for t in [0, 1, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn history_matches_layers() {
        let d = Digest::of_bytes(b"x");
        let cfg = br#"{"architecture":"amd64","os":"linux","config":{},"history":[
            {"created_by":"base","created":"1970-01-01T00:00:05Z"},{"created_by":"ENV a=b","empty_layer":true},
            {"created_by":"RUN true","created":"2030-01-01T00:00:00Z"}]}"#;
        let out = finalize_config(
            Some(cfg),
            &[Some(d.clone()), None, Some(d.clone())],
            Some(10),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["created"], "1970-01-01T00:00:10Z");
        assert_eq!(v["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        let h = v["history"].as_array().unwrap();
        assert_eq!(h.len(), 4);
        assert_eq!(h[0]["comment"], HISTORY_COMMENT);
        assert_eq!(h[1]["created_by"], "base");
        assert_eq!(h[1]["empty_layer"], true); // second chain layer is empty
        assert_eq!(h[3]["created_by"], "RUN true");
        assert_eq!(h[3]["created"], "1970-01-01T00:00:10Z");
        assert_eq!(h[1]["created"], "1970-01-01T00:00:05Z");
        assert!(h[3].get("empty_layer").is_none());
        let non_empty = h.iter().filter(|e| e.get("empty_layer").is_none()).count();
        assert_eq!(non_empty, 2);
        // Key order of the input is kept.
        assert!(
            std::str::from_utf8(&out)
                .unwrap()
                .starts_with(r#"{"architecture":"amd64","os":"linux""#)
        );
        let none = finalize_config(None, &[], None).unwrap();
        let v: Value = serde_json::from_slice(&none).unwrap();
        assert_eq!(v["created"], FIXED_CREATED);
        assert_eq!(v["rootfs"]["type"], "layers");
    }
}
