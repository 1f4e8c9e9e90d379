// The exporter's HTTP server (node:http): GET /metrics scrapes every device (collect.ts) into a fresh
// registry (metrics.ts); GET / is a short page pointing there; anything else is 404 (405 for a method other
// than GET or HEAD).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { DmrError, errorCodeOf } from '../errors.js';
import { collectAll, DEVICE_TIMEOUT_MS, type DeviceSnapshot } from './collect.js';
import { buildRegistry } from './metrics.js';
import type { ListenAddress } from './listen.js';

export interface ExporterOptions {
  runDir: string;
  /** How long one device may take to answer (default DEVICE_TIMEOUT_MS). */
  deviceTimeoutMs?: number;
  /** Told of each device that is down in a scrape (the CLI logs it on stderr). */
  onDown?: (s: DeviceSnapshot) => void;
}

const INDEX = `<!doctype html>
<html><head><title>dmremap-ublk exporter</title></head>
<body><h1>dmremap-ublk exporter</h1>
<p>Prometheus metrics of every dmremap-ublk device on this host: <a href="/metrics">/metrics</a>.</p>
</body></html>
`;

/** One scrape as Prometheus text: the body and its content type. */
export async function scrape(opts: ExporterOptions): Promise<{ body: string; contentType: string }> {
  const t0 = performance.now();
  const snaps = await collectAll(opts.runDir, opts.deviceTimeoutMs ?? DEVICE_TIMEOUT_MS);
  for (const s of snaps) if (!s.up) opts.onDown?.(s);
  const reg = buildRegistry(snaps, (performance.now() - t0) / 1000);
  return { body: await reg.metrics(), contentType: reg.contentType };
}

export class Exporter {
  private constructor(
    private readonly server: http.Server,
    /** Where it listens: the port is the one bound (useful with port 0). */
    readonly address: AddressInfo,
  ) {}

  static async listen(addr: ListenAddress, opts: ExporterOptions): Promise<Exporter> {
    const server = http.createServer((req, res) => void handle(req, res, opts));
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error): void => {
        const code = errorCodeOf(e);
        const where = `${addr.host ?? '*'}:${addr.port}`;
        const why = code === 'EADDRINUSE' ? 'the port is in use' : code === 'EADDRNOTAVAIL' ? 'the address is not one of this machine\'s' : code === 'EACCES' ? 'permission denied' : code === 'ENOTFOUND' ? 'the host name does not resolve' : (code ?? e.message);
        reject(new DmrError('E_LISTEN', `cannot listen on ${where}: ${why}`, { cause: e }));
      };
      server.once('error', onError);
      server.listen({ host: addr.host, port: addr.port }, () => {
        server.off('error', onError);
        resolve();
      });
    });
    return new Exporter(server, server.address() as AddressInfo);
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse, opts: ExporterOptions): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const send = (code: number, type: string, body: string): void => {
    res.writeHead(code, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  if (path !== '/' && path !== '/metrics') return send(404, 'text/plain; charset=utf-8', 'not found: try /metrics\n');
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    return send(405, 'text/plain; charset=utf-8', 'method not allowed\n');
  }
  if (path === '/') return send(200, 'text/html; charset=utf-8', INDEX);
  try {
    const { body, contentType } = await scrape(opts);
    send(200, contentType, body);
  } catch (e) {
    send(500, 'text/plain; charset=utf-8', `scrape failed: ${e instanceof Error ? e.message : String(e)}\n`);
  }
}
