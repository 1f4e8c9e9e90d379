// In-process phase timing of a refused `add` (the detached path's precheck), step by step.
// Usage: node phases.mjs MAIN SPARE (refusal.sh runs it)
const [mainDev, spareDev] = process.argv.slice(2);
const t0 = performance.now();
let last = t0;
const lap = (what) => {
  const t = performance.now();
  console.log(`${(t - last).toFixed(0).padStart(6)} ms  ${what}`);
  last = t;
};
const dist = new URL('../../../dist/', import.meta.url);
const { parseShape, validate } = await import(new URL('cli/args.js', dist));
lap('import cli/args.js');
const schemas = await import(new URL('cli/schemas.js', dist));
lap('import cli/schemas.js (zod)');
await import(new URL('cli/main.js', dist));
lap('import cli/main.js (rest)');
const add = await import(new URL('cli/add.js', dist));
lap('import cli/add.js');
const { values } = parseShape('add', ['--main', mainDev, '--spare', spareDev, '--json'], schemas.addOptions, false);
const flags = add.withPolicy(process.env, validate(schemas.addFlagsSchema, values));
lap('parse + validate + withPolicy (config file)');
const { selectNative } = await import(new URL('native-select.js', dist));
const native = await selectNative(process.env);
lap('load native addon');
const { occupied, readEntries } = await import(new URL('control/registry.js', dist));
const { runDir } = await import(new URL('paths.js', dist));
const running = occupied(readEntries(runDir(process.env)));
lap('registry read');
const { planDevice } = await import(new URL('device/validate.js', dist));
const plan = planDevice(native, flags.device, running);
lap('planDevice (identify, claims, probe ublk)');
const { probeSignatures } = await import(new URL('device/signatures.js', dist));
const r = await probeSignatures(spareDev, 0);
lap(`blkid -p (whole spare): ${r.kind}`);
plan.held.release();
lap('release');
const { precheckDevice } = await import(new URL('device/precheck.js', dist));
try {
  await precheckDevice(native, flags.device, running);
  console.log('precheck passed');
} catch (e) {
  lap(`precheckDevice (all of it, again): ${e.message}`);
}
console.log(`${(performance.now() - t0).toFixed(0).padStart(6)} ms  total in process`);
