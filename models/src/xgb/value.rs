//! The document tree that both readers (JSON text and UBJSON) produce, and the typed
//! accessors the model builder uses. Only the shapes XGBoost writes are represented.

use super::XgbError;

/// Deepest nesting either reader accepts. An XGBoost model nests five levels deep; the cap
/// keeps a hostile file from exhausting the stack.
pub(crate) const MAX_DEPTH: usize = 32;

/// A parsed value. Numbers keep the width XGBoost gives them: floats are `f32` (XGBoost's
/// JSON numbers are `float`), integers `i64`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f32),
    Str(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
    /// A UBJSON typed float array (`[$d#`), or `[$D#` narrowed to `f32` as XGBoost does.
    Floats(Vec<f32>),
    /// A UBJSON typed integer array (`[$i#`, `$U`, `$I`, `$l`, `$L`).
    Ints(Vec<i64>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Array(_) | Value::Floats(_) | Value::Ints(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// Rejects an object whose keys repeat: XGBoost keeps one of them silently, a strict reader
/// should not guess which.
pub(crate) fn check_unique_keys(fields: &[(String, Value)]) -> Result<(), String> {
    if fields.len() < 2 {
        return Ok(());
    }
    let mut keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    for pair in keys.windows(2) {
        if pair[0] == pair[1] {
            return Err(format!("duplicate key \"{}\"", pair[0]));
        }
    }
    Ok(())
}

/// A value together with its path in the document, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At<'a> {
    pub(crate) value: &'a Value,
    pub(crate) path: &'a str,
}

fn wrong(path: &str, expected: &'static str, value: &Value) -> XgbError {
    XgbError::Schema {
        path: path.to_string(),
        msg: format!("expected {expected}, found {}", value.kind()),
    }
}

impl<'a> At<'a> {
    pub(crate) fn root(value: &'a Value) -> Self {
        At { value, path: "" }
    }

    pub(crate) fn fields(&self) -> Result<&'a [(String, Value)], XgbError> {
        match self.value {
            Value::Object(f) => Ok(f),
            v => Err(wrong(self.path, "an object", v)),
        }
    }

    /// The member `key` of this object, if present.
    pub(crate) fn get(&self, key: &str) -> Result<Option<&'a Value>, XgbError> {
        Ok(self
            .fields()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v))
    }

    /// The member `key` of this object; its path is returned for later messages.
    pub(crate) fn req(&self, key: &str) -> Result<(&'a Value, String), XgbError> {
        let path = format!("{}/{}", self.path, key);
        match self.get(key)? {
            Some(v) => Ok((v, path)),
            None => Err(XgbError::Schema {
                path,
                msg: "missing".to_string(),
            }),
        }
    }

    pub(crate) fn str(&self) -> Result<&'a str, XgbError> {
        match self.value {
            Value::Str(s) => Ok(s),
            v => Err(wrong(self.path, "a string", v)),
        }
    }

    /// An integer that XGBoost stores as a decimal string (`"num_feature": "16"`).
    pub(crate) fn int_str(&self) -> Result<i64, XgbError> {
        let s = self.str()?;
        s.parse::<i64>().map_err(|_| XgbError::Schema {
            path: self.path.to_string(),
            msg: format!("expected an integer in a string, found \"{s}\""),
        })
    }

    pub(crate) fn len(&self) -> Result<usize, XgbError> {
        match self.value {
            Value::Array(a) => Ok(a.len()),
            Value::Floats(a) => Ok(a.len()),
            Value::Ints(a) => Ok(a.len()),
            v => Err(wrong(self.path, "an array", v)),
        }
    }

    pub(crate) fn array(&self) -> Result<&'a [Value], XgbError> {
        match self.value {
            Value::Array(a) => Ok(a),
            v => Err(wrong(self.path, "an array", v)),
        }
    }

    /// An array of floats: a typed float array, or a generic array of numbers.
    pub(crate) fn floats(&self) -> Result<Vec<f32>, XgbError> {
        match self.value {
            Value::Floats(a) => Ok(a.clone()),
            Value::Array(a) => a
                .iter()
                .map(|v| match v {
                    Value::Float(f) => Ok(*f),
                    // An integer where a float is expected: exact for the values XGBoost
                    // writes, and rounded to nearest otherwise, as a cast would.
                    Value::Int(i) => Ok(*i as f32),
                    v => Err(wrong(self.path, "an array of numbers", v)),
                })
                .collect(),
            v => Err(wrong(self.path, "an array of numbers", v)),
        }
    }

    /// An array of integers: a typed integer array, or a generic array of integers (booleans
    /// count as 0/1, as XGBoost reads `default_left`).
    pub(crate) fn ints(&self) -> Result<Vec<i64>, XgbError> {
        match self.value {
            Value::Ints(a) => Ok(a.clone()),
            Value::Array(a) => a
                .iter()
                .map(|v| match v {
                    Value::Int(i) => Ok(*i),
                    Value::Bool(b) => Ok(i64::from(*b)),
                    v => Err(wrong(self.path, "an array of integers", v)),
                })
                .collect(),
            // An empty generic array may come back from a reader as either shape.
            Value::Floats(a) if a.is_empty() => Ok(Vec::new()),
            v => Err(wrong(self.path, "an array of integers", v)),
        }
    }
}
