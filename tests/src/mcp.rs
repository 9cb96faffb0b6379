//! A real MCP client (the official Rust SDK's) talking to the gateway over an in-process
//! byte stream.

use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService, Service};
use serde_json::{Map, Value};
use ww_host::gateway::Gateway;
use ww_host::memory::Memory;

/// Serve `memory` as session `session` and connect `client` to it.
pub async fn connect_with<C: Service<RoleClient>>(
    memory: Memory,
    session: &str,
    client: C,
) -> RunningService<RoleClient, C> {
    let (server_end, client_end) = tokio::io::duplex(1 << 20);
    let gateway = Gateway::new(memory, session, "pipe");
    tokio::spawn(async move {
        let server = gateway.serve(server_end).await.expect("server handshake");
        let _ = server.waiting().await;
    });
    client.serve(client_end).await.expect("client handshake")
}

/// Serve `memory` as session `session` to a plain client.
pub async fn connect(memory: Memory, session: &str) -> RunningService<RoleClient, ()> {
    connect_with(memory, session, ()).await
}

/// A tool's arguments from a JSON object.
pub fn arguments(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("arguments must be an object"),
    }
}

/// Call `tool` with `args`; a protocol error panics, a tool error is the result.
pub async fn call<C: Service<RoleClient>>(
    client: &RunningService<RoleClient, C>,
    tool: &str,
    args: Value,
) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments(args)))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}
