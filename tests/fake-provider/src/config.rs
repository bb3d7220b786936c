//! Command-line flags (`std::env::args`, no parser crate).

pub const USAGE: &str = "\
usage: fake-provider [--listen ADDR] [--threads N] [--require-key KEY]
                     [--latency-ms N] [--chunk-delay-ms N]
                     [--oauth-token-ttl-s N] [--oauth-public-key FILE]

  --listen ADDR        address to bind (default 127.0.0.1:18001; port 0 = any free port)
  --threads N          tokio worker threads (default 1)
  --require-key KEY    answer 401 unless `Authorization: Bearer KEY`
  --latency-ms N       delay added before every provider response (default 0)
  --chunk-delay-ms N   delay between SSE events of a stream (default 0)
  --oauth-token-ttl-s N  lifetime of the access tokens POST /token issues (default 3600)
  --oauth-public-key FILE  the service account's RSA public key (PKCS#1 DER): POST /token
                       then checks the assertion's signature";

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub threads: usize,
    pub require_key: Option<String>,
    pub latency_ms: u64,
    pub chunk_delay_ms: u64,
    pub oauth_token_ttl_s: u64,
    pub oauth_public_key: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:18001".to_owned(),
            threads: 1,
            require_key: None,
            latency_ms: 0,
            chunk_delay_ms: 0,
            oauth_token_ttl_s: 3600,
            oauth_public_key: None,
        }
    }
}

impl Config {
    /// Parses the flags (without the program name). `Ok(None)` means `--help`.
    /// Accepts both `--flag value` and `--flag=value`.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Option<Config>, String> {
        let mut cfg = Config::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Ok(None);
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg, None),
            };
            let mut value = || inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--listen" => cfg.listen = value()?,
                "--threads" => {
                    cfg.threads = parse_num(&flag, &value()?)?;
                    if cfg.threads == 0 {
                        return Err("--threads must be at least 1".to_owned());
                    }
                }
                "--require-key" => cfg.require_key = Some(value()?),
                "--latency-ms" => cfg.latency_ms = parse_num(&flag, &value()?)?,
                "--chunk-delay-ms" => cfg.chunk_delay_ms = parse_num(&flag, &value()?)?,
                "--oauth-token-ttl-s" => cfg.oauth_token_ttl_s = parse_num(&flag, &value()?)?,
                "--oauth-public-key" => cfg.oauth_public_key = Some(value()?),
                _ => return Err(format!("unknown argument: {flag}")),
            }
        }
        Ok(Some(cfg))
    }
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: not a non-negative integer: {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Option<Config>, String> {
        Config::from_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        let c = parse(&[]).unwrap().unwrap();
        assert_eq!(c.listen, "127.0.0.1:18001");
        assert_eq!(c.threads, 1);
        let c = parse(&[
            "--listen=127.0.0.1:0",
            "--threads",
            "2",
            "--require-key",
            "k",
            "--latency-ms",
            "5",
            "--chunk-delay-ms=7",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:0");
        assert_eq!(c.threads, 2);
        assert_eq!(c.require_key.as_deref(), Some("k"));
        assert_eq!((c.latency_ms, c.chunk_delay_ms), (5, 7));
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--threads", "0"]).is_err());
        assert!(parse(&["--latency-ms"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
