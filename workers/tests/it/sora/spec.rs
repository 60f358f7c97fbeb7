//! Checks recorded requests against OpenAI's Videos API spec, read from the repository copy
//! (`docs/specs/openai-videos.openapi.json`): the path and method exist, every query and path
//! parameter is declared and matches its schema, and the body matches the operation's
//! request body schema for its media type (a multipart form as an object of its fields, file
//! parts as binary strings). The spec leaves objects open; the check closes the request body
//! (`additionalProperties: false`) because a field the spec does not name is not part of the
//! contract and a compatible gateway may reject it.

use serde_json::{json, Map, Value};

use super::fake::{Recorded, Sent};

/// Path parameters by name, as matched.
type PathValues = Vec<(String, String)>;

pub struct Spec {
    document: Value,
}

/// What a request was matched to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub id: String,
}

impl Spec {
    pub fn load() -> Spec {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/specs/openai-videos.openapi.json"
        );
        let text = std::fs::read_to_string(path).expect("the spec copy in docs/specs");
        Spec {
            document: serde_json::from_str(&text).expect("the spec is JSON"),
        }
    }

    /// The operation `request` invokes, or every way it departs from the spec.
    pub fn check(&self, request: &Recorded) -> Result<Operation, Vec<String>> {
        let mut problems = Vec::new();
        let base = self.document["servers"][0]["url"]
            .as_str()
            .unwrap_or_default();
        let base_path = base.split_once("://").map_or("", |(_, rest)| {
            rest.find('/').map_or("", |slash| &rest[slash..])
        });
        let Some(path) = request.path.strip_prefix(base_path) else {
            return Err(vec![format!(
                "{} is outside the server URL {base}",
                request.path
            )]);
        };
        let Some((template, path_values)) = self.path_template(path) else {
            return Err(vec![format!("no path in the spec matches {path}")]);
        };
        let method = request.method.to_ascii_lowercase();
        let Some(operation) = self.document["paths"][&template].get(&method) else {
            return Err(vec![format!(
                "{} {template} is not in the spec",
                request.method
            )]);
        };
        let parameters = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (name, value) in &path_values {
            self.check_parameter(&parameters, "path", name, value, &mut problems);
        }
        for (i, (name, value)) in request.query.iter().enumerate() {
            if request.query[..i].iter().any(|(other, _)| other == name) {
                problems.push(format!("query parameter {name} is repeated"));
            }
            self.check_parameter(&parameters, "query", name, value, &mut problems);
        }
        for parameter in parameters.iter().filter(|p| p["required"] == true) {
            let name = parameter["name"].as_str().unwrap_or_default();
            let present = match parameter["in"].as_str() {
                Some("path") => path_values.iter().any(|(n, _)| n == name),
                Some("query") => request.query.iter().any(|(n, _)| n == name),
                _ => true,
            };
            if !present {
                problems.push(format!("required parameter {name} is missing"));
            }
        }
        self.check_body(operation, request, &mut problems);
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if problems.is_empty() {
            Ok(Operation { id })
        } else {
            Err(problems)
        }
    }

    /// Checks a successful JSON answer against the operation's 200 response schema: proof
    /// that the fake answers in the documented format.
    pub fn check_answer(&self, request: &Recorded, operation: &Operation) -> Vec<String> {
        let Some(answer) = &request.answer else {
            return Vec::new();
        };
        if request.status != 200 {
            return Vec::new();
        }
        let operation = self.document["paths"]
            .as_object()
            .into_iter()
            .flat_map(|paths| paths.values())
            .filter_map(Value::as_object)
            .flat_map(|methods| methods.values())
            .find(|o| o["operationId"] == operation.id.as_str());
        let schema =
            operation.map(|o| &o["responses"]["200"]["content"]["application/json"]["schema"]);
        match schema {
            Some(schema) if !schema.is_null() => self.violations(schema.clone(), answer),
            _ => vec![format!(
                "{} has no JSON response in the spec",
                operation_name(operation)
            )],
        }
    }

    /// The spec path whose segments match, preferring literal segments over parameters.
    fn path_template(&self, path: &str) -> Option<(String, PathValues)> {
        let actual: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut best: Option<(usize, String, PathValues)> = None;
        for template in self.document["paths"].as_object()?.keys() {
            let expected: Vec<&str> = template.trim_start_matches('/').split('/').collect();
            if expected.len() != actual.len() {
                continue;
            }
            let mut values = Vec::new();
            let mut literals = 0;
            let matched = expected.iter().zip(&actual).all(|(e, a)| {
                match e.strip_prefix('{').and_then(|e| e.strip_suffix('}')) {
                    Some(name) if !a.is_empty() => {
                        values.push((name.to_owned(), percent_decode(a)));
                        true
                    }
                    Some(_) => false,
                    None => {
                        literals += 1;
                        e == a
                    }
                }
            });
            if matched && best.as_ref().is_none_or(|(l, ..)| literals > *l) {
                best = Some((literals, template.clone(), values));
            }
        }
        best.map(|(_, template, values)| (template, values))
    }

    fn check_parameter(
        &self,
        parameters: &[Value],
        location: &str,
        name: &str,
        value: &str,
        problems: &mut Vec<String>,
    ) {
        let Some(parameter) = parameters
            .iter()
            .find(|p| p["in"] == location && p["name"] == name)
        else {
            problems.push(format!("{location} parameter {name} is not declared"));
            return;
        };
        let schema = &parameter["schema"];
        // Query strings carry text: read it as the type the schema declares.
        let instance = match self.resolve(schema)["type"].as_str() {
            Some("integer") => value
                .parse::<i64>()
                .map_or_else(|_| json!(value), |n| json!(n)),
            Some("number") => value
                .parse::<f64>()
                .map_or_else(|_| json!(value), |n| json!(n)),
            Some("boolean") => value
                .parse::<bool>()
                .map_or_else(|_| json!(value), |b| json!(b)),
            _ => json!(value),
        };
        for violation in self.violations(schema.clone(), &instance) {
            problems.push(format!("{location} parameter {name}={value}: {violation}"));
        }
    }

    fn check_body(&self, operation: &Value, request: &Recorded, problems: &mut Vec<String>) {
        let body = &operation["requestBody"];
        if body.is_null() {
            if !matches!(request.body, Sent::Empty) {
                problems.push("the operation takes no body but one was sent".into());
            }
            return;
        }
        if matches!(request.body, Sent::Empty) {
            if body["required"] == true {
                problems.push("the required body is missing".into());
            }
            return;
        }
        let media_type = request
            .content_type
            .as_deref()
            .and_then(|t| t.split(';').next())
            .unwrap_or_default()
            .trim();
        let Some(schema) = body["content"].get(media_type).map(|c| &c["schema"]) else {
            problems.push(format!("the operation takes no {media_type:?} body"));
            return;
        };
        let instance = match &request.body {
            Sent::Json(value) if media_type == "application/json" => value.clone(),
            Sent::Multipart(parts) if media_type == "multipart/form-data" => {
                let mut fields = Map::new();
                for part in parts {
                    let value = match &part.file_name {
                        // A file part is a binary string to the schema.
                        Some(_) => format!("<{} bytes of binary>", part.bytes.len()),
                        None => String::from_utf8_lossy(&part.bytes).into_owned(),
                    };
                    if fields.insert(part.name.clone(), json!(value)).is_some() {
                        problems.push(format!("form field {} is repeated", part.name));
                    }
                }
                Value::Object(fields)
            }
            Sent::Other(bytes) => {
                let length = bytes.len();
                problems.push(format!("{length} bytes that do not parse as {media_type}"));
                return;
            }
            other => {
                problems.push(format!("a body that is not {media_type}: {other:?}"));
                return;
            }
        };
        let mut closed = self.resolve(schema).clone();
        if let Some(object) = closed.as_object_mut() {
            if object.contains_key("properties") {
                object
                    .entry("additionalProperties")
                    .or_insert(Value::Bool(false));
            }
        }
        for violation in self.violations(closed, &instance) {
            problems.push(format!("{media_type} body: {violation}"));
        }
    }

    /// Follows a local `$ref` (the only kind the spec uses).
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => self.document.pointer(pointer).unwrap_or(&Value::Null),
            None => schema,
        }
    }

    /// JSON Schema 2020-12 validation (OpenAPI 3.1's dialect) with the spec's components in
    /// reach of `#/components/...` references.
    fn violations(&self, schema: Value, instance: &Value) -> Vec<String> {
        let mut root = match schema {
            Value::Object(object) => object,
            other => return vec![format!("not a schema: {other}")],
        };
        root.insert("components".into(), self.document["components"].clone());
        let validator = match jsonschema::draft202012::new(&Value::Object(root)) {
            Ok(validator) => validator,
            Err(error) => return vec![format!("the spec's schema does not compile: {error}")],
        };
        validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }
}

fn operation_name(operation: Option<&Value>) -> String {
    operation
        .and_then(|o| o["operationId"].as_str())
        .unwrap_or("an unknown operation")
        .to_owned()
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}
