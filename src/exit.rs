//! Process exit codes, from BSD's `sysexits.h`, so that shell scripts and systemd's
//! `RestartPreventExitStatus=78` can tell a bad configuration from a flaky network.

use std::process::ExitCode;

use crate::failure::ErrorClass;

/// What a command's outcome means to the caller, mapped to a sysexits code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: everything worked.
    Ok,
    /// 64 `EX_USAGE`: the command line was wrong.
    Usage,
    /// 65 `EX_DATAERR`: the server rejected the message permanently (5xx).
    Rejected,
    /// 69 `EX_UNAVAILABLE`: no connection, or TLS failed.
    Unavailable,
    /// 70 `EX_SOFTWARE`: a bug or an unexpected local failure.
    Software,
    /// 73 `EX_CANTCREAT`: the state directory or the ledger cannot be created or opened.
    CantCreate,
    /// 74 `EX_IOERR`: a local file could not be written (the outbox, the state directory).
    Io,
    /// 75 `EX_TEMPFAIL`: a transient failure (4xx, timeout); trying later may work.
    TempFail,
    /// 77 `EX_NOPERM`: the server refused our credentials.
    NoPerm,
    /// 78 `EX_CONFIG`: the configuration is invalid.
    Config,
}

impl Exit {
    /// Every exit status, for the manual's table (a test checks it names each).
    pub const ALL: [Exit; 10] = [
        Exit::Ok,
        Exit::Usage,
        Exit::Rejected,
        Exit::Unavailable,
        Exit::Software,
        Exit::CantCreate,
        Exit::Io,
        Exit::TempFail,
        Exit::NoPerm,
        Exit::Config,
    ];

    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Usage => 64,
            Exit::Rejected => 65,
            Exit::Unavailable => 69,
            Exit::Software => 70,
            Exit::CantCreate => 73,
            Exit::Io => 74,
            Exit::TempFail => 75,
            Exit::NoPerm => 77,
            Exit::Config => 78,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// A failed send's exit code: the class decides it, so scripts can tell a wrong
/// password (77) from a server that is down (69) or busy (75).
impl From<ErrorClass> for Exit {
    fn from(class: ErrorClass) -> Self {
        match class {
            ErrorClass::Auth => Exit::NoPerm,
            ErrorClass::Tls | ErrorClass::Connect => Exit::Unavailable,
            ErrorClass::Timeout | ErrorClass::Transient | ErrorClass::Quota => Exit::TempFail,
            ErrorClass::Permanent => Exit::Rejected,
            ErrorClass::Local => Exit::Io,
        }
    }
}
