//! The agent's errors and their ttrpc status codes.

use ttrpc::Code;

use crate::net::NetError;
use crate::spec::SpecError;
use crate::validate::InvalidInput;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A bad id or path.
    #[error(transparent)]
    Input(#[from] InvalidInput),
    /// A bad or unsupported spec.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A network request (UpdateInterface, UpdateRoutes).
    #[error(transparent)]
    Net(#[from] NetError),
    /// Some other bad value.
    #[error("{0}")]
    Invalid(String),
    /// No such container or process.
    #[error("{what} {id:?} not found")]
    NotFound {
        /// "container" or "exec".
        what: &'static str,
        /// The id.
        id: String,
    },
    /// It exists already.
    #[error("{what} {id:?} already exists")]
    Exists {
        /// "container" or "exec".
        what: &'static str,
        /// The id.
        id: String,
    },
    /// Not in the right state (not started, already started, ...).
    #[error("{0}")]
    State(String),
    /// The launcher failed (its message).
    #[error("Container {cid}: {msg}")]
    Launch {
        /// The container.
        cid: String,
        /// What failed.
        msg: String,
    },
    /// A system call or file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    /// An [`AgentError::Io`] with context.
    pub fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Self::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    /// The ttrpc status code.
    pub fn code(&self) -> Code {
        match self {
            Self::Input(_) | Self::Spec(_) | Self::Invalid(_) => Code::INVALID_ARGUMENT,
            Self::NotFound { .. } => Code::NOT_FOUND,
            Self::Exists { .. } => Code::ALREADY_EXISTS,
            Self::State(_) => Code::FAILED_PRECONDITION,
            Self::Launch { .. } | Self::Io { .. } => Code::INTERNAL,
            Self::Net(e) => e.code(),
        }
    }
}

impl From<AgentError> for ttrpc::Error {
    fn from(e: AgentError) -> Self {
        // the whole chain: "context: cause"
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_code_and_the_whole_message() {
        let e = AgentError::io(
            "mounting x",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        let ttrpc::Error::RpcStatus(s) = ttrpc::Error::from(e) else {
            panic!()
        };
        assert_eq!(s.code(), Code::INTERNAL);
        assert!(
            s.message().starts_with("mounting x: No such file"),
            "{}",
            s.message()
        );
        let e = AgentError::NotFound {
            what: "container",
            id: "c1".into(),
        };
        let ttrpc::Error::RpcStatus(s) = ttrpc::Error::from(e) else {
            panic!()
        };
        assert_eq!(
            (s.code(), s.message()),
            (Code::NOT_FOUND, "container \"c1\" not found")
        );
    }
}
