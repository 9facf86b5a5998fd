//! `[[job]]` as written.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::{CatchUpName, DURATION, LOCAL_TIME, OnOmitName, OneOrMany};

/// One reminder: a schedule, recipients, and the message.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Job", transform = to_or_recipients_file)]
pub(in crate::config) struct RawJob {
    /// Where the job's table is in the file (set after deserializing).
    #[serde(skip)]
    pub span: std::ops::Range<usize>,
    /// Which file: 0 is jobs.toml, then the files of jobs.d in order.
    #[serde(skip)]
    pub file: usize,
    /// Keys taken out because they were wrong (reported already).
    #[serde(skip)]
    pub stripped: Vec<String>,
    /// Unique; letters, digits, `-` and `_` (at most 64).
    #[schemars(
        with = "String",
        regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"),
        length(min = 1, max = 64)
    )]
    pub name: Option<Spanned<String>>,
    /// A cron expression (5 fields, or 6 with seconds first), or `@daily` and the like,
    /// in the job's time zone. A job has one of `schedule`, `rrule` or `at`.
    #[schemars(with = "Option<String>")]
    pub schedule: Option<Spanned<String>>,
    /// An RFC 5545 recurrence rule, e.g. `FREQ=WEEKLY;INTERVAL=2;BYDAY=MO`, from `start`.
    #[schemars(with = "Option<String>")]
    pub rrule: Option<Spanned<String>>,
    /// The rule's first occurrence (its DTSTART): a local time in the job's zone, in
    /// quotes, e.g. `"2026-01-05T09:00"`.
    #[schemars(with = "Option<String>", regex(pattern = LOCAL_TIME))]
    pub start: Option<Spanned<String>>,
    /// The rule's last possible occurrence, a local time like `start` (inclusive).
    #[schemars(with = "Option<String>", regex(pattern = LOCAL_TIME))]
    pub until: Option<Spanned<String>>,
    /// How many occurrences the rule has, at most.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub count: Option<Spanned<i64>>,
    /// One-shot reminders: a local time in quotes (`"2027-01-04T09:00"`), or a list.
    #[schemars(with = "Option<OneOrMany>")]
    pub at: Option<Spanned<OneOrMany>>,
    /// Allows an `rrule` that fires more than once a minute.
    pub allow_frequent: Option<bool>,
    /// Days not to fire on: `weekends`, a date (`2026-12-31`), or a calendar's name;
    /// overrides `[defaults] omit`.
    #[schemars(with = "Option<Vec<String>>")]
    pub omit: Option<Spanned<Vec<Spanned<String>>>>,
    /// What an occurrence on an omitted day does: `skip` (default), or move to the
    /// nearest earlier (`before`) or later (`after`) day that is not omitted.
    #[schemars(with = "Option<OnOmitName>")]
    pub on_omit: Option<Spanned<String>>,
    /// A dead-man's switch (healthchecks.io protocol): `GET URL/start` before each
    /// attempt, `GET URL` after a delivery, `POST URL/fail` on a failure or a hold.
    /// It may hold a token: never logged whole.
    #[schemars(with = "Option<String>", regex(pattern = r"^https?://"))]
    pub ping_url: Option<Spanned<String>>,
    /// `ping_url` from this environment variable.
    #[schemars(with = "Option<String>")]
    pub ping_url_env: Option<Spanned<String>>,
    /// `ping_url` from this file (its first line).
    #[schemars(with = "Option<String>")]
    pub ping_url_file: Option<Spanned<String>>,
    /// `ping_url` from this systemd credential (`LoadCredential=`).
    #[schemars(with = "Option<String>")]
    pub ping_url_credential: Option<Spanned<String>>,
    /// Advance warnings: one send per offset before each occurrence, e.g.
    /// `["7d", "1d", "0d"]` (`0d` is the occurrence itself).
    #[schemars(with = "Option<Vec<String>>")]
    pub before: Option<Spanned<Vec<Spanned<String>>>>,
    /// The job's time zone (IANA), overriding the top-level one.
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// The recipients: a list, e.g. `["a@example.com", "Kim <kim@example.com>"]`;
    /// required unless `recipients_file`.
    #[schemars(with = "Option<Vec<String>>", length(min = 1))]
    pub to: Option<Spanned<Vec<Spanned<String>>>>,
    /// One message per row of this CSV file (relative to jobs.toml's folder), to the row's
    /// `email`; every column is `row.COLUMN` in the templates. Instead of `to`.
    #[schemars(with = "Option<String>")]
    pub recipients_file: Option<Spanned<String>>,
    /// Adds `List-Unsubscribe` (RFC 2369) with this `mailto:` or `https:` URL (a
    /// template), and for `https:` `List-Unsubscribe-Post` (RFC 8058).
    #[schemars(with = "Option<String>", regex(pattern = r"^(mailto:|https://|\{)"))]
    pub list_unsubscribe: Option<Spanned<String>>,
    /// Copy recipients.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub cc: Vec<Spanned<String>>,
    /// Blind copies: in the envelope only, never in a header.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub bcc: Vec<Spanned<String>>,
    /// The Reply-To address.
    #[schemars(with = "Option<String>")]
    pub reply_to: Option<Spanned<String>>,
    /// The account that sends this job's messages: a name of `[account.NAME]`, or
    /// `default` (`[smtp]` or `[outbox]`); default `default`, or the only account.
    #[schemars(with = "Option<String>")]
    pub account: Option<Spanned<String>>,
    /// This job's sender, overriding the top-level `from`.
    #[schemars(with = "Option<String>")]
    pub from: Option<Spanned<String>>,
    /// The subject template (minijinja: `{{ date }}`, `{{ vars.owner }}`).
    #[schemars(with = "String")]
    pub subject: Option<Spanned<String>>,
    /// The body template (or `body_file`).
    #[schemars(with = "Option<String>")]
    pub body: Option<Spanned<String>>,
    /// The body template from this file, relative to jobs.toml's folder.
    #[schemars(with = "Option<String>")]
    pub body_file: Option<Spanned<String>>,
    /// An optional text/html alternative template.
    #[schemars(with = "Option<String>")]
    pub html: Option<Spanned<String>>,
    /// The text/html alternative from this file.
    #[schemars(with = "Option<String>")]
    pub html_file: Option<Spanned<String>>,
    /// Files to attach, read at send time: templates of paths (`"reports/{{ date }}.pdf"`),
    /// relative to jobs.toml's folder. The MIME type comes from the extension.
    #[schemars(with = "Option<Vec<String>>")]
    pub attach: Option<Spanned<Vec<Spanned<String>>>>,
    /// The folder attachments must be in (default jobs.toml's folder); a path that
    /// renders outside it is refused.
    #[schemars(with = "Option<String>")]
    pub attach_dir: Option<Spanned<String>>,
    /// The largest total size of the attached files, in bytes (default 25 MiB).
    #[schemars(with = "Option<i64>", range(min = 1))]
    pub attach_max_bytes: Option<Spanned<i64>>,
    /// An attachment that is not there: `fail` (default; retried until `retry_for`),
    /// `send` (without it, said in the log) or `skip` (the occurrence).
    #[schemars(with = "Option<OnMissingName>")]
    pub on_missing_attachment: Option<Spanned<String>>,
    /// A calendar invitation with each message: a text/calendar part and an .ics file.
    #[schemars(with = "Option<RawInvite>")]
    pub invite: Option<Spanned<RawInvite>>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Overrides `[defaults] catch_up`.
    #[schemars(with = "Option<CatchUpName>")]
    pub catch_up: Option<Spanned<String>>,
    /// Overrides `[defaults] max_late`.
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub max_late: Option<Spanned<String>>,
    /// Free-form strings, available in templates as `vars.NAME`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub vars: BTreeMap<String, Spanned<String>>,
}

/// A job needs `to`, or a `recipients_file` whose rows are the recipients.
fn to_or_recipients_file(schema: &mut schemars::Schema) {
    schema.insert(
        "anyOf".to_owned(),
        serde_json::json!([{"required": ["to"]}, {"required": ["recipients_file"]}]),
    );
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
#[schemars(rename = "OnMissingAttachment")]
enum OnMissingName {
    Fail,
    Send,
    Skip,
}

#[derive(JsonSchema)]
#[allow(dead_code)]
#[schemars(rename = "InviteMethod")]
enum MethodName {
    #[serde(rename = "PUBLISH")]
    Publish,
    #[serde(rename = "REQUEST")]
    Request,
}

/// `[job.invite]`: the event each message carries, at the occurrence (or the event of
/// an advance warning).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Invite")]
pub(in crate::config) struct RawInvite {
    /// The event's title (a template; default the subject).
    #[schemars(with = "Option<String>")]
    pub summary: Option<Spanned<String>>,
    /// How long the event lasts (default 30m).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub duration: Option<Spanned<String>>,
    /// Where (a template).
    #[schemars(with = "Option<String>")]
    pub location: Option<Spanned<String>>,
    /// The event's description (a template).
    #[schemars(with = "Option<String>")]
    pub description: Option<Spanned<String>>,
    /// `PUBLISH` (default: an event to add) or `REQUEST` (an invitation, with the
    /// recipients as attendees and the sender as organizer).
    #[schemars(with = "Option<MethodName>")]
    pub method: Option<Spanned<String>>,
    /// A reminder this long before the event, e.g. `15m`.
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub alarm: Option<Spanned<String>>,
}
