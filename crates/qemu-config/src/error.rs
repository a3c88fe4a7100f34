//! The error returned by [`Config::validate`](crate::Config::validate).

use thiserror::Error;

/// Why a [`Config`](crate::Config) would not be accepted by QEMU, or could be
/// misread by it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    /// An id is not a well-formed QEMU identifier.
    #[error(
        "Invalid {family} id {id:?}: must start with a letter and contain only letters, digits, '-', '.' and '_'"
    )]
    InvalidId {
        /// The id family (`device`, `object`, `chardev`, …).
        family: &'static str,
        /// The offending id.
        id: String,
    },
    /// Two items of one family share an id.
    #[error("Duplicate {family} id {id:?}")]
    DuplicateId {
        /// The id family.
        family: &'static str,
        /// The repeated id.
        id: String,
    },
    /// A device names a bus that neither the machine nor an earlier device provides.
    #[error(
        "Device {device} is on bus {bus:?}, which neither the machine nor an earlier device provides"
    )]
    UnknownBus {
        /// The device id (or driver when it has no id).
        device: String,
        /// The missing bus.
        bus: String,
    },
    /// A reference (`drive=`, `netdev=`, `chardev=`, `memdev=`, …) names nothing.
    #[error("{from} references unknown {kind} {id:?}")]
    UnknownReference {
        /// Who holds the reference.
        from: String,
        /// What kind of item it should name.
        kind: &'static str,
        /// The missing id.
        id: String,
    },
    /// A reference names an object of the wrong type.
    #[error("{from} references object {id:?} of type {found}, expected {expected}")]
    WrongObjectType {
        /// Who holds the reference.
        from: String,
        /// The referenced object id.
        id: String,
        /// The kind of object expected.
        expected: &'static str,
        /// The QOM type actually found.
        found: String,
    },
    /// A backend (drive, netdev, chardev, memdev) is used by two frontends.
    #[error("{kind} {id:?} is used by both {first} and {second}")]
    ReferenceInUse {
        /// What kind of backend.
        kind: &'static str,
        /// The backend id.
        id: String,
        /// The first user.
        first: String,
        /// The second user.
        second: String,
    },
    /// The memory size is zero.
    #[error("Memory size must be greater than 0")]
    ZeroMemory,
    /// `maxmem` is below the memory size.
    #[error("Maxmem {maxmem_mib}M is smaller than the memory size {size_mib}M")]
    MaxMemTooSmall {
        /// The initial memory size in MiB.
        size_mib: u64,
        /// The maximum memory size in MiB.
        maxmem_mib: u64,
    },
    /// Memory slots were given without room to hotplug memory (no maxmem, or maxmem equal to the size).
    #[error("Memory slots ({slots}) need a maxmem larger than the memory size")]
    SlotsWithoutHotplugRange {
        /// The number of slots asked for.
        slots: u32,
    },
    /// More memory slots than QEMU supports.
    #[error("Too many memory slots: {slots} (at most {max})")]
    TooManySlots {
        /// The number of slots asked for.
        slots: u32,
        /// The limit.
        max: u32,
    },
    /// `-smp` with zero CPUs.
    #[error("CPU count must be at least 1")]
    ZeroCpus,
    /// More boot CPUs than `maxcpus`.
    #[error("CPU count {cpus} exceeds maxcpus {maxcpus}")]
    CpusExceedMaxCpus {
        /// Boot CPUs.
        cpus: u32,
        /// Maximum CPUs.
        maxcpus: u32,
    },
    /// sockets × dies × cores × threads does not equal maxcpus.
    #[error("CPU topology gives {product} CPUs, but maxcpus is {maxcpus}")]
    TopologyMismatch {
        /// sockets × dies × cores × threads.
        product: u64,
        /// maxcpus.
        maxcpus: u32,
    },
    /// A value contains a newline, carriage return or NUL.
    #[error("Value of {option} contains a newline or NUL: {value:?}")]
    ForbiddenChar {
        /// The QEMU option (such as `-append`) or `extra argument`.
        option: String,
        /// The offending value.
        value: String,
    },
    /// A value is malformed.
    #[error("Invalid {field} {value:?}: {reason}")]
    InvalidValue {
        /// What the value is.
        field: String,
        /// The offending value.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// An image path is not absolute (QEMU would read `json:` or `proto:` prefixes).
    #[error("{field} must be an absolute path, got {path:?}")]
    NotAbsolute {
        /// What the path is.
        field: String,
        /// The offending path.
        path: String,
    },
    /// A number is above the limit of its QEMU property.
    #[error("{field} is {value}, above the maximum {max}")]
    OutOfRange {
        /// What the number is.
        field: String,
        /// The value given.
        value: u64,
        /// The largest value QEMU accepts.
        max: u64,
    },
    /// A device does not exist for the chosen transport.
    #[error("Device {device} has no {transport} variant")]
    UnsupportedTransport {
        /// The device id.
        device: String,
        /// The transport.
        transport: &'static str,
    },
    /// A field is set that the device's transport does not have.
    #[error("Device {device}: {field} does not apply to the {transport} transport")]
    FieldNotForTransport {
        /// The device id.
        device: String,
        /// The field (QEMU property name).
        field: &'static str,
        /// The transport.
        transport: &'static str,
    },
    /// Two settings cannot be used together.
    #[error("{a} cannot be used with {b}")]
    Conflict {
        /// The first setting.
        a: String,
        /// The second setting.
        b: String,
    },
    /// A required setting is missing.
    #[error("{item} needs {what}")]
    Missing {
        /// The item that is incomplete.
        item: String,
        /// What it needs.
        what: &'static str,
    },
}
