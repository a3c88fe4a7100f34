//! QMP wire format: parsing one line from QEMU and encoding commands.
//!
//! [`parse_message`] is a pure function (no I/O) so it can be fuzzed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::MAX_MESSAGE_SIZE;
use crate::events::Event;

/// Why a line from QEMU could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The line is empty or only whitespace.
    #[error("Empty message")]
    Empty,
    /// The line is longer than [`MAX_MESSAGE_SIZE`].
    #[error("Message larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The line is not valid UTF-8.
    #[error("Message is not UTF-8 (bad byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The line is not valid JSON.
    #[error("Malformed JSON: {0}")]
    Malformed(String),
    /// The JSON value is not an object.
    #[error("Message is not a JSON object")]
    NotAnObject,
    /// The object is none of greeting, return, error or event.
    #[error("Unknown message kind (keys: {keys})")]
    UnknownKind {
        /// The keys of the object, comma separated.
        keys: String,
    },
    /// A known message kind has a field of the wrong type.
    #[error("Invalid field {field} in {kind} message")]
    InvalidField {
        /// Message kind (`greeting`, `return`, `error`, `event`).
        kind: &'static str,
        /// Offending field.
        field: &'static str,
    },
    /// The connection ended in the middle of a message.
    #[error("Connection closed in the middle of a message")]
    Truncated,
    /// A message arrived that is not allowed at this point (e.g. a second greeting).
    #[error("Unexpected {0} message")]
    Unexpected(&'static str),
}

/// A QEMU version triple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QemuVersion {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Micro version.
    pub micro: u64,
}

/// The greeting QEMU sends when a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// QEMU version.
    pub version: QemuVersion,
    /// Distribution package string (may be empty).
    pub package: String,
    /// Capabilities offered (e.g. `oob`).
    pub capabilities: Vec<String>,
}

/// One message from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Greeting, first line of a connection.
    Greeting(Greeting),
    /// Successful reply.
    Return {
        /// Echoed command id, if any.
        id: Option<Value>,
        /// The `return` value.
        value: Value,
    },
    /// Error reply.
    Error {
        /// Echoed command id, if any.
        id: Option<Value>,
        /// Error class.
        class: String,
        /// Error description.
        desc: String,
    },
    /// Asynchronous event.
    Event(Event),
}

/// Parses one QMP line (without or with its trailing `\r\n`).
///
/// Never panics; every malformed input yields a [`ProtocolError`].
pub fn parse_message(line: &[u8]) -> Result<Message, ProtocolError> {
    if line.len() > MAX_MESSAGE_SIZE {
        return Err(ProtocolError::TooLarge {
            limit: MAX_MESSAGE_SIZE,
        });
    }
    let text = std::str::from_utf8(line).map_err(|e| ProtocolError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(ProtocolError::Empty);
    }
    // One pass, straight to the message's shape. Anything it cannot take
    // (not an object, bad JSON, no known kind) goes through the generic
    // parse below, which names the fault.
    if let Ok(env) = serde_json::from_str::<Envelope>(text)
        && let Some(message) = env.into_message()
    {
        return message;
    }
    parse_generic(text)
}

/// The members of a QMP message, read in one pass without building a map.
#[derive(Default)]
struct Envelope {
    ret: Option<Value>,
    id: Option<Value>,
    error: Option<Value>,
    event: Option<Value>,
    timestamp: Option<Value>,
    data: Option<Value>,
    qmp: Option<Value>,
}

/// The member names [`Envelope`] keeps; others are skipped unparsed.
#[derive(Deserialize)]
enum Field {
    #[serde(rename = "return")]
    Return,
    #[serde(rename = "id")]
    Id,
    #[serde(rename = "error")]
    Error,
    #[serde(rename = "event")]
    Event,
    #[serde(rename = "timestamp")]
    Timestamp,
    #[serde(rename = "data")]
    Data,
    #[serde(rename = "QMP")]
    Qmp,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Envelope;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a QMP message object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Envelope, A::Error> {
                let mut env = Envelope::default();
                // A repeated member keeps its last value, as a JSON map would.
                while let Some(field) = map.next_key::<Field>()? {
                    let slot = match field {
                        Field::Return => &mut env.ret,
                        Field::Id => &mut env.id,
                        Field::Error => &mut env.error,
                        Field::Event => &mut env.event,
                        Field::Timestamp => &mut env.timestamp,
                        Field::Data => &mut env.data,
                        Field::Qmp => &mut env.qmp,
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(env)
            }
        }
        d.deserialize_map(V)
    }
}

impl Envelope {
    /// The message, in the same precedence as [`parse_generic`]; `None`
    /// when the object is of no known kind.
    fn into_message(self) -> Option<Result<Message, ProtocolError>> {
        if let Some(value) = self.ret {
            return Some(Ok(Message::Return { id: self.id, value }));
        }
        if let Some(err) = self.error {
            return Some(parse_error(err, self.id));
        }
        if let Some(name) = self.event {
            return Some(parse_event(name, self.timestamp, self.data));
        }
        self.qmp.map(parse_greeting)
    }
}

/// Parses through a generic JSON value: slower, and names every fault.
fn parse_generic(text: &str) -> Result<Message, ProtocolError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(ProtocolError::NotAnObject);
    };
    if let Some(ret) = obj.remove("return") {
        return Ok(Message::Return {
            id: obj.remove("id"),
            value: ret,
        });
    }
    if let Some(err) = obj.remove("error") {
        return parse_error(err, obj.remove("id"));
    }
    if let Some(name) = obj.remove("event") {
        return parse_event(name, obj.remove("timestamp"), obj.remove("data"));
    }
    if let Some(greeting) = obj.remove("QMP") {
        return parse_greeting(greeting);
    }
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    Err(ProtocolError::UnknownKind {
        keys: keys.join(","),
    })
}

fn parse_error(err: Value, id: Option<Value>) -> Result<Message, ProtocolError> {
    const KIND: &str = "error";
    let Value::Object(mut err) = err else {
        return Err(ProtocolError::InvalidField {
            kind: KIND,
            field: "error",
        });
    };
    let class = match err.remove("class") {
        Some(Value::String(s)) => s,
        _ => {
            return Err(ProtocolError::InvalidField {
                kind: KIND,
                field: "class",
            });
        }
    };
    let desc = match err.remove("desc") {
        Some(Value::String(s)) => s,
        None => String::new(),
        Some(_) => {
            return Err(ProtocolError::InvalidField {
                kind: KIND,
                field: "desc",
            });
        }
    };
    Ok(Message::Error { id, class, desc })
}

fn parse_event(
    name: Value,
    timestamp: Option<Value>,
    data: Option<Value>,
) -> Result<Message, ProtocolError> {
    const KIND: &str = "event";
    let Value::String(name) = name else {
        return Err(ProtocolError::InvalidField {
            kind: KIND,
            field: "event",
        });
    };
    let timestamp = match timestamp {
        None => (0, 0),
        Some(Value::Object(ts)) => {
            let seconds = ts.get("seconds").and_then(Value::as_i64);
            let micros = ts.get("microseconds").and_then(Value::as_i64);
            match (seconds, micros) {
                (Some(s), Some(us)) => (s, us),
                _ => {
                    return Err(ProtocolError::InvalidField {
                        kind: KIND,
                        field: "timestamp",
                    });
                }
            }
        }
        Some(_) => {
            return Err(ProtocolError::InvalidField {
                kind: KIND,
                field: "timestamp",
            });
        }
    };
    Ok(Message::Event(Event {
        name,
        data: data.unwrap_or(Value::Null),
        timestamp,
    }))
}

fn parse_greeting(greeting: Value) -> Result<Message, ProtocolError> {
    #[derive(Deserialize)]
    struct Qmp {
        version: VersionInfo,
        #[serde(default)]
        capabilities: Vec<String>,
    }
    #[derive(Deserialize)]
    struct VersionInfo {
        qemu: QemuVersion,
        #[serde(default)]
        package: String,
    }
    let g: Qmp = serde_json::from_value(greeting).map_err(|_| ProtocolError::InvalidField {
        kind: "greeting",
        field: "QMP",
    })?;
    Ok(Message::Greeting(Greeting {
        version: g.version.qemu,
        package: g.version.package,
        capabilities: g.capabilities,
    }))
}

#[derive(Serialize)]
struct InBand<'a> {
    execute: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a Value>,
    id: u64,
}

#[derive(Serialize)]
struct OutOfBand<'a> {
    #[serde(rename = "exec-oob")]
    execute: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a Value>,
    id: u64,
}

/// Appends one encoded command line (JSON plus `\n`) to `out`.
///
/// `oob` selects `exec-oob` instead of `execute`.
pub fn encode_command(
    out: &mut Vec<u8>,
    name: &str,
    arguments: Option<&Value>,
    id: u64,
    oob: bool,
) {
    // Serialising these structs into a Vec cannot fail: all keys are strings
    // and `Value` always serialises.
    let res = if oob {
        serde_json::to_writer(
            &mut *out,
            &OutOfBand {
                execute: name,
                arguments,
                id,
            },
        )
    } else {
        serde_json::to_writer(
            &mut *out,
            &InBand {
                execute: name,
                arguments,
                id,
            },
        )
    };
    debug_assert!(res.is_ok());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn greeting() {
        let line = br#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian"}, "capabilities": ["oob"]}}"#;
        let m = parse_message(line).unwrap();
        assert_eq!(
            m,
            Message::Greeting(Greeting {
                version: QemuVersion {
                    major: 10,
                    minor: 0,
                    micro: 2
                },
                package: "Debian".into(),
                capabilities: vec!["oob".into()],
            })
        );
    }

    #[test]
    fn greeting_bad_version() {
        let line = br#"{"QMP": {"version": {"qemu": "10"}, "capabilities": []}}"#;
        assert_eq!(
            parse_message(line),
            Err(ProtocolError::InvalidField {
                kind: "greeting",
                field: "QMP"
            })
        );
    }

    #[test]
    fn return_with_id_and_crlf() {
        let m = parse_message(b"{\"return\": {\"status\": \"running\"}, \"id\": 7}\r\n").unwrap();
        assert_eq!(
            m,
            Message::Return {
                id: Some(json!(7)),
                value: json!({"status": "running"})
            }
        );
    }

    #[test]
    fn error_reply() {
        let m = parse_message(
            br#"{"id": 3, "error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            Message::Error {
                id: Some(json!(3)),
                class: "CommandNotFound".into(),
                desc: "The command foo has not been found".into()
            }
        );
    }

    #[test]
    fn error_without_class() {
        assert_eq!(
            parse_message(br#"{"error": {"desc": "x"}}"#),
            Err(ProtocolError::InvalidField {
                kind: "error",
                field: "class"
            })
        );
    }

    #[test]
    fn event_with_data() {
        let m = parse_message(br#"{"timestamp": {"seconds": 17, "microseconds": 42}, "event": "DEVICE_DELETED", "data": {"device": "k0"}}"#).unwrap();
        assert_eq!(
            m,
            Message::Event(Event {
                name: "DEVICE_DELETED".into(),
                data: json!({"device": "k0"}),
                timestamp: (17, 42)
            })
        );
    }

    #[test]
    fn event_without_data() {
        let m = parse_message(
            br#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}"#,
        )
        .unwrap();
        let Message::Event(e) = m else {
            panic!("not an event")
        };
        assert_eq!(e.data, Value::Null);
    }

    #[test]
    fn event_bad_timestamp() {
        assert_eq!(
            parse_message(br#"{"timestamp": 5, "event": "STOP"}"#),
            Err(ProtocolError::InvalidField {
                kind: "event",
                field: "timestamp"
            })
        );
    }

    #[test]
    fn malformed() {
        assert!(matches!(
            parse_message(b"{\"return\": "),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            parse_message(b"garbage"),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn not_utf8() {
        assert_eq!(
            parse_message(b"{\"return\": \"\xff\"}"),
            Err(ProtocolError::NotUtf8 { offset: 12 })
        );
    }

    #[test]
    fn not_object_and_unknown() {
        assert_eq!(parse_message(b"[1,2]"), Err(ProtocolError::NotAnObject));
        assert_eq!(
            parse_message(br#"{"b": 1, "a": 2}"#),
            Err(ProtocolError::UnknownKind { keys: "a,b".into() })
        );
        assert_eq!(parse_message(b"  \r\n"), Err(ProtocolError::Empty));
    }

    #[test]
    fn too_large() {
        let big = vec![b' '; MAX_MESSAGE_SIZE + 1];
        assert_eq!(
            parse_message(&big),
            Err(ProtocolError::TooLarge {
                limit: MAX_MESSAGE_SIZE
            })
        );
    }

    /// The one-pass parse and the generic one agree, faults included.
    #[test]
    fn one_pass_matches_generic() {
        let cases: &[&str] = &[
            r#"{"return": {"status": "running", "singlestep": false}, "id": 7}"#,
            r#"{"id": "x", "return": [1, {"a": null}], "extra": {"deep": [1, 2]}}"#,
            r#"{"return": 1, "return": 2, "id": 1, "id": 2}"#,
            r#"{"error": {"class": "GenericError", "desc": "no"}, "id": 4}"#,
            r#"{"error": {"class": 5}}"#,
            r#"{"error": "x", "return": {}}"#,
            r#"{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}"#,
            r#"{"event": 5}"#,
            r#"{"event": "X", "timestamp": {"seconds": "a"}, "data": {}}"#,
            r#"{"QMP": {"version": {"qemu": {"major": 10, "minor": 1, "micro": 0}}}}"#,
            r#"{"QMP": 1}"#,
            r#"{"a": 1, "id": 2}"#,
            r#"{"return": {}"#,
            "[1]",
            "\"s\"",
        ];
        for c in cases {
            assert_eq!(parse_message(c.as_bytes()), parse_generic(c), "{c}");
        }
    }

    #[test]
    fn encode() {
        let mut out = Vec::new();
        encode_command(&mut out, "query-status", None, 1, false);
        encode_command(&mut out, "getfd", Some(&json!({"fdname": "a"})), 2, false);
        encode_command(&mut out, "migrate-pause", None, 3, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"execute\":\"query-status\",\"id\":1}\n\
             {\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"a\"},\"id\":2}\n\
             {\"exec-oob\":\"migrate-pause\",\"id\":3}\n"
        );
    }

    #[test]
    fn encode_then_parse_roundtrip_strings() {
        // Strings with quotes, newlines and unicode stay on one line.
        let mut out = Vec::new();
        let args = json!({"id": "a\"b\nc\u{2028}"});
        encode_command(&mut out, "x", Some(&args), 9, false);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    }
}
