//! A small, blocking client of the Bolt protocol (5.x, falling back to 4.4) over one
//! `std::net::TcpStream`, for guest components on `wasm32-wasip2` (where the host's
//! `wasi:sockets` carry it). Written here because the Rust Bolt clients on crates.io
//! (neo4rs, bolt-client) need an async runtime that WASI guests do not have.

mod connection;
pub mod packstream;

pub use connection::{BoltError, Connection, Options, Rows, Strings};
pub use packstream::{Value, map};
