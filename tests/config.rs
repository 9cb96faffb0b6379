//! Telemetry configuration: every variable, precedence, bad values, `.env`.

use std::time::Duration;

use ww_host::telemetry::{ConfigError, Protocol, SamplerConfig, TelemetryConfig, Vars};

fn config(vars: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
    TelemetryConfig::from_vars(&Vars::from_pairs(vars.iter().copied()))
}

fn error_naming(vars: &[(&str, &str)], var: &str) -> String {
    let message = config(vars)
        .expect_err("a bad value must be an error")
        .to_string();
    assert!(message.contains(var), "{message:?} should name {var}");
    message
}

#[test]
fn defaults_need_no_variables() {
    let c = config(&[]).unwrap();
    assert_eq!(c.otlp, None);
    assert!(!c.console);
    assert!(!c.is_recording());
    assert_eq!(c.service_name, "world-weaver");
    assert_eq!(c.sampler, SamplerConfig::ParentBasedAlwaysOn);
    assert_eq!(c.batch.max_export_batch_size, 512);
    assert_eq!(c.batch.max_queue_size, 2048);
    assert!(c.describe().contains("tracing disabled"));
}

#[test]
fn enabled_exports_grpc_to_localhost_by_default() {
    let c = config(&[("WW_OTEL_ENABLED", "true")]).unwrap();
    let otlp = c.otlp.unwrap();
    assert_eq!(otlp.endpoint, "http://localhost:4317");
    assert_eq!(otlp.protocol, Protocol::Grpc);
}

#[test]
fn port_4318_means_http_protobuf_with_the_standard_path() {
    let c = config(&[
        ("WW_OTEL_ENABLED", "1"),
        ("WW_OTEL_ENDPOINT", "http://collector:4318"),
    ])
    .unwrap();
    let otlp = c.otlp.unwrap();
    assert_eq!(otlp.protocol, Protocol::HttpProtobuf);
    assert_eq!(otlp.endpoint, "http://collector:4318/v1/traces");
    // An explicit path is kept.
    let c = config(&[
        ("WW_OTEL_ENABLED", "yes"),
        ("WW_OTEL_ENDPOINT", "https://otlp.example/custom/traces"),
        ("WW_OTEL_PROTOCOL", "http/protobuf"),
    ])
    .unwrap();
    assert_eq!(
        c.otlp.unwrap().endpoint,
        "https://otlp.example/custom/traces"
    );
}

#[test]
fn ww_variables_win_over_their_otel_twins() {
    let both = [
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", "http://ww:4317"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"),
        ("WW_OTEL_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("WW_OTEL_SERVICE_NAME", "from-ww"),
        ("OTEL_SERVICE_NAME", "from-otel"),
        ("WW_OTEL_SAMPLER", "always_off"),
        ("OTEL_TRACES_SAMPLER", "always_on"),
    ];
    let c = config(&both).unwrap();
    let otlp = c.otlp.unwrap();
    assert_eq!(otlp.endpoint, "http://ww:4317");
    assert_eq!(otlp.protocol, Protocol::Grpc);
    assert_eq!(c.service_name, "from-ww");
    assert_eq!(c.sampler, SamplerConfig::AlwaysOff);

    let otel_only = [
        ("WW_OTEL_ENABLED", "true"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "from-otel"),
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
    ];
    let c = config(&otel_only).unwrap();
    let otlp = c.otlp.unwrap();
    assert_eq!(otlp.endpoint, "http://otel:4317/v1/traces");
    assert_eq!(otlp.protocol, Protocol::HttpProtobuf);
    assert_eq!(c.service_name, "from-otel");
    assert_eq!(c.sampler, SamplerConfig::TraceIdRatio(0.25));
}

#[test]
fn resource_attributes_and_headers_are_percent_decoded_lists() {
    let c = config(&[
        ("WW_OTEL_ENABLED", "true"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=from%20resource,deployment.environment=test",
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20abc, x-tenant = acme",
        ),
    ])
    .unwrap();
    assert_eq!(c.service_name, "from resource");
    assert_eq!(
        c.resource_attributes,
        vec![("deployment.environment".to_owned(), "test".to_owned())]
    );
    assert_eq!(
        c.otlp.unwrap().headers,
        vec![
            ("authorization".to_owned(), "Bearer abc".to_owned()),
            ("x-tenant".to_owned(), "acme".to_owned())
        ]
    );
    error_naming(
        &[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
        "OTEL_EXPORTER_OTLP_HEADERS",
    );
    error_naming(
        &[("OTEL_RESOURCE_ATTRIBUTES", "=x")],
        "OTEL_RESOURCE_ATTRIBUTES",
    );
}

#[test]
fn every_sampler_is_understood() {
    let cases = [
        ("always_on", None, SamplerConfig::AlwaysOn),
        ("always_off", None, SamplerConfig::AlwaysOff),
        (
            "traceidratio",
            Some("0.5"),
            SamplerConfig::TraceIdRatio(0.5),
        ),
        ("traceidratio", None, SamplerConfig::TraceIdRatio(1.0)),
        (
            "parentbased_always_on",
            None,
            SamplerConfig::ParentBasedAlwaysOn,
        ),
        (
            "parentbased_always_off",
            None,
            SamplerConfig::ParentBasedAlwaysOff,
        ),
        (
            "parentbased_traceidratio",
            Some("0"),
            SamplerConfig::ParentBasedTraceIdRatio(0.0),
        ),
    ];
    for (name, arg, expected) in cases {
        let mut vars = vec![("WW_OTEL_SAMPLER", name)];
        if let Some(arg) = arg {
            vars.push(("WW_OTEL_SAMPLER_ARG", arg));
        }
        assert_eq!(config(&vars).unwrap().sampler, expected, "{name} {arg:?}");
    }
}

#[test]
fn bad_values_are_errors_naming_the_variable() {
    error_naming(&[("WW_OTEL_ENABLED", "maybe")], "WW_OTEL_ENABLED");
    error_naming(&[("WW_OTEL_CONSOLE", "2")], "WW_OTEL_CONSOLE");
    error_naming(&[("OTEL_SDK_DISABLED", "nope")], "OTEL_SDK_DISABLED");
    error_naming(
        &[("WW_OTEL_ENDPOINT", "localhost:4317")],
        "WW_OTEL_ENDPOINT",
    );
    error_naming(
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x:1")],
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    );
    error_naming(&[("WW_OTEL_ENDPOINT", "http://")], "WW_OTEL_ENDPOINT");
    let m = error_naming(&[("WW_OTEL_PROTOCOL", "http/json")], "WW_OTEL_PROTOCOL");
    assert!(m.contains("grpc or http/protobuf"), "{m}");
    error_naming(
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")],
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    );
    error_naming(
        &[("OTEL_TRACES_SAMPLER", "sometimes")],
        "OTEL_TRACES_SAMPLER",
    );
    error_naming(
        &[
            ("WW_OTEL_SAMPLER", "traceidratio"),
            ("WW_OTEL_SAMPLER_ARG", "1.5"),
        ],
        "WW_OTEL_SAMPLER_ARG",
    );
    error_naming(
        &[
            ("WW_OTEL_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "half"),
        ],
        "OTEL_TRACES_SAMPLER_ARG",
    );
    error_naming(
        &[("OTEL_BSP_MAX_QUEUE_SIZE", "0")],
        "OTEL_BSP_MAX_QUEUE_SIZE",
    );
    error_naming(
        &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-1")],
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    );
    error_naming(
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
        ],
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    );
    error_naming(
        &[("OTEL_BSP_SCHEDULE_DELAY", "5s")],
        "OTEL_BSP_SCHEDULE_DELAY",
    );
    error_naming(
        &[("OTEL_BSP_EXPORT_TIMEOUT", "1.5")],
        "OTEL_BSP_EXPORT_TIMEOUT",
    );
}

#[test]
fn batch_variables_are_applied() {
    let c = config(&[
        ("OTEL_BSP_MAX_QUEUE_SIZE", "4096"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "256"),
        ("OTEL_BSP_SCHEDULE_DELAY", "250"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "1000"),
    ])
    .unwrap();
    assert_eq!(c.batch.max_queue_size, 4096);
    assert_eq!(c.batch.max_export_batch_size, 256);
    assert_eq!(c.batch.scheduled_delay, Duration::from_millis(250));
    assert_eq!(c.batch.export_timeout, Duration::from_millis(1000));
}

#[test]
fn sdk_disabled_turns_everything_off() {
    let c = config(&[
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_CONSOLE", "true"),
        ("OTEL_SDK_DISABLED", "true"),
    ])
    .unwrap();
    assert!(c.otlp.is_none());
    assert!(!c.console);
}

#[test]
fn console_alone_records_without_otlp() {
    let c = config(&[("WW_OTEL_CONSOLE", "true")]).unwrap();
    assert!(c.otlp.is_none());
    assert!(c.is_recording());
    assert!(c.describe().contains("console"), "{}", c.describe());
}

#[test]
fn dotenv_fills_in_and_the_environment_wins() {
    let dir = std::env::temp_dir().join(format!("ww-dotenv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(".env");
    std::fs::write(
        &path,
        "# comment\nWW_OTEL_SERVICE_NAME=from-file\nWW_OTEL_CONSOLE=true\nWW_OTEL_SAMPLER=\"always_off\"\n",
    )
    .unwrap();
    let file = Vars::from_dotenv(&path).unwrap();
    let process = Vars::from_pairs([("WW_OTEL_SERVICE_NAME", "from-env")]);
    let c = TelemetryConfig::from_vars(&file.overlaid_by(process)).unwrap();
    assert_eq!(c.service_name, "from-env");
    assert!(c.console);
    assert_eq!(c.sampler, SamplerConfig::AlwaysOff);

    // A missing file is no file; a malformed one is an error naming it.
    assert!(Vars::from_dotenv(&dir.join("absent.env")).is_ok());
    std::fs::write(&path, "WW_OTEL_CONSOLE='unterminated\n").unwrap();
    let message = Vars::from_dotenv(&path).unwrap_err().to_string();
    assert!(message.contains(".env"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tail_sampling_is_off_until_asked_and_its_settings_are_checked() {
    assert_eq!(config(&[]).unwrap().tail, None);
    let c = config(&[
        ("WW_OTEL_CONSOLE", "true"),
        ("WW_OTEL_TAIL_SAMPLING", "true"),
    ])
    .unwrap();
    assert_eq!(c.tail, Some(ww_host::telemetry::TailConfig::default()));
    assert!(
        c.describe()
            .contains("then tail(errors, >= 250 ms, ratio 0.1"),
        "{}",
        c.describe()
    );

    let c = config(&[
        ("WW_OTEL_TAIL_SAMPLING", "true"),
        ("WW_OTEL_TAIL_RATIO", "0.01"),
        ("WW_OTEL_TAIL_LATENCY_MS", "40"),
        ("WW_OTEL_TAIL_MAX_TRACES", "100"),
        ("WW_OTEL_TAIL_MAX_SPANS", "1000"),
    ])
    .unwrap();
    let tail = c.tail.unwrap();
    assert_eq!(tail.ratio, 0.01);
    assert_eq!(tail.latency, Duration::from_millis(40));
    assert_eq!((tail.max_traces, tail.max_spans), (100, 1000));

    // A setting without the switch is a mistake worth saying, not one silently ignored.
    let message = error_naming(&[("WW_OTEL_TAIL_RATIO", "0.5")], "WW_OTEL_TAIL_RATIO");
    assert!(message.contains("WW_OTEL_TAIL_SAMPLING=true"), "{message}");
    let on = ("WW_OTEL_TAIL_SAMPLING", "true");
    error_naming(&[on, ("WW_OTEL_TAIL_RATIO", "2")], "WW_OTEL_TAIL_RATIO");
    error_naming(
        &[on, ("WW_OTEL_TAIL_MAX_SPANS", "0")],
        "WW_OTEL_TAIL_MAX_SPANS",
    );
    error_naming(
        &[on, ("WW_OTEL_TAIL_LATENCY_MS", "soon")],
        "WW_OTEL_TAIL_LATENCY_MS",
    );
    error_naming(
        &[("WW_OTEL_TAIL_SAMPLING", "maybe")],
        "WW_OTEL_TAIL_SAMPLING",
    );
}

#[test]
fn xray_export_ids_and_propagation_are_configured_by_the_standard_variables() {
    let c = config(&[]).unwrap();
    assert!(c.xray.is_none() && !c.xray_ids && !c.xray_propagation);
    // The exporter: the daemon's default address, X-Ray's trace ids with it.
    let c = config(&[("OTEL_TRACES_EXPORTER", "xray")]).unwrap();
    assert_eq!(
        c.xray.as_ref().unwrap().daemon.to_string(),
        "127.0.0.1:2000"
    );
    assert!(c.xray_ids && c.is_recording() && c.otlp.is_none());
    assert!(
        c.describe()
            .contains("X-Ray daemon at udp://127.0.0.1:2000")
    );
    // The daemon's address as the SDKs take it, also the two-address form.
    let c = config(&[
        ("WW_OTEL_EXPORTER", "xray,otlp"),
        (
            "AWS_XRAY_DAEMON_ADDRESS",
            "tcp:127.0.0.1:2999 udp:127.0.0.1:3000",
        ),
    ])
    .unwrap();
    assert_eq!(c.xray.unwrap().daemon.to_string(), "127.0.0.1:3000");
    assert!(c.otlp.is_some());
    error_naming(
        &[
            ("OTEL_TRACES_EXPORTER", "xray"),
            ("AWS_XRAY_DAEMON_ADDRESS", "nowhere"),
        ],
        "AWS_XRAY_DAEMON_ADDRESS",
    );
    // X-Ray ids for OTLP to an ADOT collector.
    let c = config(&[
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ID_GENERATOR", "xray"),
    ])
    .unwrap();
    assert!(c.xray_ids && c.xray.is_none());
    error_naming(&[("WW_OTEL_ID_GENERATOR", "ulid")], "WW_OTEL_ID_GENERATOR");
    // The propagator.
    let c = config(&[("OTEL_PROPAGATORS", "tracecontext,baggage,xray")]).unwrap();
    assert!(c.xray_propagation && !c.xray_ids);
    let c = config(&[("OTEL_PROPAGATORS", "tracecontext,baggage")]).unwrap();
    assert!(!c.xray_propagation);
    error_naming(&[("OTEL_PROPAGATORS", "b3")], "OTEL_PROPAGATORS");
    // Off with the SDK.
    let c = config(&[
        ("OTEL_TRACES_EXPORTER", "xray"),
        ("OTEL_SDK_DISABLED", "true"),
    ])
    .unwrap();
    assert!(c.xray.is_none());
}

#[test]
fn the_standard_exporter_choice_decides_which_exporters_run() {
    let c = config(&[("OTEL_TRACES_EXPORTER", "otlp,console")]).unwrap();
    assert!(c.otlp.is_some() && c.console && c.zipkin.is_none());
    let c = config(&[("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap();
    let zipkin = c.zipkin.clone().expect("zipkin on");
    assert_eq!(zipkin.endpoint, "http://localhost:9411/api/v2/spans");
    assert_eq!(zipkin.timeout, Duration::from_secs(10));
    assert!(c.otlp.is_none() && !c.console && c.is_recording());
    assert!(
        c.describe()
            .contains("Zipkin http://localhost:9411/api/v2/spans")
    );
    let c = config(&[
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        (
            "OTEL_EXPORTER_ZIPKIN_ENDPOINT",
            "http://127.0.0.1:9999/api/v2/spans",
        ),
        ("OTEL_EXPORTER_ZIPKIN_TIMEOUT", "500"),
    ])
    .unwrap();
    let zipkin = c.zipkin.unwrap();
    assert_eq!(zipkin.endpoint, "http://127.0.0.1:9999/api/v2/spans");
    assert_eq!(zipkin.timeout, Duration::from_millis(500));
    // The list is the whole choice: it wins over the on/off switches.
    let c = config(&[
        ("OTEL_TRACES_EXPORTER", "none"),
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_CONSOLE", "true"),
    ])
    .unwrap();
    assert!(!c.is_recording());
    // WW_OTEL_EXPORTER wins over the standard variable.
    let c = config(&[
        ("WW_OTEL_EXPORTER", "console"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
    ])
    .unwrap();
    assert!(c.console && c.zipkin.is_none());
    // The SDK switched off still means off.
    let c = config(&[
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_SDK_DISABLED", "true"),
    ])
    .unwrap();
    assert!(!c.is_recording());
    let m = error_naming(
        &[("OTEL_TRACES_EXPORTER", "jaeger")],
        "OTEL_TRACES_EXPORTER",
    );
    assert!(m.contains("otlp, zipkin, xray, console"), "{m}");
    error_naming(&[("WW_OTEL_EXPORTER", "none,otlp")], "WW_OTEL_EXPORTER");
    error_naming(
        &[
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "localhost:9411"),
        ],
        "OTEL_EXPORTER_ZIPKIN_ENDPOINT",
    );
}

#[test]
fn span_names_and_content_capture_are_opt_in() {
    use ww_host::telemetry::SpanNames;
    let c = config(&[]).unwrap();
    assert_eq!((c.span_names, c.capture_content), (SpanNames::Mcp, false));
    let c = config(&[
        ("WW_OTEL_SPAN_NAMES", "semconv"),
        ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true"),
    ])
    .unwrap();
    assert_eq!(
        (c.span_names, c.capture_content),
        (SpanNames::Semconv, true)
    );
    error_naming(&[("WW_OTEL_SPAN_NAMES", "otel")], "WW_OTEL_SPAN_NAMES");
}
