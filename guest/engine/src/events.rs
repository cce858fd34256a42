//! The daemon's event bus behind `GET /events`.
//!
//! A bounded ring of recent events serves `since`, and a broadcast channel serves live followers.
//! A slow follower that falls behind the channel's capacity loses events instead of growing the
//! daemon's memory: Docker's promise is the same (its event queue drops for stalled readers).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bollard_stubs::models::{EventActor, EventMessage, EventMessageScopeEnum, EventMessageTypeEnum};
use tokio::sync::broadcast;

use crate::http_util::Filters;

const HISTORY: usize = 1024;
const CHANNEL: usize = 1024;

pub struct EventBus {
    history: Mutex<VecDeque<EventMessage>>,
    tx: broadcast::Sender<EventMessage>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL);
        EventBus { history: Mutex::new(VecDeque::with_capacity(HISTORY)), tx }
    }

    /// Publish an event. `id` is what the CLI shows as the actor (an image reference or ID).
    pub fn publish(
        &self,
        typ: EventMessageTypeEnum,
        action: &str,
        id: &str,
        attributes: HashMap<String, String>,
    ) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let ev = EventMessage {
            typ: Some(typ),
            action: Some(action.to_string()),
            actor: Some(EventActor { id: Some(id.to_string()), attributes: Some(attributes) }),
            scope: Some(EventMessageScopeEnum::LOCAL),
            time: Some(now.as_secs() as i64),
            time_nano: Some(now.as_nanos() as i64),
        };
        {
            let mut h = self.history.lock().expect("event history lock");
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(ev.clone());
        }
        // No receivers is fine: nobody is following.
        let _ = self.tx.send(ev);
    }

    pub fn image(&self, action: &str, id: &str, name: Option<&str>) {
        let mut attrs = HashMap::new();
        if let Some(n) = name {
            attrs.insert("name".to_string(), n.to_string());
        }
        self.publish(EventMessageTypeEnum::IMAGE, action, id, attrs);
    }

    pub fn container(&self, action: &str, c: &crate::containers::store::Container) {
        self.container_with(action, c, HashMap::new());
    }

    /// A container event with Docker's standard attributes (name, image, labels) plus `extra`.
    pub fn container_with(&self, action: &str, c: &crate::containers::store::Container, extra: HashMap<String, String>) {
        let mut attrs: HashMap<String, String> = c.config.labels.clone().unwrap_or_default();
        attrs.insert("name".into(), c.name.clone());
        attrs.insert("image".into(), c.image_name.clone());
        attrs.extend(extra);
        self.publish(EventMessageTypeEnum::CONTAINER, action, &c.id, attrs);
    }

    /// Past events with `time_nano` in [since, until] and a receiver for what comes next, taken
    /// under one lock so nothing falls between the two.
    pub fn subscribe(&self, since_nano: Option<i64>, until_nano: Option<i64>) -> (Vec<EventMessage>, broadcast::Receiver<EventMessage>) {
        let h = self.history.lock().expect("event history lock");
        let rx = self.tx.subscribe();
        let past = match since_nano {
            None => Vec::new(),
            Some(s) => h
                .iter()
                .filter(|e| {
                    let t = e.time_nano.unwrap_or(0);
                    t >= s && until_nano.map(|u| t <= u).unwrap_or(true)
                })
                .cloned()
                .collect(),
        };
        (past, rx)
    }
}

/// The wire form of an event: the model plus the deprecated fields Docker still fills for
/// container and image events (`status` = action, `id` = actor, and for containers `from` = the
/// image), which clients of the older `JSONMessage` form read (moby's
/// `TestEventsBackwardsCompatible`).
pub fn wire(e: &EventMessage) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    let is_container = e.typ == Some(EventMessageTypeEnum::CONTAINER);
    if !is_container && e.typ != Some(EventMessageTypeEnum::IMAGE) {
        return v;
    }
    let actor = e.actor.as_ref();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("status".into(), e.action.clone().unwrap_or_default().into());
        obj.insert("id".into(), actor.and_then(|a| a.id.clone()).unwrap_or_default().into());
        let image = actor.and_then(|a| a.attributes.as_ref()).and_then(|a| a.get("image"));
        if let (true, Some(image)) = (is_container, image) {
            obj.insert("from".into(), image.clone().into());
        }
    }
    v
}

/// Docker's `since`/`until` values: unix seconds with optional fraction, or an RFC 3339 time.
pub fn parse_time_nanos(v: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return t.timestamp_nanos_opt();
    }
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        let n: i64 = digits.parse().ok()?;
        nanos = n * 10i64.pow(9 - digits.len() as u32);
    }
    // Seconds beyond ~292 years from 1970 do not fit in i64 nanoseconds: invalid, not an
    // overflow panic (found by guest/engine/fuzz `query`).
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Docker's event filters: type, event/action, image, container, label, scope.
pub fn matches(f: &Filters, e: &EventMessage) -> bool {
    let typ = e
        .typ
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let action = e.action.clone().unwrap_or_default();
    let id = e.actor.as_ref().and_then(|a| a.id.clone()).unwrap_or_default();
    let attrs = e.actor.as_ref().and_then(|a| a.attributes.clone()).unwrap_or_default();
    let any = |k: &str, ok: &dyn Fn(&str) -> bool| {
        let vals = f.get(k);
        vals.is_empty() || vals.iter().any(|v| ok(v))
    };
    any("type", &|v| v == typ)
        && any("event", &|v| v == action || action.starts_with(&format!("{v}:")))
        && any("scope", &|v| v == "local")
        && any("image", &|v| {
            typ == "image" && (id == v || attrs.get("name").map(|n| n == v).unwrap_or(false))
                || attrs.get("image").map(|i| i == v).unwrap_or(false)
        })
        && any("container", &|v| {
            typ == "container" && (id.starts_with(v) || attrs.get("name").map(|n| n == v).unwrap_or(false))
        })
        && any("label", &|v| crate::http_util::label_matches(&attrs, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_and_image_events_carry_the_legacy_fields() {
        let bus = EventBus::new();
        bus.publish(EventMessageTypeEnum::CONTAINER, "create", "c1", HashMap::from([("image".into(), "busybox".into())]));
        bus.image("tag", "sha256:ab", Some("x:y"));
        bus.publish(EventMessageTypeEnum::NETWORK, "create", "n1", HashMap::new());
        let (past, _) = bus.subscribe(Some(0), None);
        let w: Vec<serde_json::Value> = past.iter().map(wire).collect();
        assert_eq!((&w[0]["status"], &w[0]["id"], &w[0]["from"]), (&"create".into(), &"c1".into(), &"busybox".into()));
        assert_eq!(w[0]["Actor"]["ID"], "c1");
        assert_eq!((&w[1]["status"], &w[1]["id"]), (&"tag".into(), &"sha256:ab".into()));
        assert!(w[1].get("from").is_none());
        assert!(w[2].get("status").is_none() && w[2].get("id").is_none());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time_nanos("10"), Some(10_000_000_000));
        assert_eq!(parse_time_nanos("10.5"), Some(10_500_000_000));
        assert_eq!(parse_time_nanos("1970-01-01T00:00:02Z"), Some(2_000_000_000));
        assert_eq!(parse_time_nanos("x"), None);
        assert_eq!(parse_time_nanos("99999999999999"), None);
        assert_eq!(parse_time_nanos("9223372036.9"), None);
        assert_eq!(parse_time_nanos("1.1234567891"), Some(1_123_456_789));
    }

    #[test]
    fn history_and_filters() {
        let bus = EventBus::new();
        bus.image("pull", "busybox:latest", Some("busybox"));
        bus.image("tag", "sha256:abc", Some("x:1"));
        let (past, _rx) = bus.subscribe(Some(0), None);
        assert_eq!(past.len(), 2);
        let f = Filters::parse(Some(r#"{"event":["tag"]}"#)).unwrap();
        let hits: Vec<_> = past.iter().filter(|e| matches(&f, e)).collect();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].action.as_deref(), Some("tag"));
        let f = Filters::parse(Some(r#"{"type":["container"]}"#)).unwrap();
        assert!(past.iter().all(|e| !matches(&f, e)));
    }

    #[test]
    fn history_is_bounded() {
        let bus = EventBus::new();
        for i in 0..(HISTORY + 10) {
            bus.image("tag", &format!("i{i}"), None);
        }
        let (past, _) = bus.subscribe(Some(0), None);
        assert_eq!(past.len(), HISTORY);
    }
}
