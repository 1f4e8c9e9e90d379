// `exporter --listen HOST:PORT`: where the HTTP server listens. HOST is an IPv4 address, a bracketed IPv6
// address ([::1]:9730) or a host name; an empty HOST (":9730") listens on every address. PORT 0 takes any
// free port (the exporter prints the one it got).
import net from 'node:net';
import * as z from 'zod';

export const DEFAULT_LISTEN = '127.0.0.1:9730';

export interface ListenAddress {
  /** undefined: every address. */
  host: string | undefined;
  port: number;
}

const HOST_NAME_RE = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export const listenSchema = z.string().transform((text, ctx): ListenAddress => {
  const bad = (why: string): never => {
    ctx.addIssue({ code: 'custom', message: `--listen ${JSON.stringify(text)}: ${why} (expected HOST:PORT, e.g. ${DEFAULT_LISTEN} or [::1]:9730)` });
    return z.NEVER;
  };
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):([^:]*)$/.exec(text);
  if (m === null) return bad('not HOST:PORT');
  const v6 = m[1];
  const host = v6 ?? m[2] ?? '';
  const portText = m[3] ?? '';
  if (v6 !== undefined && !net.isIPv6(v6)) return bad(`${JSON.stringify(v6)} is not an IPv6 address`);
  if (v6 === undefined && host !== '' && !net.isIPv4(host) && !HOST_NAME_RE.test(host)) {
    return bad(`${JSON.stringify(host)} is not an IPv4 address or host name`);
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) return bad('the port must be a whole number from 0 to 65535');
  return { host: host === '' ? undefined : host, port: Number(portText) };
});

/** "host:port" as a URL authority (IPv6 in brackets); every address shows as 0.0.0.0. */
export function formatAddress(host: string | undefined, port: number): string {
  const h = host ?? '0.0.0.0';
  return net.isIPv6(h) ? `[${h}]:${port}` : `${h}:${port}`;
}
