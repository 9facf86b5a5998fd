//! Facts about the machine that a configuration falls back on: the time zone, systemd's
//! state directory, the node name. Read once by `Host::from_env` and passed in, so
//! tests and the in-process service give their own.

use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// Why the machine's time zone is unusable, in words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ZoneError(pub String);

/// Facts about the machine that a config may fall back on, injected so tests control them.
#[derive(Clone, Debug)]
pub struct Host {
    /// Used to test-render templates and to check that schedules fire.
    pub now: DateTime<Utc>,
    /// The zone used when jobs.toml names none: `TZ`, then /etc/localtime, then UTC.
    pub default_tz: Result<Tz, ZoneError>,
    /// `$STATE_DIRECTORY`, which systemd sets for `StateDirectory=`.
    pub state_directory: Option<PathBuf>,
    /// The node name when `[ledger]` gives none: `$CRONMAIL_NODE`, else the host name.
    pub node: String,
}

impl Host {
    /// A machine in UTC at `now`, with no systemd state directory, named `test`: for
    /// tests, fuzzing and benchmarks, which must not depend on the machine they run on.
    pub fn fixed(now: DateTime<Utc>) -> Self {
        Host {
            now,
            default_tz: Ok(Tz::UTC),
            state_directory: None,
            node: "test".to_owned(),
        }
    }

    pub fn from_env() -> Self {
        Host {
            now: Utc::now(),
            default_tz: system_timezone(),
            // systemd may list several folders, separated by colons; ours is the first.
            state_directory: std::env::var_os("STATE_DIRECTORY")
                .and_then(|v| {
                    v.to_str()
                        .and_then(|s| s.split(':').next())
                        .map(PathBuf::from)
                })
                .filter(|p| !p.as_os_str().is_empty()),
            node: std::env::var("CRONMAIL_NODE")
                .ok()
                .filter(|n| !n.is_empty())
                .or_else(|| hostname::get().ok()?.into_string().ok())
                .unwrap_or_else(|| "cronmail".to_owned()),
        }
    }
}

/// `TZ` if set (a leading `:` is allowed, as glibc does), else the zone /etc/localtime
/// names, else UTC.
pub fn system_timezone() -> Result<Tz, ZoneError> {
    if let Ok(tz) = std::env::var("TZ") {
        let name = tz.strip_prefix(':').unwrap_or(&tz);
        if !name.is_empty() {
            return Tz::from_str(name).map_err(|_| {
                ZoneError(format!("the TZ environment variable is `{tz}`, which is not an IANA time zone; set `timezone` in jobs.toml"))
            });
        }
    }
    Ok(iana_time_zone::get_timezone()
        .ok()
        .and_then(|n| Tz::from_str(&n).ok())
        .unwrap_or(Tz::UTC))
}
