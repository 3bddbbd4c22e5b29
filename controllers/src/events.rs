//! Events (events.k8s.io/v1) as upstream's recorder writes them: one Event per distinct
//! (object, type, reason, action, note), repeats within a few minutes counted in its
//! `series`. kube-rs's `Recorder` keys its series without the note, so "Created pod: web-0"
//! and "Created pod: web-1" about one StatefulSet would fold into one Event that shows only
//! the first; upstream keeps them apart. Same `publish` shape as kube-rs's, whose `Event`,
//! `EventType` and `Reporter` it reuses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as EventObject;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
pub use kube::runtime::events::{Event, EventType, Reporter};

/// Repeats within this window count in the first Event's series.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// Upstream's limit on `note`.
const MAX_NOTE: usize = 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    regarding: (Option<String>, Option<String>, Option<String>, Option<String>),
    warning: bool,
    reason: String,
    action: String,
    note: Option<String>,
}

struct Seen {
    name: String,
    namespace: String,
    count: i32,
    last: Instant,
}

/// Publishes Events as one reporter (controller and instance).
pub struct Recorder {
    client: kube::Client,
    reporter: Reporter,
    seen: Mutex<HashMap<Key, Seen>>,
}

impl Recorder {
    pub fn new(client: kube::Client, reporter: Reporter) -> Recorder {
        Recorder { client, reporter, seen: Mutex::new(HashMap::new()) }
    }

    /// Records `ev` about `regarding`: a new Event, or the next count of the same one.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let note = ev.note.as_ref().map(|n| truncate(n, MAX_NOTE));
        let key = Key {
            regarding: (regarding.kind.clone(), regarding.namespace.clone(), regarding.name.clone(), regarding.uid.clone()),
            warning: matches!(ev.type_, EventType::Warning),
            reason: ev.reason.clone(),
            action: ev.action.clone(),
            note: note.clone(),
        };
        if let Some((name, namespace, count)) = self.repeat(&key) {
            let patch = serde_json::json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            let api: Api<EventObject> = Api::namespaced(self.client.clone(), &namespace);
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(()),
                // gone (expired or deleted): record it anew
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        // Upstream: cluster-scoped objects' events go to `default`; names are `<object>.<nanos>`.
        let namespace = regarding.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
        let name = format!("{}.{:x}", regarding.name.as_deref().unwrap_or("event"), now.as_nanosecond());
        let obj = EventObject {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace.clone()), ..Default::default() },
            event_time: Some(MicroTime(now)),
            type_: Some(if key.warning { "Warning" } else { "Normal" }.into()),
            reason: Some(ev.reason.clone()),
            action: Some(ev.action.clone()),
            note,
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(self.reporter.instance.clone().unwrap_or_else(|| self.reporter.controller.clone())),
            ..Default::default()
        };
        Api::<EventObject>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &obj).await?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.insert(key, Seen { name, namespace, count: 1, last: Instant::now() });
        Ok(())
    }

    /// The Event to count `key` in, if one was recorded within the window (forgetting older ones).
    fn repeat(&self, key: &Key) -> Option<(String, String, i32)> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, s| s.last.elapsed() < SERIES_WINDOW);
        let s = seen.get_mut(key)?;
        s.count += 1;
        s.last = Instant::now();
        Some((s.name.clone(), s.namespace.clone(), s.count))
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn notes_are_cut_on_character_boundaries() {
        assert_eq!(super::truncate("héllo", 2), "h");
        assert_eq!(super::truncate("abc", 10), "abc");
    }
}
