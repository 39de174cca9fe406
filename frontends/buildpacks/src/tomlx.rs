//! Reading TOML files with errors that name the file and the key.
//!
//! Every CNB file the frontend reads (`buildpack.toml`, `order.toml`,
//! `project.toml`, detect plans, `<layer>.toml`, `launch.toml`,
//! `build.toml`) goes through [`Doc`], so a wrong type or a missing key is
//! reported as `FILE: key.path: what is wrong`.

use kiln_frontend::{FrontendError, Location};
use toml::{Table, Value};

/// A parsed TOML file and the name it is reported under.
#[derive(Debug, Clone)]
pub struct Doc {
    /// File name as the user knows it (`order.toml`,
    /// `buildpacks/samples_x/1.0.0/buildpack.toml`).
    pub file: String,
    /// The top-level table.
    pub table: Table,
}

/// An error about `file` without a line.
pub fn file_err(file: &str, msg: impl std::fmt::Display) -> FrontendError {
    FrontendError::new(format!("{file}: {msg}"))
}

impl Doc {
    /// Parses `data` as TOML. A syntax error carries the line number.
    pub fn parse(file: &str, data: &[u8]) -> Result<Doc, FrontendError> {
        let text = std::str::from_utf8(data).map_err(|_| file_err(file, "not valid UTF-8"))?;
        match text.parse::<Table>() {
            Ok(table) => Ok(Doc {
                file: file.to_string(),
                table,
            }),
            Err(e) => {
                let msg = e.message().trim().to_string();
                match e.span() {
                    Some(span) => {
                        let line = text
                            .get(..span.start.min(text.len()))
                            .map(|s| s.matches('\n').count() + 1)
                            .unwrap_or(1);
                        Err(FrontendError::at(
                            format!("{file}:{line}: invalid TOML: {msg}"),
                            Location::line(file, line as u32),
                        ))
                    }
                    None => Err(file_err(file, format!("invalid TOML: {msg}"))),
                }
            }
        }
    }

    /// A view of the top-level table.
    pub fn root(&self) -> View<'_> {
        View {
            file: &self.file,
            path: String::new(),
            table: &self.table,
        }
    }
}

/// A table inside a [`Doc`], with its key path for messages.
#[derive(Debug, Clone)]
pub struct View<'a> {
    file: &'a str,
    path: String,
    table: &'a Table,
}

impl<'a> View<'a> {
    /// The key path of `key` in this table (`io.buildpacks.include`).
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// An error about `key` of this table.
    pub fn err(&self, key: &str, msg: impl std::fmt::Display) -> FrontendError {
        file_err(self.file, format!("{}: {msg}", self.key_path(key)))
    }

    /// An error about this table itself.
    pub fn err_here(&self, msg: impl std::fmt::Display) -> FrontendError {
        if self.path.is_empty() {
            file_err(self.file, msg)
        } else {
            file_err(self.file, format!("{}: {msg}", self.path))
        }
    }

    /// The file name.
    pub fn file(&self) -> &'a str {
        self.file
    }

    /// The raw table.
    pub fn table(&self) -> &'a Table {
        self.table
    }

    /// Whether `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.table.get(key)
    }

    /// An optional string.
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, FrontendError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.err(key, format!("must be a string, not {}", v.type_str()))),
        }
    }

    /// A required string.
    pub fn str(&self, key: &str) -> Result<&'a str, FrontendError> {
        self.opt_str(key)?
            .ok_or_else(|| self.err(key, "is required"))
    }

    /// An optional boolean (absent = `false`).
    pub fn bool_or_false(&self, key: &str) -> Result<bool, FrontendError> {
        match self.table.get(key) {
            None => Ok(false),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(v) => Err(self.err(key, format!("must be a boolean, not {}", v.type_str()))),
        }
    }

    /// An optional array of strings (absent = empty).
    pub fn str_list(&self, key: &str) -> Result<Vec<String>, FrontendError> {
        match self.table.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.err(
                        &format!("{key}[{i}]"),
                        format!("must be a string, not {}", other.type_str()),
                    )),
                })
                .collect(),
            Some(v) => Err(self.err(
                key,
                format!("must be an array of strings, not {}", v.type_str()),
            )),
        }
    }

    /// An optional sub-table.
    pub fn opt_table(&self, key: &str) -> Result<Option<View<'a>>, FrontendError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(View {
                file: self.file,
                path: self.key_path(key),
                table: t,
            })),
            Some(v) => Err(self.err(key, format!("must be a table, not {}", v.type_str()))),
        }
    }

    /// The elements of an array of tables (`[[key]]`), absent = empty. Each
    /// element's path is `key[i]`.
    pub fn tables(&self, key: &str) -> Result<Vec<View<'a>>, FrontendError> {
        match self.table.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Table(t) => Ok(View {
                        file: self.file,
                        path: format!("{}[{i}]", self.key_path(key)),
                        table: t,
                    }),
                    other => Err(self.err(
                        &format!("{key}[{i}]"),
                        format!("must be a table, not {}", other.type_str()),
                    )),
                })
                .collect(),
            Some(v) => Err(self.err(
                key,
                format!("must be an array of tables, not {}", v.type_str()),
            )),
        }
    }
}

/// A TOML value as JSON (datetimes become strings).
pub fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Integer(i) => serde_json::Value::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Table(t) => table_to_json(t),
    }
}

/// A TOML table as a JSON object.
pub fn table_to_json(t: &Table) -> serde_json::Value {
    serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_file_and_line() {
        let e = Doc::parse("order.toml", b"[[order]]\n[[order.group]]\nid = \n").unwrap_err();
        assert!(e.message.starts_with("order.toml:3: invalid TOML"), "{e}");
        assert_eq!(e.location.unwrap().start_line, 3);
    }

    #[test]
    fn type_errors_name_the_key() {
        let d = Doc::parse("p.toml", b"[a]\nb = 1\nl = [1]\n").unwrap();
        let a = d.root().opt_table("a").unwrap().unwrap();
        assert_eq!(
            a.str("b").unwrap_err().message,
            "p.toml: a.b: must be a string, not integer"
        );
        assert_eq!(a.str("c").unwrap_err().message, "p.toml: a.c: is required");
        assert_eq!(
            a.str_list("l").unwrap_err().message,
            "p.toml: a.l[0]: must be a string, not integer"
        );
    }

    #[test]
    fn json_conversion() {
        let d = Doc::parse("x", b"a = 1\nb = [true, \"s\"]\n[c]\nd = 1.5\n").unwrap();
        assert_eq!(
            table_to_json(&d.table).to_string(),
            r#"{"a":1,"b":[true,"s"],"c":{"d":1.5}}"#
        );
    }

    #[test]
    fn invalid_utf8() {
        assert!(Doc::parse("x", &[0xff, 0xfe]).is_err());
    }
}
