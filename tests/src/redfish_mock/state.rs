//! The mock's state: the resource tree loaded from the fixtures, ETag
//! generations, sessions, tasks and Dell jobs, the request log and the
//! faults a test set.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::faults::{FaultRule, Redirect};
use super::profile::{AsyncOperation, AuthMode, IfMatchPolicy, Vendor};

/// One request as the mock saw it, with secrets removed.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path as sent, without the query.
    pub path: String,
    pub query: Option<String>,
    pub auth: RequestAuth,
    pub if_match: Option<String>,
    pub content_type: Option<String>,
    /// The JSON body, with every `Password` member replaced by
    /// `"[redacted]"`; `None` for an empty or non-JSON body.
    pub body: Option<Value>,
}

/// The credentials a request carried, without the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestAuth {
    None,
    Basic {
        username: String,
    },
    /// An `X-Auth-Token` header; `valid` is true when it named a live session.
    Session {
        valid: bool,
    },
}

/// How a task ends after its 202 responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// The monitor returns 204 with no body.
    NoContent,
    /// The monitor returns 200 with the Task, `TaskState` `Completed`.
    Completed,
    /// The monitor returns 200 with the Task, `TaskState` `Exception`, and a
    /// message with this id and text; the operation's effect is not applied.
    Exception { message_id: String, message: String },
}

/// What a task or job does to the state when it completes.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    InsertMedia { path: String, body: Value },
    EjectMedia { path: String },
    Reset { reset_type: String },
    ApplyBios { attributes: Value },
}

/// A DMTF task behind a task monitor.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub task_path: String,
    pub polls_left: u32,
    pub effect: Option<Effect>,
    pub finished: bool,
}

/// A Dell job in `Managers/iDRAC.Embedded.1/Jobs`.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// `Scheduled` jobs wait for the next reset of the system.
    pub scheduled: bool,
    pub polls_left: u32,
    pub effect: Option<Effect>,
    pub finished: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub path: String,
}

/// The settings that stay fixed for one mock.
#[derive(Clone)]
pub(crate) struct Settings {
    pub vendor: Vendor,
    pub username: String,
    pub password: String,
    pub auth: AuthMode,
    pub if_match: IfMatchPolicy,
    pub async_operations: Vec<AsyncOperation>,
    pub task_polls: u32,
    pub task_outcome: TaskOutcome,
    pub power_on_delay: Duration,
    pub supermicro_licensed: bool,
    pub system: String,
    pub manager: String,
    pub chassis: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("vendor", &self.vendor)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("auth", &self.auth)
            .field("if_match", &self.if_match)
            .field("system", &self.system)
            .finish_non_exhaustive()
    }
}

pub(crate) struct State {
    pub settings: Settings,
    pub resources: BTreeMap<String, Value>,
    generations: HashMap<String, u64>,
    pub sessions: HashMap<String, Session>,
    pub next_id: u64,
    /// When the system finishes `PoweringOn`.
    pub powering_on_until: Option<Instant>,
    pub tasks: HashMap<String, Task>,
    pub jobs: HashMap<String, Job>,
    pub requests: Vec<RecordedRequest>,
    pub faults: Vec<FaultRule>,
    pub redirects: Vec<(String, Redirect)>,
    /// Requests left to fail with 503, and the `Retry-After` seconds.
    pub unavailable: Option<(u32, u32)>,
}

/// Prints counts instead of contents: the session map is keyed by tokens.
impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("settings", &self.settings)
            .field("resources", &self.resources.len())
            .field("sessions", &self.sessions.len())
            .field("tasks", &self.tasks.len())
            .field("jobs", &self.jobs.len())
            .field("requests", &self.requests.len())
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// Removes a trailing slash (iLO 4 wrote `@odata.id` with one, and clients
/// still send it) so that `/redfish/v1/Systems/1/` and `/redfish/v1/Systems/1`
/// name the same resource.
pub(crate) fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

fn path_hash(path: &str) -> u64 {
    // FNV-1a: stable across runs, unlike the std hasher.
    path.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl State {
    pub fn new(settings: Settings, resources: BTreeMap<String, Value>) -> Self {
        State {
            settings,
            resources,
            generations: HashMap::new(),
            sessions: HashMap::new(),
            next_id: 1,
            powering_on_until: None,
            tasks: HashMap::new(),
            jobs: HashMap::new(),
            requests: Vec::new(),
            faults: Vec::new(),
            redirects: Vec::new(),
            unavailable: None,
        }
    }

    pub fn vendor(&self) -> Vendor {
        self.settings.vendor
    }

    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn etag(&self, path: &str) -> String {
        let generation = self.generations.get(path).copied().unwrap_or(1);
        self.vendor().etag(path_hash(path), generation)
    }

    /// Returns the resource at `path` as a client sees it, with `@odata.etag` where
    /// the profile puts one.
    pub fn get(&self, path: &str) -> Option<Value> {
        let mut value = self.resources.get(path)?.clone();
        if self.vendor().etag_in_body()
            && let Some(object) = value.as_object_mut()
        {
            object.insert("@odata.etag".to_string(), json!(self.etag(path)));
        }
        Some(value)
    }

    /// Replaces or inserts the resource at `path` and moves its ETag on.
    pub fn put(&mut self, path: &str, value: Value) {
        self.resources.insert(path.to_string(), value);
        self.touch(path);
    }

    /// Merges `patch` into the resource at `path` (JSON merge patch: objects
    /// merge, everything else replaces) and moves its ETag on.
    pub fn merge(&mut self, path: &str, patch: &Value) -> bool {
        let Some(target) = self.resources.get_mut(path) else {
            return false;
        };
        merge_json(target, patch);
        self.touch(path);
        true
    }

    pub fn touch(&mut self, path: &str) {
        *self.generations.entry(path.to_string()).or_insert(1) += 1;
    }

    /// Adds `member` to the collection at `collection`.
    pub fn add_member(&mut self, collection: &str, member: &str) {
        let mut members = self.members(collection);
        members.push(member.to_string());
        self.set_members(collection, &members);
    }

    pub fn remove_member(&mut self, collection: &str, member: &str) {
        let members: Vec<String> = self
            .members(collection)
            .into_iter()
            .filter(|m| m != member)
            .collect();
        self.set_members(collection, &members);
    }

    fn members(&self, collection: &str) -> Vec<String> {
        self.resources
            .get(collection)
            .and_then(|c| c["Members"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m["@odata.id"].as_str().map(str::to_string))
            .collect()
    }

    fn set_members(&mut self, collection: &str, members: &[String]) {
        let refs: Vec<Value> = members.iter().map(|m| json!({"@odata.id": m})).collect();
        self.merge(
            collection,
            &json!({"Members": refs, "Members@odata.count": members.len()}),
        );
    }

    /// Returns the system's `PowerState`, after finishing a `PoweringOn` whose delay
    /// has passed.
    pub fn power_state(&mut self) -> String {
        if let Some(until) = self.powering_on_until
            && Instant::now() >= until
        {
            self.powering_on_until = None;
            self.write_power_state("On");
        }
        let system = self.settings.system.clone();
        self.resources[&system]["PowerState"]
            .as_str()
            .unwrap_or("Off")
            .to_string()
    }

    /// Writes `state` into the system and chassis (and iLO's `PostState`).
    pub fn write_power_state(&mut self, state: &str) {
        let system = self.settings.system.clone();
        let chassis = self.settings.chassis.clone();
        let mut patch = json!({"PowerState": state});
        if self.vendor() == Vendor::Hpe {
            let post = if state == "Off" {
                "PowerOff"
            } else {
                "FinishedPost"
            };
            patch["Oem"] = json!({"Hpe": {"PostState": post}});
        }
        self.merge(&system, &patch);
        self.merge(&chassis, &json!({"PowerState": state}));
    }

    /// Records that the host started booting: the system goes `On` (through
    /// `PoweringOn` when a delay is set), a `Once` boot override is used up,
    /// and scheduled Dell jobs start.
    pub fn boot(&mut self) {
        let delay = self.settings.power_on_delay;
        if delay.is_zero() {
            self.write_power_state("On");
        } else {
            self.write_power_state("PoweringOn");
            self.powering_on_until = Some(Instant::now() + delay);
        }

        // A one-time override applies to this boot only: DMTF's
        // ComputerSystem v1_20_1 schema resets BootSourceOverrideEnabled to
        // Disabled after it. The target is left as it was.
        let system = self.settings.system.clone();
        if self.resources[&system]["Boot"]["BootSourceOverrideEnabled"] == "Once" {
            self.merge(
                &system,
                &json!({"Boot": {"BootSourceOverrideEnabled": "Disabled"}}),
            );
        }

        let scheduled: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, job)| job.scheduled && !job.finished)
            .map(|(path, _)| path.clone())
            .collect();
        for path in scheduled {
            if let Some(job) = self.jobs.get_mut(&path) {
                job.scheduled = false;
            }
            self.merge(&path, &json!({"JobState": "Running", "PercentComplete": 10, "Message": "Job in progress."}));
        }

        // Other profiles apply pending BIOS values at boot without a job.
        let settings = format!("{system}/Bios/Settings");
        if self.vendor() != Vendor::Dell
            && let Some(pending) = self
                .resources
                .get(&settings)
                .map(|s| s["Attributes"].clone())
            && pending.as_object().is_some_and(|p| !p.is_empty())
        {
            self.merge(&format!("{system}/Bios"), &json!({"Attributes": pending}));
            if let Some(resource) = self.resources.get_mut(&settings) {
                resource["Attributes"] = json!({});
            }
            self.touch(&settings);
        }
    }

    /// Records a request, removing passwords from its body.
    pub fn record(&mut self, mut request: RecordedRequest) {
        if let Some(body) = request.body.as_mut() {
            redact(body);
        }
        self.requests.push(request);
    }
}

/// Replaces every `Password` member, at any depth, with `"[redacted]"`.
pub(crate) fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, member) in map.iter_mut() {
                if key.eq_ignore_ascii_case("password") {
                    *member = json!("[redacted]");
                } else {
                    redact(member);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// JSON merge patch (RFC 7396 without the null-deletes rule, because
/// Redfish PATCH sets properties to `null` instead of removing them).
pub(crate) fn merge_json(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge_json(existing, value)
                    }
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}
