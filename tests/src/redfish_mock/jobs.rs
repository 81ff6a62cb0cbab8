//! Work that finishes later: BIOS settings, Dell jobs in
//! `Managers/iDRAC.Embedded.1/Jobs`, and DMTF tasks behind task monitors.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::errors::{ErrorMessage, Failure, success};
use super::operations::{apply, header_value, not_in_list, patch_success};
use super::profile::{AsyncOperation, Vendor};
use super::server::{Incoming, invalid_body, json_response};
use super::state::{Effect, Job, State, Task, TaskOutcome};

const TASKS: &str = "/redfish/v1/TaskService/Tasks";
pub(super) fn patch_bios_settings(
    state: &mut State,
    path: &str,
    body: &Map<String, Value>,
) -> Result<Response, Failure> {
    let bios = path.trim_end_matches("/Settings").to_string();
    let current = state.resources.get(&bios).cloned().unwrap_or(Value::Null);
    let Some(attributes) = body.get("Attributes").and_then(Value::as_object) else {
        return Err(Failure::bad_request(ErrorMessage::new(
            "PropertyMissing",
            "The property Attributes is a required property and must be included in the request.",
            &["Attributes"],
        )));
    };
    for name in attributes.keys() {
        if current["Attributes"].get(name).is_none() {
            return Err(Failure::bad_request(
                ErrorMessage::new(
                    "PropertyUnknown",
                    format!("The property {name} is not in the list of valid properties for the resource."),
                    &[name],
                )
                .related(&format!("Attributes/{name}")),
            ));
        }
    }
    let apply_time = body
        .get("@Redfish.SettingsApplyTime")
        .map(|value| value["ApplyTime"].as_str().unwrap_or_default().to_string());
    if let Some(time) = &apply_time {
        let supported = &current["@Redfish.Settings"]["SupportedApplyTimes"];
        if !supported
            .as_array()
            .is_some_and(|l| l.iter().any(|v| v == time.as_str()))
        {
            return Err(not_in_list(time, "ApplyTime"));
        }
    }
    if state.vendor() == Vendor::Dell && state.jobs.values().any(|job| !job.finished) {
        // iDRAC refuses more pending BIOS values once a configuration job
        // exists (quadsproject/quads issue "Dell iDRAC: boot_to_type fails
        // with 400 'Pending configuration values are already committed'").
        return Err(Failure::bad_request(ErrorMessage::new(
            "GeneralError",
            "Pending BIOS values are already committed to a configuration job; delete the job or let it run first.",
            &[],
        )));
    }

    state.merge(path, &json!({"Attributes": attributes}));
    let pending = state.resources[path]["Attributes"].clone();
    let effect = Effect::ApplyBios {
        attributes: pending,
    };
    match apply_time {
        Some(time) if state.vendor() == Vendor::Dell => {
            let job = create_dell_job(state, effect, time != "Immediate");
            let mut response = success(state.vendor());
            *response.status_mut() = StatusCode::ACCEPTED;
            response
                .headers_mut()
                .insert(header::LOCATION, header_value(&job));
            Ok(response)
        }
        Some(_)
            if state
                .settings
                .async_operations
                .contains(&AsyncOperation::BiosSettings) =>
        {
            Ok(create_task(state, effect))
        }
        // Without an apply time the values stay pending until the next boot
        // (Dell: until a configuration job is created for them).
        _ => Ok(patch_success(state, path)),
    }
}

/// Dell's `POST Managers/iDRAC.Embedded.1/Jobs` with `TargetSettingsURI`,
/// which schedules the pending BIOS values for the next reset.
pub(super) fn create_dell_config_job(
    state: &mut State,
    request: &Incoming,
) -> Result<Response, Failure> {
    let target = request
        .body
        .as_ref()
        .and_then(|b| b["TargetSettingsURI"].as_str())
        .ok_or_else(|| invalid_body(request))?
        .to_string();
    let pending = state
        .resources
        .get(&normalize_path(&target))
        .map(|settings| settings["Attributes"].clone())
        .ok_or_else(|| Failure::not_found(&target))?;
    if pending.as_object().is_none_or(Map::is_empty) {
        return Err(Failure::bad_request(ErrorMessage::new(
            "GeneralError",
            format!("There are no pending values at {target} to apply."),
            &[],
        )));
    }
    let job = create_dell_job(
        state,
        Effect::ApplyBios {
            attributes: pending,
        },
        true,
    );
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, header_value(&job));
    Ok(response)
}

fn normalize_path(path: &str) -> String {
    super::state::normalize(path)
}

fn create_dell_job(state: &mut State, effect: Effect, scheduled: bool) -> String {
    let id = state.next_id();
    let jid = format!("JID_{:012}", 845_000_000_000u64 + id);
    let jobs = format!("{}/Jobs", state.settings.manager);
    let path = format!("{jobs}/{jid}");
    let (job_state, message) = if scheduled {
        ("Scheduled", "Task successfully scheduled.")
    } else {
        ("Running", "Job in progress.")
    };
    state.put(
        &path,
        json!({
            "@odata.id": path,
            "@odata.type": "#DellJob.v1_5_0.DellJob",
            "Id": jid,
            "Name": "Configure: BIOS.Setup.1-1",
            "JobType": "BIOSConfiguration",
            "JobState": job_state,
            "PercentComplete": 0,
            "Message": message,
            "StartTime": "TIME_NOW",
            "EndTime": "TIME_NA",
        }),
    );
    state.add_member(&jobs, &path);
    state.jobs.insert(
        path.clone(),
        Job {
            scheduled,
            polls_left: state.settings.task_polls,
            effect: Some(effect),
            finished: false,
        },
    );
    path
}

/// Moves a running Dell job one poll on, completing it after the
/// configured number of polls.
pub(crate) fn advance_job(state: &mut State, path: &str) {
    let Some(job) = state.jobs.get_mut(path) else {
        return;
    };
    if job.scheduled || job.finished {
        return;
    }
    if job.polls_left > 0 {
        job.polls_left -= 1;
        state.merge(path, &json!({"JobState": "Running", "PercentComplete": 50}));
        return;
    }
    job.finished = true;
    let effect = job.effect.take();
    let patch = match (&state.settings.task_outcome, effect) {
        (TaskOutcome::Exception { message, .. }, _) => {
            json!({"JobState": "Failed", "PercentComplete": 100, "Message": message})
        }
        (_, effect) => {
            let applied = effect.map_or(Ok(()), |e| apply(state, e));
            match applied {
                Ok(()) => {
                    json!({"JobState": "Completed", "PercentComplete": 100, "Message": "Job completed successfully."})
                }
                Err(failure) => json!({"JobState": "Failed", "PercentComplete": 100,
                    "Message": failure.messages.first().map(|m| m.message.clone()).unwrap_or_default()}),
            }
        }
    };
    state.merge(path, &patch);
}

pub(super) fn remove_job(state: &mut State, path: &str) {
    let jobs = format!("{}/Jobs", state.settings.manager);
    state.jobs.remove(path);
    state.resources.remove(path);
    state.remove_member(&jobs, path);
}

pub(super) fn delete_job_queue(
    state: &mut State,
    body: &Map<String, Value>,
) -> Result<Response, Failure> {
    let jobs = format!("{}/Jobs", state.settings.manager);
    let Some(id) = body.get("JobID").and_then(Value::as_str) else {
        return Err(Failure::bad_request(ErrorMessage::new(
            "ActionParameterMissing",
            "The action DeleteJobQueue requires the parameter JobID to be present in the request body.",
            &["DeleteJobQueue", "JobID"],
        )));
    };
    let targets: Vec<String> = if id == "JID_CLEARALL" {
        state.jobs.keys().cloned().collect()
    } else {
        vec![format!("{jobs}/{id}")]
    };
    for path in targets {
        if !state.jobs.contains_key(&path) {
            return Err(Failure::not_found(&path));
        }
        remove_job(state, &path);
    }
    if id == "JID_CLEARALL" {
        let settings = format!("{}/Bios/Settings", state.settings.system);
        if let Some(resource) = state.resources.get_mut(&settings) {
            resource["Attributes"] = json!({});
        }
        state.touch(&settings);
    }
    Ok(StatusCode::OK.into_response())
}

pub(super) fn create_task(state: &mut State, effect: Effect) -> Response {
    let id = state.next_id();
    let task_path = format!("{TASKS}/{id}");
    let monitor = format!("{task_path}/Monitor");
    let task = json!({
        "@odata.id": task_path,
        "@odata.type": "#Task.v1_4_3.Task",
        "Id": id.to_string(),
        "Name": format!("Task {id}"),
        "TaskState": "New",
        "TaskStatus": "OK",
        "PercentComplete": 0,
        "TaskMonitor": monitor,
        "Messages": [],
    });
    state.put(&task_path, task.clone());
    state.add_member(TASKS, &task_path);
    state.tasks.insert(
        monitor.clone(),
        Task {
            task_path,
            polls_left: state.settings.task_polls,
            effect: Some(effect),
            finished: false,
        },
    );
    accepted(&monitor, &task)
}

fn accepted(monitor: &str, task: &Value) -> Response {
    let mut response = json_response(StatusCode::ACCEPTED, None, task);
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, header_value(monitor));
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Responds to a GET of a task monitor: 202 while polls remain, then the
/// final response chosen by [`TaskOutcome`]. A finished monitor keeps
/// returning its final response.
pub(crate) fn poll_task(state: &mut State, monitor: &str) -> Response {
    let Some(task) = state.tasks.get_mut(monitor) else {
        return Failure::not_found(monitor).render(state.vendor());
    };
    let task_path = task.task_path.clone();
    if !task.finished && task.polls_left > 0 {
        task.polls_left -= 1;
        state.merge(
            &task_path,
            &json!({"TaskState": "Running", "PercentComplete": 50}),
        );
        let body = state.get(&task_path).unwrap_or(Value::Null);
        return accepted(monitor, &body);
    }
    if !task.finished {
        task.finished = true;
        let effect = task.effect.take();
        finish_task(state, &task_path, effect);
    }
    let body = state.get(&task_path).unwrap_or(Value::Null);
    match (&state.settings.task_outcome, body["TaskState"].as_str()) {
        (TaskOutcome::NoContent, Some("Completed")) => StatusCode::NO_CONTENT.into_response(),
        _ => json_response(StatusCode::OK, None, &body),
    }
}

fn finish_task(state: &mut State, task_path: &str, effect: Option<Effect>) {
    let outcome = state.settings.task_outcome.clone();
    let failure = match outcome {
        TaskOutcome::Exception {
            message_id,
            message,
        } => Some((message_id, message)),
        TaskOutcome::NoContent | TaskOutcome::Completed => {
            match effect.map_or(Ok(()), |e| apply(state, e)) {
                Ok(()) => None,
                Err(failure) => failure.messages.first().map(|m| {
                    (
                        super::errors::message_id(state.vendor(), &m.key),
                        m.message.clone(),
                    )
                }),
            }
        }
    };
    let patch = match failure {
        None => json!({
            "TaskState": "Completed",
            "TaskStatus": "OK",
            "PercentComplete": 100,
            "Messages": [{"MessageId": super::errors::message_id(state.vendor(), "Success"),
                          "Message": "The request completed successfully.", "Severity": "OK"}],
        }),
        Some((message_id, message)) => json!({
            "TaskState": "Exception",
            "TaskStatus": "Critical",
            "PercentComplete": 100,
            "Messages": [{"MessageId": message_id, "Message": message, "Severity": "Critical",
                          "Resolution": "Correct the cause and resubmit the request."}],
        }),
    };
    state.merge(task_path, &patch);
}
