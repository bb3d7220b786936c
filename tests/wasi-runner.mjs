// Runs a wasm32-wasip1 test binary under Node's WASI, as cargo's target runner: the core's
// unit tests then run on the filter's real target (32-bit, no host clock) before Envoy does.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import process from 'node:process';

const [wasmPath, ...args] = process.argv.slice(2);
const wasi = new WASI({ version: 'preview1', args: [wasmPath, ...args], env: process.env, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(wasmPath));
// proxy-wasm host functions (module "env") are linked in when the host layer is compiled
// (benches); nothing run here calls them, so each one traps if it ever is.
const env = {};
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.module === 'env' && imp.kind === 'function') {
    env[imp.name] = () => { throw new Error(`proxy-wasm host call ${imp.name} is not available under node`); };
  }
}
const instance = await WebAssembly.instantiate(module, { ...wasi.getImportObject(), env });
// A binary that links the filter also exports proxy-wasm's `_initialize`; run it as a command.
const exports = Object.fromEntries(Object.entries(instance.exports).filter(([k]) => k !== '_initialize'));
process.exitCode = wasi.start({ exports });
