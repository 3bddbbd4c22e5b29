//! CronJobs (batch/v1): defaults (concurrency, suspend, history limits), schedule parsing
//! with upstream's (robfig/cron) messages, time zones, job template rules, columns.

use serde_json::{json, Value};

use super::common::{self, arr, s};
use super::{job, podspec};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct CronJobStrategy;

/// Parses a standard cron spec as `cron.ParseStandard`, with its error messages.
pub fn parse_schedule(spec: &str) -> Result<(), String> {
    let mut spec = spec.trim();
    if spec.is_empty() {
        return Err("empty spec string".into());
    }
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let (tz, rest) = spec.split_once(' ').unwrap_or((spec, ""));
        let name = tz.split_once('=').map(|x| x.1).unwrap_or_default();
        if !known_time_zone(name) {
            return Err(format!("provided bad location {name}: unknown time zone {name}"));
        }
        spec = rest.trim();
    }
    if let Some(d) = spec.strip_prefix('@') {
        return match d {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => Ok(()),
            _ if d.starts_with("every ") => {
                let dur = d["every ".len()..].trim();
                if parse_go_duration(dur) { Ok(()) } else { Err(format!("failed to parse duration {spec}: time: invalid duration \"{dur}\"")) }
            }
            _ => Err(format!("unrecognized descriptor: {spec}")),
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: [{}]", fields.len(), fields.join(" ")));
    }
    const MONTHS: &[&str] = &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let bounds: [(u32, u32, &[&str], u32); 5] = [(0, 59, &[], 0), (0, 23, &[], 0), (1, 31, &[], 0), (1, 12, MONTHS, 1), (0, 6, DAYS, 0)];
    for (field, (min, max, names, base)) in fields.iter().zip(bounds) {
        for expr in field.split(',') {
            parse_range(expr, min, max, names, base)?;
        }
    }
    Ok(())
}

fn parse_int(expr: &str) -> Result<u32, String> {
    let n: i64 = expr.parse().map_err(|_| format!("failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": invalid syntax"))?;
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {expr}"));
    }
    Ok(n as u32)
}

fn parse_int_or_name(expr: &str, names: &[&str], base: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(expr)) {
        return Ok(i as u32 + base);
    }
    parse_int(expr)
}

fn parse_range(expr: &str, min: u32, max: u32, names: &[&str], base: u32) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let (start, mut end) = if low_high[0] == "*" || low_high[0] == "?" {
        (min, max)
    } else {
        let start = parse_int_or_name(low_high[0], names, base)?;
        match low_high.len() {
            1 => (start, start),
            2 => (start, parse_int_or_name(low_high[1], names, base)?),
            _ => return Err(format!("too many hyphens: {expr}")),
        }
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = parse_int(range_and_step[1])?;
            if low_high.len() == 1 {
                end = max;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < min {
        return Err(format!("beginning of range ({start}) below minimum ({min}): {expr}"));
    }
    if end > max {
        return Err(format!("end of range ({end}) above maximum ({max}): {expr}"));
    }
    if start > end {
        return Err(format!("beginning of range ({start}) beyond end of range ({end}): {expr}"));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

/// A Go duration like `1h30m`, `5m`, `10s`.
fn parse_go_duration(d: &str) -> bool {
    let mut rest = d;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if n == 0 {
            return false;
        }
        rest = &rest[n..];
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h"].iter().find(|u| rest.starts_with(**u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// Whether a time zone name is known (the host's tz database; UTC always).
fn known_time_zone(tz: &str) -> bool {
    if tz == "UTC" || tz.is_empty() {
        return true;
    }
    let db = std::path::Path::new("/usr/share/zoneinfo");
    !db.is_dir() || db.join(tz).is_file()
}

fn validate_time_zone(errs: &mut FieldErrors, tz: &Value) {
    let Some(tz) = tz.as_str() else { return };
    let path = "spec.timeZone";
    if tz.is_empty() {
        errs.push(FieldError::invalid(path, tz, "timeZone must be nil or non-empty string"));
        return;
    }
    let part_ok = |p: &str| {
        p != "." && p != ".." && !p.starts_with('-') && (1..=14).contains(&p.len())
            && p.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'+'))
    };
    if !tz.split('/').all(part_ok) {
        errs.push(FieldError::invalid(path, tz, format!("unknown time zone {tz}")));
        return;
    }
    if tz.eq_ignore_ascii_case("local") {
        errs.push(FieldError::invalid(path, tz, "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"));
    }
    if !known_time_zone(tz) {
        errs.push(FieldError::invalid(path, tz, format!("unknown time zone {tz}")));
    }
}

fn validate_cronjob(cj: &Value, old: Option<&Value>) -> FieldErrors {
    let mut errs = Vec::new();
    let name = s(&cj["metadata"]["name"]);
    if name.len() > 52 {
        errs.push(FieldError::invalid("metadata.name", name, "must be no more than 52 characters"));
    }
    let spec = &cj["spec"];
    let schedule = s(&spec["schedule"]);
    if schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else {
        if let Err(e) = parse_schedule(schedule) {
            errs.push(FieldError::invalid("spec.schedule", schedule, e));
        }
        let allow_tz = old.is_some_and(|o| s(&o["spec"]["schedule"]).contains("TZ"));
        if allow_tz && schedule.contains("TZ") && !spec["timeZone"].is_null() {
            errs.push(FieldError::invalid("spec.schedule", schedule, "cannot use both timeZone field and TZ or CRON_TZ in schedule"));
        } else if !allow_tz && schedule.contains("TZ") {
            errs.push(FieldError::invalid("spec.schedule", schedule, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"));
        }
    }
    common::nonnegative(&mut errs, &spec["startingDeadlineSeconds"], "spec.startingDeadlineSeconds");
    if old.is_none_or(|o| o["spec"]["timeZone"] != spec["timeZone"]) {
        validate_time_zone(&mut errs, &spec["timeZone"]);
    }
    common::validate_enum(&mut errs, &spec["concurrencyPolicy"], "spec.concurrencyPolicy", &["Allow", "Forbid", "Replace"]);
    let jt = &spec["jobTemplate"]["spec"];
    job::validate_job_spec(&mut errs, jt, "spec.jobTemplate.spec");
    if !jt["selector"].is_null() {
        errs.push(FieldError::invalid("spec.jobTemplate.spec.selector", jt["selector"].clone(), "`selector` will be auto-generated"));
    }
    if common::truthy(&jt["manualSelector"]) {
        errs.push(FieldError::not_supported("spec.jobTemplate.spec.manualSelector", true, &["nil", "false"]));
    }
    common::nonnegative(&mut errs, &spec["successfulJobsHistoryLimit"], "spec.successfulJobsHistoryLimit");
    common::nonnegative(&mut errs, &spec["failedJobsHistoryLimit"], "spec.failedJobsHistoryLimit");
    errs
}

impl Strategy for CronJobStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        let spec = common::child(obj, "spec");
        common::set_default(spec, "concurrencyPolicy", "Allow");
        common::set_default(spec, "suspend", false);
        common::set_default(spec, "successfulJobsHistoryLimit", 3);
        common::set_default(spec, "failedJobsHistoryLimit", 1);
        let jt = common::child(common::child(spec, "jobTemplate"), "spec");
        podspec::default_template(common::entry(jt, "template"));
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_cronjob(obj, None)
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        validate_cronjob(new, Some(old))
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Schedule", "string", |o| json!(s(&o["spec"]["schedule"]))),
            Column::new("Timezone", "string", |o| json!(o["spec"]["timeZone"].as_str().unwrap_or("<none>"))),
            Column::new("Suspend", "boolean", |o| {
                json!(match o["spec"]["suspend"].as_bool() {
                    None => "<unset>",
                    Some(true) => "True",
                    Some(false) => "False",
                })
            }),
            Column::new("Active", "integer", |o| json!(arr(&o["status"]["active"]).len())),
            Column::new("Last Schedule", "string", |o| {
                let t = &o["status"]["lastScheduleTime"];
                json!(if t.is_null() { "<none>".to_string() } else { table::age(t) })
            }),
            table::age_column(),
            Column::new("Containers", "string", |o| json!(common::container_cells(&o["spec"]["jobTemplate"]["spec"]["template"]["spec"]).0)).wide(),
            Column::new("Images", "string", |o| json!(common::container_cells(&o["spec"]["jobTemplate"]["spec"]["template"]["spec"]).1)).wide(),
            Column::new("Selector", "string", |o| common::format_selector(&o["spec"]["jobTemplate"]["spec"]["selector"])).wide(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert!(parse_schedule("*/5 * * * *").is_ok());
        assert!(parse_schedule("0 0 * * MON-FRI").is_ok());
        assert!(parse_schedule("@hourly").is_ok());
        assert!(parse_schedule("@every 1h30m").is_ok());
        assert_eq!(parse_schedule("* * * *").unwrap_err(), "expected exactly 5 fields, found 4: [* * * *]");
        assert_eq!(parse_schedule("60 * * * *").unwrap_err(), "end of range (60) above maximum (59): 60");
        assert_eq!(parse_schedule("@fortnightly").unwrap_err(), "unrecognized descriptor: @fortnightly");
        assert!(parse_schedule("x * * * *").unwrap_err().starts_with("failed to parse int from x"));
    }

    #[test]
    fn defaults_and_validation() {
        let ctx = ReqCtx::default();
        let mut cj = json!({"metadata": {"name": "hello"}, "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
        CronJobStrategy.apply_defaults(&mut cj);
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cj["spec"]["suspend"], false);
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
        assert!(cj["spec"]["jobTemplate"]["spec"].get("backoffLimit").is_none());
        assert!(CronJobStrategy.validate(&ctx, &cj).is_empty(), "{:?}", CronJobStrategy.validate(&ctx, &cj));
        cj["spec"]["schedule"] = json!("");
        assert_eq!(CronJobStrategy.validate(&ctx, &cj)[0].to_string(), "spec.schedule: Required value");
        cj["spec"]["schedule"] = json!("TZ=UTC * * * * *");
        assert!(CronJobStrategy.validate(&ctx, &cj)[0].to_string().ends_with("cannot use TZ or CRON_TZ in schedule, use timeZone field instead"));
        let cells: Vec<Value> = CronJobStrategy.columns().iter().map(|c| (c.cell)(&cj)).collect();
        assert_eq!(cells[2], "<none>");
        assert_eq!(cells[3], "False");
        assert_eq!(cells[4], 0);
        assert_eq!(cells[5], "<none>");
    }
}
