//! `semgate-config`: the Envoy side of semgate's provider chains, from the filter's own
//! JSON configuration (its `providers`, `models` and `fallback` sections).
//!
//! ```text
//! semgate-config envoy --filter-config semgate.json [--base envoy.yaml] [--out FILE]
//!                      [--format json|yaml] [--wasm PATH] [--vm-id ID]
//! semgate-config check --filter-config semgate.json --envoy envoy.yaml
//! ```
//! `envoy` writes the provider and chain clusters and the route's retry policy; with `--base`
//! it merges them into that config (comments of the base are not kept). `check` lists what a
//! hand-written config misses, one `file:line: message` per problem, and exits 1 if any.

use std::path::Path;
use std::process::ExitCode;

use semgate::core::providers::envoy_gen::{self, GenOptions};
use serde_json::Value;

const USAGE: &str = "usage:
  semgate-config envoy --filter-config FILE [--base ENVOY.yaml] [--out FILE] [--format json|yaml] [--wasm PATH] [--vm-id ID]
  semgate-config check --filter-config FILE --envoy ENVOY.yaml";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
}

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Envoy {
        filter_config: String,
        base: Option<String>,
        out: Option<String>,
        format: Option<Format>,
        wasm: Option<String>,
        vm_id: Option<String>,
    },
    Check {
        filter_config: String,
        envoy: String,
    },
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let (cmd, rest) = args.split_first().ok_or("missing command")?;
    let mut flags = std::collections::BTreeMap::new();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let name = flag.strip_prefix("--").ok_or_else(|| format!("unexpected argument `{flag}`"))?;
        let value = it.next().ok_or_else(|| format!("`--{name}` needs a value"))?;
        if flags.insert(name.to_string(), value.clone()).is_some() {
            return Err(format!("`--{name}` given twice"));
        }
    }
    let allowed: &[&str] = match cmd.as_str() {
        "envoy" => &["filter-config", "base", "out", "format", "wasm", "vm-id"],
        "check" => &["filter-config", "envoy"],
        other => return Err(format!("unknown command `{other}`")),
    };
    if let Some(bad) = flags.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("`{cmd}` takes no `--{bad}`"));
    }
    let mut take = |name: &str| flags.remove(name);
    let filter_config = take("filter-config").ok_or("`--filter-config` is required")?;
    Ok(match cmd.as_str() {
        "envoy" => Command::Envoy {
            filter_config,
            base: take("base"),
            out: take("out"),
            format: match take("format").as_deref() {
                None => None,
                Some("json") => Some(Format::Json),
                Some("yaml") => Some(Format::Yaml),
                Some(f) => return Err(format!("`--format {f}`: use json or yaml")),
            },
            wasm: take("wasm"),
            vm_id: take("vm-id"),
        },
        _ => Command::Check { filter_config, envoy: take("envoy").ok_or("`--envoy` is required")? },
    })
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

fn read_filter_config(path: &str) -> Result<Value, String> {
    serde_json::from_str(&read(path)?).map_err(|e| format!("{path}: not JSON: {e}"))
}

/// YAML or JSON (JSON is YAML) into a JSON value.
fn parse_envoy(path: &str, text: &str) -> Result<Value, String> {
    serde_yaml::from_str(text).map_err(|e| format!("{path}: {e}"))
}

fn is_json(path: &str) -> bool {
    Path::new(path).extension().is_some_and(|e| e == "json")
}

fn render(value: &Value, format: Format) -> Result<String, String> {
    match format {
        Format::Json => serde_json::to_string_pretty(value).map(|s| s + "\n").map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml::to_string(value).map_err(|e| e.to_string()),
    }
}

/// The document `envoy` writes, and notes for stderr.
fn run_envoy(
    filter_config: &Value,
    base: Option<(&str, &str)>,
    opts: &GenOptions,
) -> Result<(Value, Vec<String>), String> {
    let gen = envoy_gen::generate(filter_config, opts).map_err(|e| e.to_string())?;
    match base {
        None => Ok((gen.to_document(), Vec::new())),
        Some((path, text)) => {
            let mut envoy = parse_envoy(path, text)?;
            let notes = envoy_gen::merge_into(&mut envoy, &gen);
            Ok((envoy, notes))
        }
    }
}

fn run_check(filter_config: &Value, path: &str, text: &str) -> Result<Vec<String>, String> {
    let envoy = parse_envoy(path, text)?;
    let findings = envoy_gen::check(filter_config, &envoy, text).map_err(|e| e.to_string())?;
    Ok(findings.iter().map(|f| f.render(path)).collect())
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    match parse_args(args)? {
        Command::Envoy { filter_config, base, out, format, wasm, vm_id } => {
            let config = read_filter_config(&filter_config)?;
            let defaults = GenOptions::default();
            let opts = GenOptions {
                wasm_path: wasm.unwrap_or(defaults.wasm_path.clone()),
                vm_id: vm_id.unwrap_or(defaults.vm_id.clone()),
                ..defaults
            };
            let base_text = base.as_deref().map(read).transpose()?;
            let (doc, notes) = run_envoy(&config, base.as_deref().zip(base_text.as_deref()), &opts)?;
            let format = format.unwrap_or(match &base {
                Some(b) if !is_json(b) => Format::Yaml,
                _ => Format::Json,
            });
            let text = render(&doc, format)?;
            match out {
                Some(path) => std::fs::write(&path, text).map_err(|e| format!("{path}: {e}"))?,
                None => print!("{text}"),
            }
            for n in notes {
                eprintln!("semgate-config: {n}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { filter_config, envoy } => {
            let config = read_filter_config(&filter_config)?;
            let problems = run_check(&config, &envoy, &read(&envoy)?)?;
            for p in &problems {
                println!("{p}");
            }
            if problems.is_empty() {
                eprintln!("semgate-config: {envoy} fits {filter_config}");
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(1))
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("semgate-config: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTER: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/providers/chains.json"));
    const HAND_WRITTEN: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/providers/envoy-chains.yaml"));

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn filter() -> Value {
        serde_json::from_str(FILTER).unwrap()
    }

    #[test]
    fn arguments_parse_and_mistakes_are_named() {
        assert_eq!(
            parse_args(&args("check --filter-config f.json --envoy e.yaml")).unwrap(),
            Command::Check { filter_config: "f.json".into(), envoy: "e.yaml".into() }
        );
        let Command::Envoy { base, format, .. } =
            parse_args(&args("envoy --filter-config f.json --base b.yaml --format yaml")).unwrap()
        else {
            panic!()
        };
        assert_eq!((base.as_deref(), format), (Some("b.yaml"), Some(Format::Yaml)));
        for (line, error) in [
            ("", "missing command"),
            ("serve --filter-config f", "unknown command"),
            ("check --envoy e.yaml", "--filter-config"),
            ("check --filter-config f", "--envoy"),
            ("check --filter-config f --envoy e --out x", "takes no `--out`"),
            ("envoy --filter-config", "needs a value"),
            ("envoy --filter-config f --format toml", "json or yaml"),
            ("envoy f.json", "unexpected argument"),
        ] {
            let e = parse_args(&args(line)).unwrap_err();
            assert!(e.contains(error), "{line}: {e}");
        }
    }

    #[test]
    fn the_hand_written_example_passes_check() {
        assert_eq!(run_check(&filter(), "envoy.yaml", HAND_WRITTEN).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn check_points_at_the_yaml_line_to_fix() {
        let broken = HAND_WRITTEN
            .replace("metadata: { filter_metadata: { semgate: { provider: vertex, key: VERTEX_EXPRESS_KEY } } }", "");
        let problems = run_check(&filter(), "envoy.yaml", &broken).unwrap();
        let line = HAND_WRITTEN.lines().position(|l| l.contains("- name: provider_vertex")).unwrap() + 1;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with(&format!("envoy.yaml:{line}: cluster `provider_vertex`")), "{problems:?}");

        let broken = HAND_WRITTEN.replace(
            "clusters: [provider_anthropic, provider_anthropic_key2, provider_vertex]",
            "clusters: [provider_anthropic]",
        );
        let problems = run_check(&filter(), "envoy.yaml", &broken).unwrap();
        let line = HAND_WRITTEN.lines().position(|l| l.contains("- name: chain_anthropic_vertex")).unwrap() + 1;
        assert_eq!(problems, [format!("envoy.yaml:{line}: cluster `chain_anthropic_vertex` lists [provider_anthropic]; the chain needs [provider_anthropic, provider_anthropic_key2, provider_vertex] in this order")]);

        assert!(run_check(&filter(), "envoy.yaml", "a: [").unwrap_err().starts_with("envoy.yaml:"));
    }

    #[test]
    fn generated_yaml_merged_into_a_base_passes_check() {
        // The hand-written example without its chain pieces, as a base to merge into.
        let mut base: Value = serde_yaml::from_str(HAND_WRITTEN).unwrap();
        base["static_resources"]["clusters"] = serde_json::json!([]);
        let base_text = serde_yaml::to_string(&base).unwrap();
        assert!(!run_check(&filter(), "base.yaml", &base_text).unwrap().is_empty());
        let (doc, notes) = run_envoy(&filter(), Some(("base.yaml", &base_text)), &GenOptions::default()).unwrap();
        assert!(notes.iter().any(|n| n == "added cluster chain_anthropic_vertex"), "{notes:?}");
        let text = render(&doc, Format::Yaml).unwrap();
        assert_eq!(run_check(&filter(), "out.yaml", &text).unwrap(), Vec::<String>::new());
        let json = render(&doc, Format::Json).unwrap();
        assert_eq!(run_check(&filter(), "out.json", &json).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn without_a_base_the_pieces_are_written_as_one_document() {
        let (doc, notes) = run_envoy(&filter(), None, &GenOptions::default()).unwrap();
        assert!(notes.is_empty());
        assert_eq!(doc["clusters"].as_array().unwrap().len(), 4);
        assert_eq!(doc["route_retry_policy"]["num_retries"], 2);
        let e = run_envoy(&serde_json::json!({"providers": {}}), None, &GenOptions::default()).unwrap_err();
        assert!(e.contains("`models`") || e.contains("`providers`"), "{e}");
    }

    #[test]
    fn the_command_runs_end_to_end() {
        let dir = std::env::temp_dir().join(format!("semgate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let filter = dir.join("semgate.json");
        let envoy = dir.join("envoy.yaml");
        std::fs::write(&filter, FILTER).unwrap();
        std::fs::write(&envoy, HAND_WRITTEN).unwrap();
        let p = |p: &Path| p.to_str().unwrap().to_string();
        let out = dir.join("out.yaml");
        let code = run(&[
            "envoy".into(),
            "--filter-config".into(),
            p(&filter),
            "--base".into(),
            p(&envoy),
            "--out".into(),
            p(&out),
        ])
        .unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        let code = run(&["check".into(), "--filter-config".into(), p(&filter), "--envoy".into(), p(&out)]).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        std::fs::write(&envoy, HAND_WRITTEN.replace("num_retries: 2", "num_retries: 1")).unwrap();
        let code = run(&["check".into(), "--filter-config".into(), p(&filter), "--envoy".into(), p(&envoy)]).unwrap();
        assert_eq!(code, ExitCode::from(1));
        assert!(run(&[
            "check".into(),
            "--filter-config".into(),
            p(&dir.join("none.json")),
            "--envoy".into(),
            p(&envoy)
        ])
        .is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
