//! `ww-memory`: the World Weaver host binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand};
use wasmtime::component::Val;
use ww_host::config::FileConfig;
use ww_host::memory::{Memory, MemoryError, arguments};
use ww_host::plugins::{ComponentHost, ComponentSpec, HostConfig, Request, host_provided};
use ww_host::telemetry::{Telemetry, TelemetryConfig};
use ww_host::tracing_capability::IncomingContext;

/// World Weaver: a memory server for AI agents whose services and stores are
/// WebAssembly components, with one OpenTelemetry trace per request.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Directory of component files (*.wasm) to load.
    #[arg(
        long,
        env = "WW_PLUGIN_DIR",
        default_value = "target/wasm32-wasip2/release",
        global = true
    )]
    plugins_dir: PathBuf,

    /// Configuration file (TOML): which component serves each role. Without one, every
    /// component in the plugin directory is loaded and routed by what it exports.
    #[arg(long, env = "WW_CONFIG", global = true)]
    config: Option<PathBuf>,

    /// Where compiled components are cached between runs (default: ~/.cache/ww-memory).
    #[arg(long, env = "WW_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Call one memory tool, print its JSON result, exit non-zero on a tool error.
    ///
    /// The 17 tools of the memory server (create_episode, recall_episodes, query_at_time,
    /// mark_important, create_entity, create_relation, semantic_recall, spread_activation,
    /// supersede_fact, create_skill, recall_skill, execute_skill, deprecate_skill,
    /// consolidate_now, get_provenance, get_session_id, memory_stats). Example: `ww-memory call create_episode '{"content": "fixed the flaky test"}'`.
    Call {
        /// The tool.
        tool: String,
        /// Its arguments, a JSON object.
        #[arg(default_value = "{}")]
        args: String,
        /// The session the call belongs to (default: a new one, printed on stderr).
        #[arg(long, env = "WW_SESSION_ID")]
        session: Option<String>,
        /// Continue the trace of this W3C traceparent.
        #[arg(long)]
        traceparent: Option<String>,
    },
    /// List the loaded components: file, imports (and where they are routed), exports.
    Plugins,
    /// Call one exported function, as one traced request, and print its result.
    ///
    /// Arguments are WAVE values, e.g.
    /// `ww-memory invoke ww:memory/fixture-driver@0.1.0 run '"hello"' succeed`.
    Invoke {
        /// The exported interface, e.g. `ww:memory/fixture-driver@0.1.0`.
        interface: String,
        /// The function in it.
        function: String,
        /// Arguments in WAVE syntax, one per parameter.
        args: Vec<String>,
        /// Continue the trace of this W3C traceparent.
        #[arg(long)]
        traceparent: Option<String>,
    },
}

fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("ww-memory"))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let telemetry_config = TelemetryConfig::from_env()?;
    tracing::info!("{}", telemetry_config.describe());
    let telemetry =
        Telemetry::builder(telemetry_config).build(&tokio::runtime::Handle::current())?;

    // The memory tools always run on the roles of a configuration (the defaults when no
    // file is given); `plugins` and `invoke` without a file load the whole directory.
    let file = match (&cli.config, &cli.command) {
        (Some(path), _) => Some(FileConfig::load(path)?),
        (None, Command::Call { .. }) => Some(FileConfig {
            plugin_dir: Some(cli.plugins_dir.clone()),
            ..FileConfig::default()
        }),
        (None, _) => None,
    };
    let (components, file_cache_dir) = match file {
        Some(mut file) => {
            if let Some(dir) = std::env::var_os("WW_DATA_DIR") {
                file.data_dir = Some(PathBuf::from(dir));
            }
            (file.component_specs(), file.cache_dir.clone())
        }
        None => {
            let components = ComponentSpec::from_dir(&cli.plugins_dir).with_context(|| {
                format!(
                    "cannot read the plugin directory {}",
                    cli.plugins_dir.display()
                )
            })?;
            (components, None)
        }
    };
    if components.is_empty() {
        bail!(
            "no components (*.wasm) in {}; run `make plugins` or set WW_PLUGIN_DIR",
            cli.plugins_dir.display()
        );
    }
    let config = HostConfig {
        components,
        cache_dir: cli.cache_dir.or(file_cache_dir).or_else(default_cache_dir),
        ..HostConfig::default()
    };
    let host = ComponentHost::load(config, telemetry.clone()).await?;

    let code = match cli.command {
        Command::Call {
            tool,
            args,
            session,
            traceparent,
        } => {
            let session = session.unwrap_or_else(|| {
                let session = uuid::Uuid::new_v4().to_string();
                eprintln!("session {session} (set WW_SESSION_ID or --session to reuse one)");
                session
            });
            let args: serde_json::Value = serde_json::from_str(&args)
                .with_context(|| "the arguments are not valid JSON".to_owned())?;
            let mut request = Request::new(format!("call.{tool}"));
            if let Some(tp) = traceparent {
                request = request.with_parent(IncomingContext::traceparent(tp));
            }
            let memory = Memory::new(std::sync::Arc::new(host));
            let result = call_tool(&memory, request, &session, &tool, args).await;
            let (code, body) = match result {
                Ok(value) => (ExitCode::SUCCESS, value),
                Err(error) => (
                    ExitCode::FAILURE,
                    serde_json::to_value(&error).unwrap_or_default(),
                ),
            };
            println!("{}", serde_json::to_string_pretty(&body)?);
            telemetry.shutdown().await;
            return Ok(code);
        }
        Command::Plugins => {
            for (component, shape) in host.components() {
                println!("{}  ({})", component.name(), component.path().display());
                for (interface, functions) in &shape.imports {
                    let source = match host.exporter(interface) {
                        Some(c) => format!("component {}", c.name()),
                        None if host_provided(interface) => "host".to_owned(),
                        None if functions.is_empty() => "(types only)".to_owned(),
                        None => "unrouted".to_owned(),
                    };
                    println!("  import {interface}  <- {source}");
                }
                for (interface, functions) in &shape.exports {
                    println!("  export {interface}  [{}]", functions.join(", "));
                }
            }
            ExitCode::SUCCESS
        }
        Command::Invoke {
            interface,
            function,
            args,
            traceparent,
        } => {
            let exporter = host
                .exporter(&interface)
                .ok_or_else(|| anyhow!("no loaded component exports {interface}"))?;
            let params = exporter.params(&interface, &function).ok_or_else(|| {
                anyhow!(
                    "{} exports no function {function} in {interface}",
                    exporter.name()
                )
            })?;
            if params.len() != args.len() {
                let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
                bail!(
                    "{function} takes {} arguments ({}), {} given",
                    params.len(),
                    names.join(", "),
                    args.len()
                );
            }
            let values = params
                .iter()
                .zip(&args)
                .map(|((name, ty), arg)| {
                    Val::from_wave(ty, arg).map_err(|e| anyhow!("argument {name}: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut request = Request::new(format!("invoke.{function}"));
            if let Some(tp) = traceparent {
                request = request.with_parent(IncomingContext::traceparent(tp));
            }
            let result = host.invoke(request, &interface, &function, &values).await;
            match result {
                Ok(values) => {
                    for value in values {
                        println!("{}", value.to_wave().unwrap_or_else(|e| format!("<{e}>")));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    };
    telemetry.shutdown().await;
    Ok(code)
}

/// One memory tool by name, with JSON arguments, as JSON.
async fn call_tool(
    memory: &Memory,
    request: Request,
    session: &str,
    tool: &str,
    args: serde_json::Value,
) -> Result<serde_json::Value, MemoryError> {
    fn json<T: serde::Serialize>(value: T) -> Result<serde_json::Value, MemoryError> {
        serde_json::to_value(value).map_err(|e| MemoryError::invalid("result", e.to_string()))
    }
    let m = memory;
    let r = request;
    match tool {
        "create_episode" => json(m.create_episode(r, session, arguments(args)?).await?),
        "recall_episodes" => json(m.recall_episodes(r, session, arguments(args)?).await?),
        "query_at_time" => json(m.query_at_time(r, session, arguments(args)?).await?),
        "mark_important" => json(m.mark_important(r, session, arguments(args)?).await?),
        "create_entity" => json(m.create_entity(r, session, arguments(args)?).await?),
        "create_relation" => json(m.create_relation(r, arguments(args)?).await?),
        "semantic_recall" => json(m.semantic_recall(r, arguments(args)?).await?),
        "spread_activation" => json(m.spread_activation(r, arguments(args)?).await?),
        "supersede_fact" => json(m.supersede_fact(r, session, arguments(args)?).await?),
        "create_skill" => json(m.create_skill(r, session, arguments(args)?).await?),
        "recall_skill" => json(m.recall_skill(r, arguments(args)?).await?),
        "execute_skill" => json(m.execute_skill(r, arguments(args)?).await?),
        "deprecate_skill" => json(m.deprecate_skill(r, arguments(args)?).await?),
        "consolidate_now" => json(m.consolidate_now(r, arguments(args)?).await?),
        "get_provenance" => json(m.get_provenance(r, arguments(args)?).await?),
        "get_session_id" => {
            arguments::<NoArguments>(args)?;
            json(m.get_session_id(r, session))
        }
        "memory_stats" => json(m.memory_stats(r, arguments(args)?).await?),
        other => Err(MemoryError::invalid(
            "tool",
            format!("no tool {other}; the tools are: {}", TOOLS.join(", ")),
        )),
    }
}

/// The tools `call` knows, in the order of SPEC 6.
const TOOLS: [&str; 17] = [
    "create_episode",
    "recall_episodes",
    "query_at_time",
    "mark_important",
    "create_entity",
    "create_relation",
    "semantic_recall",
    "spread_activation",
    "supersede_fact",
    "create_skill",
    "recall_skill",
    "execute_skill",
    "deprecate_skill",
    "consolidate_now",
    "get_provenance",
    "get_session_id",
    "memory_stats",
];

/// A tool without arguments still refuses unknown ones.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArguments {}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WW_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn")
            }),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Cli::parse())) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
