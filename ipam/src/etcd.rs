//! A small blocking client for etcd's v3 JSON gateway: the few calls the
//! shared store and the overlay registry need, nothing more.
//!
//! # Why the gateway and not the `etcd-client` crate
//!
//! `etcd-client` speaks gRPC through tonic on tokio, and its build script
//! compiles etcd's `.proto` files with `tonic-prost-build`, which needs a
//! `protoc` binary on the build machine: `etcd-client` 0.17 does not build
//! here ("Could not find `protoc`"), and CI would have to install one. tapswitch's commands are short and blocking;
//! an async runtime for a handful of requests would be the biggest thing in
//! the binary. etcd serves the same API as JSON over HTTP/1.1 (the
//! grpc-gateway: `POST /v3/kv/range`, `/v3/kv/put`, `/v3/kv/txn`,
//! `/v3/kv/deleterange`, `/v3/lease/grant`, `/v3/lease/keepalive`,
//! `/v3/lease/revoke`, `/v3/watch`), served by every etcd since 3.4 under
//! `/v3/` (3.3 used `/v3beta/`, Debian's 3.4 serves both). Keys and values
//! are base64; 64-bit numbers come back as strings. So: `ureq` without TLS,
//! `base64`, `serde_json`, and this file.
//!
//! # Failure
//!
//! Every call has a timeout ([`DEFAULT_TIMEOUT`], connect included). The
//! endpoints are tried in order; one that cannot be reached is skipped, and
//! when none answers the call fails with [`EtcdError::Unreachable`], one
//! line naming every endpoint and saying what to do. An answer with an
//! error status ([`EtcdError::Refused`]) is not retried elsewhere: another
//! member of the same cluster would say the same.

use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};

/// How long one call may take, connecting included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// A key's revision in etcd's history; 0 means "the key does not exist".
pub type Revision = i64;
/// A lease's id as etcd hands it out.
pub type LeaseId = i64;

/// What can go wrong talking to etcd. Each message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    #[error(
        "cannot reach etcd at {} ({detail}): start etcd there, or point --store / TAPSWITCH_STORE at running members",
        endpoints.join(", ")
    )]
    Unreachable {
        endpoints: Vec<String>,
        detail: String,
    },
    #[error("etcd at {endpoint} refused {call}: {message}")]
    Refused {
        endpoint: String,
        call: &'static str,
        message: String,
    },
    #[error("etcd at {endpoint} gave an answer to {call} that tapswitch cannot read: {detail}")]
    BadReply {
        endpoint: String,
        call: &'static str,
        detail: String,
    },
}

/// One key with its value, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The revision of the last change to this key (for compare-and-swap).
    pub mod_revision: Revision,
    /// The lease the key is attached to, 0 if none.
    pub lease: LeaseId,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key was last changed at this revision (0: the key does not exist).
    ModRevision { key: Vec<u8>, revision: Revision },
}

/// A change inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: Vec<u8>,
    },
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    /// The key was deleted, or the lease it was attached to expired.
    Delete {
        key: Vec<u8>,
        revision: Revision,
    },
}

/// What a watch saw within its waiting time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub events: Vec<WatchEvent>,
    /// Where the next watch should start so that nothing is missed or seen twice.
    pub next_revision: Revision,
}

/// A connection setting for a set of etcd members.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    endpoints: Vec<String>,
}

impl Client {
    /// A client for `endpoints` (`HOST:PORT` each) with [`DEFAULT_TIMEOUT`].
    pub fn new(endpoints: Vec<String>) -> Client {
        Client::with_timeout(endpoints, DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(endpoints: Vec<String>, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout))
            .http_status_as_error(false)
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
            endpoints,
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// One key and the store's current revision.
    pub fn get(&self, key: &[u8]) -> Result<(Option<KeyValue>, Revision), EtcdError> {
        let (reply, endpoint) = self.call("/v3/kv/range", "range", &json!({ "key": b64(key) }))?;
        let kvs = kvs_of(&reply, &endpoint, "range")?;
        Ok((kvs.into_iter().next(), header_revision(&reply)))
    }

    /// Every key that starts with `prefix`, in key order, and the revision
    /// they were read at (a watch from `revision + 1` misses nothing).
    pub fn get_prefix(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, Revision), EtcdError> {
        let body = json!({ "key": b64(prefix), "range_end": b64(&prefix_end(prefix)) });
        let (reply, endpoint) = self.call("/v3/kv/range", "range", &body)?;
        Ok((kvs_of(&reply, &endpoint, "range")?, header_revision(&reply)))
    }

    /// Sets a key, attached to `lease` if given. Returns the new revision.
    pub fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Revision, EtcdError> {
        let (reply, _) = self.call("/v3/kv/put", "put", &put_body(key, value, lease))?;
        Ok(header_revision(&reply))
    }

    /// Deletes a key; returns how many keys went (0 or 1).
    pub fn delete(&self, key: &[u8]) -> Result<i64, EtcdError> {
        let (reply, _) = self.call("/v3/kv/deleterange", "delete", &json!({ "key": b64(key) }))?;
        Ok(number(&reply["deleted"]))
    }

    /// Runs `ops` if every comparison holds; returns whether they ran.
    pub fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<bool, EtcdError> {
        let compare: Vec<Value> = compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision { key, revision } => json!({
                    "key": b64(key),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": revision.to_string(),
                }),
            })
            .collect();
        let success: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    json!({ "request_put": put_body(key, value, *lease) })
                }
                Op::Delete { key } => json!({ "request_delete_range": { "key": b64(key) } }),
            })
            .collect();
        let body = json!({ "compare": compare, "success": success });
        let (reply, _) = self.call("/v3/kv/txn", "txn", &body)?;
        Ok(reply["succeeded"].as_bool().unwrap_or(false))
    }

    /// A new lease of `ttl` seconds.
    pub fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, EtcdError> {
        let body = json!({ "TTL": ttl.as_secs().max(1).to_string() });
        let (reply, endpoint) = self.call("/v3/lease/grant", "lease grant", &body)?;
        match number(&reply["ID"]) {
            0 => Err(EtcdError::BadReply {
                endpoint,
                call: "lease grant",
                detail: format!("no lease id in {reply}"),
            }),
            id => Ok(id),
        }
    }

    /// Renews a lease; `None` when etcd no longer knows it (it expired).
    pub fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, EtcdError> {
        let body = json!({ "ID": lease.to_string() });
        let (reply, _) = self.call("/v3/lease/keepalive", "lease keepalive", &body)?;
        // The gateway wraps stream messages in "result"; an unknown lease
        // comes back with no TTL (0).
        let ttl = number(&reply["result"]["TTL"]);
        Ok(u64::try_from(ttl)
            .ok()
            .filter(|t| *t > 0)
            .map(Duration::from_secs))
    }

    /// Ends a lease now, deleting the keys attached to it. A lease etcd no
    /// longer knows counts as revoked.
    pub fn revoke_lease(&self, lease: LeaseId) -> Result<(), EtcdError> {
        let body = json!({ "ID": lease.to_string() });
        match self.call("/v3/lease/revoke", "lease revoke", &body) {
            Ok(_) => Ok(()),
            Err(EtcdError::Refused { message, .. }) if message.contains("lease not found") => {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// The changes under `prefix` from `start` on, waiting up to `wait` for
    /// them; returns as soon as etcd has sent a batch of changes (one
    /// revision's worth or more). An empty batch means nothing changed
    /// within `wait`.
    pub fn watch_prefix(
        &self,
        prefix: &[u8],
        start: Revision,
        wait: Duration,
    ) -> Result<WatchBatch, EtcdError> {
        let body = json!({ "create_request": {
            "key": b64(prefix),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": start.to_string(),
        }});
        let mut last_error = String::new();
        for endpoint in &self.endpoints {
            let request = self
                .agent
                .post(format!("http://{endpoint}/v3/watch"))
                .config()
                .timeout_global(Some(wait))
                .build();
            let response = match request.send(body.to_string()) {
                Ok(response) => response,
                Err(err) => {
                    last_error = err.to_string();
                    continue;
                }
            };
            let mut reader = response.into_body().into_reader();
            return read_watch(&mut reader, endpoint, start);
        }
        Err(self.unreachable(last_error))
    }

    /// POSTs `body` to `path` on the first endpoint that answers.
    fn call(
        &self,
        path: &str,
        call: &'static str,
        body: &Value,
    ) -> Result<(Value, String), EtcdError> {
        let mut last_error = String::from("no endpoints given");
        for endpoint in &self.endpoints {
            let sent = self
                .agent
                .post(format!("http://{endpoint}{path}"))
                .header("content-type", "application/json")
                .send(body.to_string());
            let mut response = match sent {
                Ok(response) => response,
                Err(err) => {
                    last_error = err.to_string();
                    continue;
                }
            };
            let status = response.status();
            let text = match response.body_mut().read_to_string() {
                Ok(text) => text,
                Err(err) => {
                    last_error = err.to_string();
                    continue;
                }
            };
            let bad = |detail: String| EtcdError::BadReply {
                endpoint: endpoint.clone(),
                call,
                detail,
            };
            let reply: Value = serde_json::from_str(&text)
                .map_err(|e| bad(format!("{e} in {:?}", short(&text))))?;
            let message = reply.get("error").or_else(|| reply.get("message"));
            if !status.is_success() || message.is_some() {
                return Err(EtcdError::Refused {
                    endpoint: endpoint.clone(),
                    call,
                    message: message
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("HTTP {status}"), str::to_string),
                });
            }
            return Ok((reply, endpoint.clone()));
        }
        Err(self.unreachable(last_error))
    }

    fn unreachable(&self, detail: String) -> EtcdError {
        EtcdError::Unreachable {
            endpoints: self.endpoints.clone(),
            detail,
        }
    }
}

/// Reads watch messages until one carries changes, or the stream ends or
/// is cut by the per-call timeout (then with whatever was read).
fn read_watch(
    reader: &mut impl Read,
    endpoint: &str,
    start: Revision,
) -> Result<WatchBatch, EtcdError> {
    let mut batch = WatchBatch {
        events: Vec::new(),
        next_revision: start,
    };
    let stream = serde_json::Deserializer::from_reader(reader).into_iter::<WatchMessage>();
    for message in stream {
        // A read error here is the timeout ending the wait, or the member
        // going away: either way the caller resumes from next_revision.
        let Ok(message) = message else { break };
        let result = message.result.unwrap_or_default();
        if let Some(error) = message
            .error
            .or(result.cancel_reason.filter(|r| !r.is_empty()))
        {
            return Err(EtcdError::Refused {
                endpoint: endpoint.to_string(),
                call: "watch",
                message: error,
            });
        }
        if result.compact_revision.as_deref().is_some_and(|r| r != "0") {
            return Err(EtcdError::Refused {
                endpoint: endpoint.to_string(),
                call: "watch",
                message: format!(
                    "revision {start} was compacted; read the keys again and watch from there"
                ),
            });
        }
        for event in result.events {
            let kv = event.kv.into_key_value();
            batch.next_revision = batch.next_revision.max(kv.mod_revision + 1);
            batch
                .events
                .push(if event.kind.as_deref() == Some("DELETE") {
                    WatchEvent::Delete {
                        key: kv.key,
                        revision: kv.mod_revision,
                    }
                } else {
                    WatchEvent::Put(kv)
                });
        }
        if !batch.events.is_empty() {
            break;
        }
    }
    Ok(batch)
}

#[derive(Debug, Deserialize)]
struct WatchMessage {
    result: Option<WatchResult>,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WatchResult {
    #[serde(default)]
    events: Vec<RawEvent>,
    compact_revision: Option<String>,
    cancel_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    kv: RawKv,
}

#[derive(Debug, Default, Deserialize)]
struct RawKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    mod_revision: Option<String>,
    lease: Option<String>,
}

impl RawKv {
    fn into_key_value(self) -> KeyValue {
        let parse = |n: Option<String>| n.and_then(|n| n.parse().ok()).unwrap_or(0);
        KeyValue {
            key: BASE64.decode(self.key).unwrap_or_default(),
            value: BASE64.decode(self.value).unwrap_or_default(),
            mod_revision: parse(self.mod_revision),
            lease: parse(self.lease),
        }
    }
}

fn kvs_of(reply: &Value, endpoint: &str, call: &'static str) -> Result<Vec<KeyValue>, EtcdError> {
    let Some(kvs) = reply.get("kvs") else {
        return Ok(Vec::new()); // the gateway leaves out empty lists
    };
    let raw: Vec<RawKv> = serde_json::from_value(kvs.clone()).map_err(|e| EtcdError::BadReply {
        endpoint: endpoint.to_string(),
        call,
        detail: e.to_string(),
    })?;
    Ok(raw.into_iter().map(RawKv::into_key_value).collect())
}

fn put_body(key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Value {
    let mut body = json!({ "key": b64(key), "value": b64(value) });
    if let Some(lease) = lease {
        body["lease"] = json!(lease.to_string());
    }
    body
}

fn header_revision(reply: &Value) -> Revision {
    number(&reply["header"]["revision"])
}

/// The gateway writes 64-bit numbers as strings (and leaves out zeros).
fn number(value: &Value) -> i64 {
    match value {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// The first key after every key that starts with `prefix` (etcd's
/// `range_end` for a prefix: the last byte below 0xff, plus one).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn short(text: &str) -> &str {
    let end = text.char_indices().nth(120).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_the_next_key() {
        assert_eq!(prefix_end(b"/tapswitch/"), b"/tapswitch0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn watch_messages_become_events_and_a_resume_point() {
        let put = r#"{"kv":{"key":"YQ==","value":"MQ==","mod_revision":"8","lease":"99"}}"#;
        let delete = r#"{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"9"}}"#;
        let created = r#"{"result":{"header":{"revision":"7"},"created":true}}"#;
        let message =
            |events: &[&str]| format!(r#"{{"result":{{"events":[{}]}}}}"#, events.join(","));
        let expected_put = WatchEvent::Put(KeyValue {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            mod_revision: 8,
            lease: 99,
        });
        let expected_delete = WatchEvent::Delete {
            key: b"a".to_vec(),
            revision: 9,
        };

        // The first message with changes ends the wait; later ones are the
        // next watch's (it starts from next_revision).
        let stream = format!("{created}\n{}\n{}", message(&[put]), message(&[delete]));
        let first = read_watch(&mut stream.as_bytes(), "e:1", 5).unwrap();
        assert_eq!(first.events, vec![expected_put.clone()]);
        assert_eq!(first.next_revision, 9);

        let stream = format!("{created}\n{}", message(&[put, delete]));
        let both = read_watch(&mut stream.as_bytes(), "e:1", 5).unwrap();
        assert_eq!(both.events, vec![expected_put, expected_delete]);
        assert_eq!(both.next_revision, 10);

        let quiet = read_watch(&mut created.as_bytes(), "e:1", 5).unwrap();
        assert_eq!((quiet.events.len(), quiet.next_revision), (0, 5));
    }

    #[test]
    fn a_compacted_watch_says_what_to_do() {
        let stream = r#"{"result":{"compact_revision":"40","canceled":true}}"#;
        let err = read_watch(&mut stream.as_bytes(), "e:1", 5).unwrap_err();
        assert!(err.to_string().contains("read the keys again"), "{err}");
    }

    #[test]
    fn nothing_listening_is_one_line_naming_every_endpoint() {
        // Port 1 on loopback: nothing listens there on any sane machine.
        let client = Client::with_timeout(
            vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            Duration::from_secs(1),
        );
        let err = client.get(b"k").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, EtcdError::Unreachable { .. }), "{text}");
        assert!(
            text.starts_with("cannot reach etcd at 127.0.0.1:1, 127.0.0.1:2 ("),
            "{text}"
        );
        assert!(text.contains("start etcd there"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}
