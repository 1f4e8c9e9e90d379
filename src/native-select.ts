// The seam between the program and the addon. Normally the real addon; under vitest (VITEST=true), the
// environment variable DMREMAP_FAKE_NATIVE (a JSON FakeConfig) selects the in-memory fake instead, so the
// CLI and daemon can be tested as child processes on hosts without ublk. Outside vitest it is ignored.
import { DmrError } from './errors.js';
import { loadNative, type NativeAddon } from './native.js';

export async function selectNative(env: NodeJS.ProcessEnv = process.env): Promise<NativeAddon> {
  const fake = env.DMREMAP_FAKE_NATIVE;
  if (fake !== undefined && env.VITEST === 'true') {
    const { FakeNative } = await import('./testing/fake-native.js');
    return new FakeNative(JSON.parse(fake) as ConstructorParameters<typeof FakeNative>[0]);
  }
  try {
    return loadNative();
  } catch (e) {
    throw new DmrError('E_NATIVE_MISSING', e instanceof Error ? e.message : String(e), { cause: e });
  }
}
