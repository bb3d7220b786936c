"""Start real processes for the integration tests: the fake provider and Envoy 1.40 with the
built semgate.wasm, on free loopback ports. Envoy's config is the shipped envoy/envoy.yaml
with only ports, the provider address and (where a test needs it) the filter configuration
changed, so the tests exercise the config users run."""

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "target/wasm32-wasip1/release/semgate.wasm"
FAKE_PROVIDER = Path(os.environ.get("FAKE_PROVIDER", ROOT / "target/release/fake-provider"))
SIDECAR = Path(os.environ.get("SEMGATE_SIDECAR", ROOT / "target/release/semgate-sidecar"))
ENVOY = os.environ.get("ENVOY") or str(ROOT / ".venv/bin/envoy")
# `chroma run` comes with the chromadb package (tests/requirements.txt), beside this Python.
CHROMA = os.environ.get("CHROMA") or str(Path(sys.executable).parent / "chroma")
PROVIDER_KEY = "sk-fake-provider"
# The sidecar's bearer token in tests: Envoy and the sidecar get it from their environment.
SIDECAR_TOKEN = "test-sidecar-token-0123456789abcdef"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (requests.ConnectionError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


class FakeProvider:
    """The repo's fake OpenAI-style provider (tests/fake-provider)."""

    def __init__(self, *extra_args):
        if not FAKE_PROVIDER.exists():
            raise FileNotFoundError(f"{FAKE_PROVIDER} is missing: run `make fake-provider`")
        self.proc = subprocess.Popen(
            [str(FAKE_PROVIDER), "--listen", "127.0.0.1:0", "--require-key", PROVIDER_KEY, *extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"fake provider did not start: {line!r}")
        self.port = int(line.strip().rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self):
        return requests.get(f"{self.url}/stats", timeout=5).json()

    def started(self):
        return self.stats()["started"]

    def control(self, **settings):
        requests.post(f"{self.url}/control", json=settings, timeout=5).raise_for_status()

    def reset(self):
        requests.post(f"{self.url}/reset", timeout=5).raise_for_status()

    def release(self, token):
        requests.post(f"{self.url}/release/{token}", timeout=5).raise_for_status()

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Sidecar:
    """The semantic-cache sidecar (sidecar/), by default with the hashing test embedder."""

    def __init__(self, data_dir, *extra_args, embedder="hashing", env=None):
        """`env`: extra environment variables (e.g. the one `--embed-key-env` names)."""
        if not SIDECAR.exists():
            raise FileNotFoundError(f"{SIDECAR} is missing: run `make sidecar`")
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [str(SIDECAR), "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), "--embedder", embedder, *extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "SEMGATE_SIDECAR_TOKEN": SIDECAR_TOKEN, **(env or {})},
        )
        line = self.proc.stdout.readline()
        while line.startswith(("semgate-sidecar: warning", "semgate-sidecar: first stage holds")):
            line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"sidecar did not start: {line!r}")
        self.port = int(line.split("listening on ", 1)[1].split()[0].rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def metrics(self):
        return requests.get(f"{self.url}/metrics", timeout=5).text

    def metric(self, name):
        """One unlabelled counter or gauge from /metrics."""
        for line in self.metrics().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        raise KeyError(f"no metric {name}")

    def health(self):
        return requests.get(f"{self.url}/healthz", timeout=5).json()

    def after_store(self, request):
        """Run `request` (a callable sending one request through Envoy), then wait until the
        sidecar has stored one more answer: the filter stores fire-and-forget after the
        response, so a test that needs the entry must not race it."""
        before = self.metric("semgate_sidecar_stores_total")
        response = request()
        wait_until(lambda: self.metric("semgate_sidecar_stores_total") > before, "the sidecar to store the answer")
        return response

    def post(self, path, body, token=SIDECAR_TOKEN):
        """A data request as the filter sends it (with the bearer token unless `token` is None)."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return requests.post(f"{self.url}{path}", json=body, headers=headers, timeout=30)

    def stop(self):
        """SIGTERM: the sidecar flushes its index journal before exiting."""
        self.proc.terminate()
        self.proc.wait(timeout=10)


class LoggedServer:
    """A server child process whose output goes to a temp log file: started, waited for and
    stopped the same way for every kind (Chroma, Envoy)."""

    name = "server"
    temp_files = ()

    def _spawn(self, argv, **popen):
        self.log_file = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT, **popen)

    def _wait_ready(self, what):
        """Poll `_ready` until it is true; on failure the process is stopped, not leaked."""
        try:
            wait_until(self._ready, what, timeout=60)
        except BaseException:
            self.stop()
            raise

    def _check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")

    def log(self):
        return Path(self.log_file.name).read_text(errors="replace")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (*self.temp_files, self.log_file.name):
            try:
                os.unlink(f)
            except OSError:
                pass


class Chroma(LoggedServer):
    """A real Chroma server (`chroma run`) on a free loopback port, persisting to `path`."""

    name = "chroma"

    API = "/api/v2/tenants/default_tenant/databases/default_database/collections"

    def __init__(self, path):
        if shutil.which(CHROMA) is None:
            raise FileNotFoundError(f"{CHROMA} is missing: pip install -r tests/requirements.txt (chromadb)")
        self.path = path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._spawn([CHROMA, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(self.port)],
                    env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
        self._wait_ready("Chroma's heartbeat")

    def _ready(self):
        self._check_alive()
        return requests.get(f"{self.url}/api/v2/heartbeat", timeout=1).status_code == 200

    def records(self, collection, where):
        """Chroma's own view of a collection's records that match `where`."""
        c = requests.get(f"{self.url}{self.API}/{collection}", timeout=5)
        c.raise_for_status()
        r = requests.post(f"{self.url}{self.API}/{c.json()['id']}/get", json={"where": where, "include": ["documents", "metadatas"]}, timeout=5)
        r.raise_for_status()
        return r.json()


def filter_config(doc):
    """The semgate `configuration` JSON inside an Envoy config document."""
    wasm = _semgate_filter(doc)
    return json.loads(wasm["config"]["configuration"]["value"])


def _semgate_filter(doc):
    for listener in doc["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                for hf in f["typed_config"].get("http_filters", []):
                    if hf["name"] == "envoy.filters.http.wasm" and hf["typed_config"]["config"]["root_id"] == "semgate":
                        return hf["typed_config"]
    raise KeyError("no semgate filter in the Envoy config")


def upstream_filters(doc):
    """The upstream role's Wasm filters, on the chains' aggregate clusters."""
    for cluster in doc["static_resources"]["clusters"]:
        opts = cluster.get("typed_extension_protocol_options", {}).get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {})
        for f in opts.get("http_filters", []):
            if f["name"] == "envoy.filters.http.wasm":
                yield f


SEMGATE_CONFIG = ROOT / "target/release/semgate-config"


def generate_envoy_config(semgate_config, base):
    """The Envoy side for a filter configuration, as users make it: `semgate-config envoy`
    merges the provider and chain clusters, the chain route and both roles' configuration
    into `base`. None when the generator refuses the configuration (a test of a bad config
    then sees Envoy refuse it)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(semgate_config, f)
    try:
        out = subprocess.run([str(SEMGATE_CONFIG), "envoy", "--filter-config", f.name, "--base", str(base), "--format", "json"],
                             capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    return json.loads(out.stdout) if out.returncode == 0 else None


def render_envoy_config(provider_port, listen_port, admin_port, semgate_config=None, base=ROOT / "envoy/envoy.yaml", sidecar_port=None):
    """The shipped config with free ports, every provider cluster on `provider_port`, and
    (given `semgate_config`) the clusters and both filters' configuration generated for it."""
    doc = yaml.safe_load(Path(base).read_text())
    if semgate_config is not None:
        semantic = semgate_config.get("semantic", {})
        if semantic.get("enabled") and "token_env" not in semantic:
            # As the shipped config does: the filter sends the sidecar's token.
            semgate_config = {**semgate_config, "semantic": {**semantic, "token_env": "SEMGATE_SIDECAR_TOKEN"}}
        doc = generate_envoy_config(semgate_config, base) or doc
    # Through JSON: the YAML's shared anchors become separate objects a test may change alone.
    doc = json.loads(json.dumps(doc))
    doc["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen_port
    doc["admin"]["address"]["socket_address"]["port_value"] = admin_port
    for cluster in doc["static_resources"]["clusters"]:
        if cluster["name"] == "semgate_sidecar" and sidecar_port is not None:
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = sidecar_port
        if cluster["name"].startswith("provider_"):
            for ep in cluster["load_assignment"]["endpoints"]:
                for lb in ep["lb_endpoints"]:
                    lb["endpoint"]["address"]["socket_address"]["port_value"] = provider_port
    wasm = _semgate_filter(doc)
    wasm["config"]["vm_config"]["code"]["local"]["filename"] = str(WASM)
    for f in upstream_filters(doc):
        f["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(WASM)
    if semgate_config is not None:
        # Both roles get the one configuration (the generator wrote it; a configuration it
        # refused is set as it is, for Envoy to refuse).
        for config in [wasm["config"], *(f["typed_config"]["config"] for f in upstream_filters(doc))]:
            config["configuration"]["value"] = json.dumps(semgate_config)
    return doc


class Envoy(LoggedServer):
    """Envoy 1.40 with semgate, fronting a FakeProvider."""

    name = "Envoy"

    def __init__(self, provider, semgate_config=None, doc=None, wait=True, env=None):
        if not WASM.exists():
            raise FileNotFoundError(f"{WASM} is missing: run `make build`")
        if doc is None:
            doc = render_envoy_config(provider.port, free_port(), free_port(), semgate_config)
        self.port = doc["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
        self.admin_port = doc["admin"]["address"]["socket_address"]["port_value"]
        self.config_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(doc, self.config_file)
        self.config_file.close()
        self.temp_files = (self.config_file.name,)
        # The shipped configs read keys from Envoy's environment (host_env_keys).
        env = {**os.environ, "SEMGATE_OPENAI_KEY": PROVIDER_KEY, "SEMGATE_SIDECAR_TOKEN": SIDECAR_TOKEN,
               "ANTHROPIC_KEY_PRIMARY": PROVIDER_KEY, "ANTHROPIC_KEY_BACKUP": PROVIDER_KEY,
               "VERTEX_EXPRESS_KEY": PROVIDER_KEY, **(env or {})}
        self._spawn([ENVOY, "-c", self.config_file.name, "--disable-hot-restart", "--concurrency", "2",
                     "--log-level", "warn", "--component-log-level", os.environ.get("ENVOY_COMPONENT_LOG", "wasm:info")], cwd=ROOT, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        if wait:
            self._wait_ready("Envoy to become ready")

    def _ready(self):
        self._check_alive()
        r = requests.get(f"{self.admin}/ready", timeout=1)
        if r.status_code != 200:
            return False
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def stat(self, name):
        """One counter or gauge from Envoy's /stats; semgate's own metrics are stored as
        `wasmcustom.<name>` (and exported to Prometheus as plain `<name>`)."""
        r = requests.get(f"{self.admin}/stats", params={"filter": f"^(wasmcustom\\.)?{name}$", "format": "json"}, timeout=5)
        for s in r.json().get("stats", []):
            if s.get("name") in (name, f"wasmcustom.{name}"):
                return s.get("value", 0)
        raise KeyError(f"no stat {name}")

    def prometheus(self):
        return requests.get(f"{self.admin}/stats/prometheus", timeout=5).text

    def memory_allocated(self):
        return int(requests.get(f"{self.admin}/memory", timeout=5).json()["allocated"])

    def chat(self, body, key="sk-demo", path="/v1/chat/completions", headers=None, **kw):
        h = {"content-type": "application/json"}
        if key:
            h["authorization"] = f"Bearer {key}"
        h.update(headers or {})
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return requests.post(self.url + path, data=data, headers=h, timeout=kw.pop("timeout", 30), **kw)



def sse_events(raw: bytes):
    """`data:` payloads of an SSE body, in order."""
    out = []
    for block in raw.decode().split("\n\n"):
        lines = [l[5:].lstrip() for l in block.splitlines() if l.startswith("data:")]
        if lines:
            out.append("\n".join(lines))
    return out


def stream_content(raw: bytes):
    text = []
    for data in sse_events(raw):
        if data == "[DONE]":
            continue
        for choice in json.loads(data).get("choices", []):
            text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)
