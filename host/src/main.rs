//! `ww-memory`: the World Weaver host binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand};
use rmcp::ServiceExt as _;
use tokio_util::sync::CancellationToken;
use wasmtime::component::Val;
use ww_host::config::{self, FileConfig};
use ww_host::gateway::http::{self, HttpOptions};
use ww_host::gateway::sessions::SessionLimits;
use ww_host::gateway::{Gateway, tools};
use ww_host::memory::{CheckError, Memory};
use ww_host::plugins::{
    ComponentHost, ComponentSpec, EndpointCheck, HostConfig, Request, Role, host_provided,
};
use ww_host::session::{self, Session, TokenBindings};
use ww_host::telemetry::{Telemetry, TelemetryConfig};
use ww_host::tracing_capability::IncomingContext;

/// mimalloc: spans are built on a request's thread and freed on the exporter's, and a
/// guest's span arrives as freshly lifted strings; glibc's allocator serves that pattern
/// slowly (a guest span cost 2.12 µs with it, 1.42 µs with mimalloc, in one
/// `cargo bench --bench tracing` each; docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

    /// The session this process's calls belong to (default: the data directory's
    /// default session, created on the first start and kept, so a restart continues the
    /// same memory).
    #[arg(long, env = "WW_SESSION_ID", global = true)]
    session: Option<String>,

    /// What to do (default: `serve`).
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the memory tools over MCP: on stdio (the default; point an MCP client's
    /// command at `ww-memory serve`), or over streamable HTTP with `--http`.
    Serve(ServeArgs),
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
        /// Continue the trace of this W3C traceparent.
        #[arg(long)]
        traceparent: Option<String>,
    },
    /// What is loaded for each role (component, WIT world, file), then every component's
    /// imports (and where they are routed) and exports. Uses the same configuration as
    /// `serve`.
    Plugins,
    /// Rebuild every stored vector from its text with the configured embedder (after
    /// changing the embedder: a server refuses a store another embedder wrote). Safe to
    /// interrupt and run again; uses the same configuration as `serve`.
    Reembed {
        /// Points per request.
        #[arg(long, default_value_t = REEMBED_BATCH)]
        batch: u32,
    },
    /// Store the episodes of a JSON Lines file (one `create_episode` argument object a
    /// line, in the order they happened) in the session, in batches of `create_episodes`.
    /// Safe to interrupt and run again: each line's episode has an id (the line's
    /// `"id"`, or one derived from the line), and an id already stored is skipped.
    Import {
        /// The file.
        file: PathBuf,
        /// Episodes per call (at most 256).
        #[arg(long, default_value_t = IMPORT_BATCH)]
        batch: usize,
    },
    /// Bearer tokens for HTTP, each bound to a session (several agents, one server,
    /// each with its own episodes).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Call one exported function, as one traced request, and print its result.
    ///
    /// Arguments are WAVE values, e.g.
    /// `ww-memory invoke ww:fixtures/driver@0.1.0 run '"hello"' succeed`.
    Invoke {
        /// The exported interface, e.g. `ww:fixtures/driver@0.1.0`.
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

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a new token bound to SESSION, append its SHA-256 to the tokens file, print
    /// the token (shown this once: the file keeps only its digest).
    Add {
        /// The session its requests are served in.
        session: String,
        /// The tokens file (default: the configuration's `tokens`).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Serve streamable HTTP on this address instead of stdio, e.g. `127.0.0.1:8765`;
    /// the endpoint is `http://ADDR/mcp`. Set WW_AUTH_TOKEN to require
    /// `Authorization: Bearer <token>`; the configuration's `tokens` file (or
    /// WW_TOKENS_FILE) binds further tokens to their own sessions.
    #[arg(long, env = "WW_HTTP", value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// A `Host` header value to accept besides loopback names (repeatable), needed when
    /// clients reach the server by another name.
    #[arg(long = "allow-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// A browser origin to accept besides loopback ones (repeatable), e.g.
    /// `https://app.example.com:443`.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// Start even when a store's or an embedder's endpoint does not answer (the
    /// configuration's `check_endpoints = false`): its calls fail with STORAGE_ERROR or
    /// EMBEDDING_ERROR until it is up.
    #[arg(long = "no-endpoint-check")]
    no_endpoint_check: bool,
    /// Open MCP sessions at most (HTTP); at the cap the idle ones make room, the
    /// never-initialised first, else a new session is answered 503 with Retry-After.
    #[arg(long, env = "WW_MAX_SESSIONS", value_name = "N", default_value_t = SessionLimits::default().max)]
    max_sessions: usize,
    /// Open MCP sessions one bearer token may hold at most (with tokens configured).
    #[arg(long, env = "WW_MAX_SESSIONS_PER_TOKEN", value_name = "N", default_value_t = SessionLimits::default().per_token)]
    max_sessions_per_token: usize,
    /// Seconds a session may stay idle before it is closed (HTTP).
    #[arg(long, env = "WW_SESSION_IDLE_TIMEOUT", value_name = "SECONDS", default_value_t = SessionLimits::default().idle_timeout.as_secs())]
    session_idle_timeout: u64,
    /// Seconds a new session has to send its second message (normally
    /// `notifications/initialized`) before it is closed (HTTP).
    #[arg(long, env = "WW_SESSION_HANDSHAKE_TIMEOUT", value_name = "SECONDS", default_value_t = SessionLimits::default().handshake_timeout.as_secs())]
    session_handshake_timeout: u64,
}

fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("ww-memory"))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let telemetry_config = TelemetryConfig::from_env()?;
    let telemetry_summary = telemetry_config.describe();
    tracing::info!("{telemetry_summary}");
    let telemetry =
        Telemetry::builder(telemetry_config).build(&tokio::runtime::Handle::current())?;

    // The memory tools always run on the roles of a configuration (the defaults when no
    // file is given); `plugins` and `invoke` without a file load the whole directory.
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeArgs::default()));
    let file = match (&cli.config, &command) {
        (Some(path), _) => Some(FileConfig::load(path)?),
        (
            None,
            Command::Call { .. }
            | Command::Serve(_)
            | Command::Plugins
            | Command::Reembed { .. }
            | Command::Import { .. }
            | Command::Token { .. },
        ) => Some(FileConfig {
            plugin_dir: Some(cli.plugins_dir.clone()),
            ..FileConfig::default()
        }),
        (None, _) => None,
    };
    let checked = file
        .as_ref()
        .and_then(|f| f.check_endpoints)
        .unwrap_or(true);
    let endpoint_check = match &command {
        // Shows a configuration whatever is running; marks what does not answer.
        Command::Plugins => EndpointCheck::Report,
        Command::Serve(args) if args.no_endpoint_check || !checked => EndpointCheck::Report,
        _ => EndpointCheck::Required,
    };
    let (components, file_cache_dir, data_dir, tokens_file, inference) = match file {
        Some(mut file) => {
            // A file without `plugin_dir` finds components where the flag or
            // WW_PLUGIN_DIR says.
            file.plugin_dir
                .get_or_insert_with(|| cli.plugins_dir.clone());
            if let Some(dir) = std::env::var_os("WW_DATA_DIR") {
                file.data_dir = Some(PathBuf::from(dir));
            }
            if let Some(dir) = std::env::var_os("WW_MODEL_DIR") {
                file.override_model_dir(PathBuf::from(dir));
            }
            let data_dir = file
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR));
            let tokens = std::env::var_os("WW_TOKENS_FILE")
                .map(PathBuf::from)
                .or_else(|| file.tokens.clone());
            (
                file.component_specs(),
                file.cache_dir.clone(),
                data_dir,
                tokens,
                file.inference.clone(),
            )
        }
        None => {
            let components = ComponentSpec::from_dir(&cli.plugins_dir).with_context(|| {
                format!(
                    "cannot read the plugin directory {}",
                    cli.plugins_dir.display()
                )
            })?;
            (
                components,
                None,
                PathBuf::from(config::DEFAULT_DATA_DIR),
                None,
                config::InferenceFileConfig::default(),
            )
        }
    };
    if let Command::Token {
        command: TokenCommand::Add { session, file },
    } = &command
    {
        let path = file.clone().or(tokens_file).ok_or_else(|| {
            anyhow!("no tokens file: give --file, set WW_TOKENS_FILE, or name `tokens` in the configuration")
        })?;
        let token = TokenBindings::add(&path, session)?;
        eprintln!(
            "a token for session {session}, its digest added to {} (the token is not kept: \
             copy it now)",
            path.display()
        );
        println!("{token}");
        return Ok(ExitCode::SUCCESS);
    }
    if components.is_empty() {
        bail!(
            "no components (*.wasm) in {}; run `make plugins` or set WW_PLUGIN_DIR",
            cli.plugins_dir.display()
        );
    }
    let config = HostConfig {
        components,
        cache_dir: cli.cache_dir.or(file_cache_dir).or_else(default_cache_dir),
        endpoint_check,
        inference: inference.resolve(
            std::env::var_os("WW_ONNXRUNTIME"),
            std::env::var("WW_INFERENCE_THREADS").ok(),
        )?,
        ..HostConfig::default()
    };
    let host = ComponentHost::load(config, telemetry.clone()).await?;

    let code = match command {
        Command::Serve(args) => {
            let session = resolve_session(cli.session, &data_dir)?;
            let memory = Memory::new(std::sync::Arc::new(host));
            // Loads the embedder (a model's weights) and the store before the first
            // request, and refuses vectors another embedder wrote.
            match memory.check_embedder().await {
                Ok(embedder) => match embedder_inference(memory.host()) {
                    Some(path) => tracing::info!("embedder {embedder}, inference {path}"),
                    None => tracing::info!("embedder {embedder}"),
                },
                // Told to serve before its stores are up: the check waits for them.
                Err(CheckError::Unavailable(error)) if endpoint_check == EndpointCheck::Report => {
                    tracing::warn!(
                        "serving without the start-up check of the embedder and the stores \
                         ({}); calls fail until they answer",
                        error.message
                    );
                }
                Err(error) => return Err(error.into()),
            }
            let tokens = match &tokens_file {
                Some(path) => Some(std::sync::Arc::new(TokenBindings::load(path)?)),
                None => None,
            };
            tracing::info!("{session}");
            let gateway = Gateway::new(memory, session, "pipe");
            match args.http {
                Some(addr) => serve_http(gateway, addr, args, tokens).await?,
                None => {
                    tracing::info!("serving MCP on stdio");
                    let server = gateway
                        .serve(rmcp::transport::stdio())
                        .await
                        .context("the MCP handshake failed")?;
                    tokio::select! {
                        quit = server.waiting() => { quit?; }
                        () = interrupted() => tracing::info!("interrupted, stopping"),
                    }
                }
            }
            telemetry.shutdown().await;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Call {
            tool,
            args,
            traceparent,
        } => {
            let session = resolve_session(cli.session, &data_dir)?;
            tracing::info!("{session}");
            let args: serde_json::Value = serde_json::from_str(&args)
                .with_context(|| "the arguments are not valid JSON".to_owned())?;
            let mut request = Request::new(format!("call.{tool}"));
            if let Some(tp) = traceparent {
                request = request.with_parent(IncomingContext::traceparent(tp));
            }
            let memory = Memory::new(std::sync::Arc::new(host));
            let result = tools::call(
                &memory,
                request,
                tools::Caller {
                    session: &session,
                    protocol_version: None,
                    sessions: None,
                },
                &tool,
                args,
            )
            .await;
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
        // Answered above, before any component loads.
        Command::Token { .. } => ExitCode::SUCCESS,
        Command::Import { file, batch } => {
            let session = resolve_session(cli.session, &data_dir)?;
            let memory = Memory::new(std::sync::Arc::new(host));
            let code = import(&memory, &session, &file, batch).await?;
            telemetry.shutdown().await;
            return Ok(code);
        }
        Command::Reembed { batch } => {
            let memory = Memory::new(std::sync::Arc::new(host));
            let code = reembed(&memory, batch).await?;
            telemetry.shutdown().await;
            return Ok(code);
        }
        Command::Plugins => {
            let memory = Memory::new(std::sync::Arc::new(host));
            let host = memory.host();
            println!(
                "{:<13} {:<18} {:<36} file",
                "role", "component", "WIT world"
            );
            for role in Role::ALL {
                let Some(component) = host.exporter(role.interface()) else {
                    println!("{:<13} (none)", role.key());
                    continue;
                };
                let exports: Vec<&str> = host.exporters_of(component.name()).collect();
                println!(
                    "{:<13} {:<18} {:<36} {}",
                    role.key(),
                    component.name(),
                    role.world(&exports),
                    component.path().display()
                );
            }
            // The model the embedder runs (loading it, when it is a model: what the
            // first request would otherwise pay).
            match memory.embedder().await {
                Ok(embedder) => println!("{:<13} {embedder}", "model"),
                Err(error) => println!("{:<13} (unavailable: {})", "model", error.message),
            }
            if let Some(path) = embedder_inference(host) {
                println!("{:<13} {path}", "inference");
            }
            println!();
            for (component, shape) in host.components() {
                println!("{}  ({})", component.name(), component.path().display());
                if let Some(endpoint) = component.endpoint() {
                    match component.endpoint_unreachable() {
                        None => println!("  network {}  (nothing else)", endpoint.url),
                        Some(reason) => println!(
                            "  network {}  (nothing else)  UNREACHABLE: {reason}",
                            endpoint.url
                        ),
                    }
                }
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
                let calls = component.calls();
                let list = |set: &std::collections::BTreeSet<String>| {
                    set.iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                if component.instances() > 1 || !calls.long_running.is_empty() {
                    println!("  instances {}", component.instances());
                }
                if !calls.serial.is_empty() {
                    println!(
                        "  serial [{}]  (one at a time, on one instance)",
                        list(&calls.serial)
                    );
                }
                if !calls.long_running.is_empty() {
                    println!(
                        "  long-running [{}]  (each on an instance of its own)",
                        list(&calls.long_running)
                    );
                }
                for line in &calls.unknown {
                    println!("  calls: not understood, ignored: {line}");
                }
            }
            println!();
            println!("telemetry: {telemetry_summary}");
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

/// Serves `gateway` over streamable HTTP on `addr` until interrupted.
async fn serve_http(
    gateway: Gateway,
    addr: SocketAddr,
    args: ServeArgs,
    tokens: Option<std::sync::Arc<TokenBindings>>,
) -> anyhow::Result<()> {
    let options = HttpOptions {
        token: std::env::var("WW_AUTH_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        tokens,
        allowed_hosts: args.allowed_hosts,
        allowed_origins: args.allowed_origins,
        sessions: SessionLimits {
            max: args.max_sessions.max(1),
            per_token: args.max_sessions_per_token.max(1),
            idle_timeout: std::time::Duration::from_secs(args.session_idle_timeout.max(1)),
            handshake_timeout: std::time::Duration::from_secs(
                args.session_handshake_timeout.max(1),
            ),
        },
    };
    if let Some(tokens) = &options.tokens {
        tracing::info!("{} bearer tokens bound to their sessions", tokens.len());
    }
    if !addr.ip().is_loopback() && options.token.is_none() && options.tokens.is_none() {
        tracing::warn!(
            "listening on {addr}, beyond loopback, without WW_AUTH_TOKEN: anyone who can \
             reach it can read and write this memory"
        );
    }
    let listener = http::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(
        "serving MCP over streamable HTTP at http://{local}{}{}",
        http::PATH,
        if options.token.is_some() || options.tokens.is_some() {
            " (bearer token required)"
        } else {
            ""
        }
    );
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        interrupted().await;
        tracing::info!("interrupted, stopping");
        stop.cancel();
    });
    Ok(http::serve(listener, gateway, &options, shutdown).await?)
}

/// Resolves on Ctrl-C or SIGTERM, so telemetry is flushed before the process ends.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `ww-memory reembed`: each collection in pages, a progress bar on stderr, a count at
/// the end. Ctrl-C stops between pages: what was rebuilt stays, the collection keeps
/// its old embedder recorded (so a server still refuses it), and a new run starts over.
/// Points `reembed` embeds per request by default: one embedder call of 256 texts keeps
/// the model busy without holding a request open for long (a page is one store write).
const REEMBED_BATCH: u32 = 256;

/// Episodes per `create_episodes` call of `ww-memory import`: a pass of the model and one
/// write per store each, small enough that an interruption loses little work.
const IMPORT_BATCH: usize = 64;

/// `ww-memory import`: the file's episodes in batches, with a progress bar; stops cleanly
/// on Ctrl-C between batches (what was stored stays, a second run skips it).
async fn import(
    memory: &Memory,
    session: &Session,
    file: &std::path::Path,
    batch: usize,
) -> anyhow::Result<ExitCode> {
    use ww_host::memory::{CreateEpisodes, MAX_EPISODES_PER_CALL, import};
    if batch == 0 || batch > MAX_EPISODES_PER_CALL {
        bail!("--batch must be between 1 and {MAX_EPISODES_PER_CALL}");
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let lines = import::parse_lines(&session.id, &text)
        .with_context(|| format!("{} holds a line that is not an episode", file.display()))?;
    eprintln!(
        "importing {} episodes from {} into session {}",
        lines.len(),
        file.display(),
        session.id
    );
    let bar = indicatif::ProgressBar::new(lines.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>9} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix("episodes");
    let interrupt = interrupted();
    tokio::pin!(interrupt);
    let (mut created, mut existing) = (0_u64, 0_u64);
    for chunk in lines.chunks(batch) {
        let first = chunk.first().map_or(0, |l| l.number);
        let episodes = chunk.iter().map(|l| l.episode.clone()).collect();
        let request = Request::new("import.create_episodes");
        let stored = tokio::select! {
            stored = memory.create_episodes(request, &session.id, CreateEpisodes { episodes }) => stored,
            () = &mut interrupt => {
                bar.abandon();
                eprintln!(
                    "interrupted: {created} episodes stored so far; run the same import again to finish (what is stored is skipped)"
                );
                return Ok(ExitCode::from(130));
            }
        };
        let stored = stored.map_err(|e| {
            anyhow!(
                "the batch from line {first} failed ({}{}): {}",
                e.code.as_str(),
                e.field
                    .as_ref()
                    .map(|f| format!(", {f}"))
                    .unwrap_or_default(),
                e.message
            )
        })?;
        created += u64::from(stored.created);
        existing += u64::from(stored.existing);
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    eprintln!("{created} episodes stored, {existing} already stored before");
    Ok(ExitCode::SUCCESS)
}

async fn reembed(memory: &Memory, batch: u32) -> anyhow::Result<ExitCode> {
    use ww_host::memory::ReembedTarget;
    let embedder = memory
        .embedder()
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    eprintln!("re-embedding with {embedder}");
    let interrupt = interrupted();
    tokio::pin!(interrupt);
    let mut rebuilt_all = 0_u64;
    for target in ReembedTarget::ALL {
        let mut after = None;
        let mut rebuilt = 0_u64;
        let bar = indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>13} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(target.collection());
        loop {
            let page = tokio::select! {
                page = memory.reembed_page(target, after.clone(), batch) => page,
                () = &mut interrupt => {
                    bar.abandon();
                    eprintln!(
                        "interrupted: {rebuilt_all} vectors rebuilt so far; run `ww-memory reembed` again to finish"
                    );
                    return Ok(ExitCode::from(130));
                }
            };
            let page = page.map_err(|e| {
                anyhow::anyhow!("re-embedding {} failed: {}", target.collection(), e.message)
            })?;
            bar.set_length(page.total);
            rebuilt += u64::from(page.rebuilt);
            rebuilt_all += u64::from(page.rebuilt);
            bar.set_position(rebuilt.min(page.total));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        bar.finish();
    }
    eprintln!("{rebuilt_all} vectors rebuilt with {embedder}");
    Ok(ExitCode::SUCCESS)
}

/// The session asked for, or the data directory's default one.
/// How the embedder's model runs (`wasi-nn onnx` or `in-component`), when it runs one.
fn embedder_inference(host: &ComponentHost) -> Option<ww_host::inference::InferencePath> {
    host.exporter(Role::Embedder.interface())?.inference()
}

fn resolve_session(given: Option<String>, data_dir: &std::path::Path) -> anyhow::Result<Session> {
    match given {
        Some(id) if session::valid_id(&id) => Ok(Session::given(&id)),
        Some(id) => bail!("{id:?} is not a session id ({})", session::ID_RULE),
        None => Ok(session::default_session(data_dir)?),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WW_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,wasmtime=warn,cranelift=warn,rmcp=warn,wasmtime_wasi_nn=off",
                )
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
