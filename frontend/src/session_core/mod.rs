//! The session's decisions, free of I/O, in the "Command" style of openraft's engine: the
//! connection shell (`connection/`) gives them the facts it has (the CONNECT, what the
//! broker had stored, how the connection ended, the records a cursor read) and performs the
//! actions they return (assign an id, resume or discard a session, publish or delay a will,
//! save or delete a record, send a message under an identifier, skip it). Nothing here
//! touches a socket, a file, a lock or the clock; the shell passes the time in.
//!
//! - [`connect`]: at CONNECT and at the connection's end: client id, session expiry,
//!   takeover, the will.
//! - [`delivery`]: for each record read, whether, how and under which identifier it goes
//!   out (routing, redelivery, the in-flight window, expiry).
//!
//! The structs these build on are in `session.rs` (subscriptions, packet-id windows) and
//! `session_state.rs` (the record in `$sessions`).

pub(crate) mod connect;
pub(crate) mod delivery;
