//! Networking of the guest (Kata's UpdateInterface and UpdateRoutes): the
//! shim reads the pod's network namespace and asks for the same interface,
//! addresses and routes on the guest's NIC, found by the MAC the shim gave
//! it. Requests are checked first ([`parse`]), then applied with rtnetlink
//! ([`apply`]).

pub mod apply;
pub mod parse;

/// Why a network request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A bad field.
    #[error("Invalid {field} {value:?}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why.
        why: String,
    },
    /// No NIC has the MAC.
    #[error("No NIC with MAC {mac} in the guest (present: {present:?})")]
    NoNic {
        /// The MAC asked for.
        mac: String,
        /// `name mac` of each link there is.
        present: Vec<String>,
    },
    /// A route names a device the guest does not have.
    #[error("No network device {name:?} in the guest (present: {present:?})")]
    NoDevice {
        /// The device.
        name: String,
        /// The links there are.
        present: Vec<String>,
    },
    /// A route rtnetlink's builder refuses.
    #[error("Invalid route {route}: {why}")]
    Route {
        /// The route.
        route: String,
        /// Why.
        why: String,
    },
    /// The netlink socket could not be opened.
    #[error("Cannot open a netlink socket")]
    Socket {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a request.
    #[error("Cannot {what}")]
    Netlink {
        /// What was asked.
        what: String,
        /// rtnetlink's error.
        #[source]
        source: rtnetlink::Error,
    },
}

impl NetError {
    /// The ttrpc status code.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            Self::Invalid { .. } | Self::Route { .. } => ttrpc::Code::INVALID_ARGUMENT,
            Self::NoNic { .. } | Self::NoDevice { .. } => ttrpc::Code::NOT_FOUND,
            Self::Socket { .. } | Self::Netlink { .. } => ttrpc::Code::INTERNAL,
        }
    }
}
