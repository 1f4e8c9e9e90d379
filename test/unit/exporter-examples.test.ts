// The examples shipped for the exporter (docs/examples/): the alert rules parse (promtool check rules) and
// fire on the series they are meant for (promtool test rules), and the alert rules and the Grafana dashboard
// name only metrics the exporter exports.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as z from 'zod';
import { buildRegistry } from '../../src/exporter/metrics.js';
import { REPO } from './helpers.js';
import { promtool, SKIP_PROMTOOL } from './promtool.js';

const DIR = path.join(REPO, 'docs/examples');
const RULES = path.join(DIR, 'prometheus-alerts.yml');

/** Every metric name the exporter can export (its registry lists them all, with or without samples). */
async function exportedNames(): Promise<Set<string>> {
  const text = await buildRegistry([], 0).metrics();
  return new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1] as string));
}

/** The dmremap_ metric names an expression uses (a histogram's _bucket/_count series by the histogram's name). */
function namesIn(expr: string): string[] {
  return [...expr.matchAll(/\bdmremap_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|count|sum)$/, ''));
}

const dashboardSchema = z.object({
  title: z.string(),
  panels: z.array(z.object({ title: z.string(), targets: z.array(z.object({ expr: z.string() })).min(1) })).min(1),
});

describe('docs/examples', () => {
  it.skipIf(SKIP_PROMTOOL)('prometheus-alerts.yml passes promtool check rules', () => {
    const r = promtool(['check', 'rules', RULES]);
    expect(r.output).toContain('SUCCESS: 8 rules found');
    expect(r.status).toBe(0);
  });

  it.skipIf(SKIP_PROMTOOL)('each alert fires on its series, after its `for` (promtool test rules)', () => {
    const r = promtool(['test', 'rules', path.join(DIR, 'prometheus-alerts.test.yml')]);
    expect(r.output).toContain('SUCCESS');
    expect(r.status).toBe(0);
  });

  it('the alert rules and the Grafana dashboard use only metrics the exporter exports', async () => {
    const names = await exportedNames();
    const rules = fs.readFileSync(RULES, 'utf8');
    const ruleExprs = [...rules.matchAll(/^\s*expr: (.*)$/gm)].map((m) => m[1] as string);
    expect(ruleExprs).toHaveLength(8);
    const dash = dashboardSchema.parse(JSON.parse(fs.readFileSync(path.join(DIR, 'grafana-dashboard.json'), 'utf8')));
    const exprs = [...ruleExprs, ...dash.panels.flatMap((p) => p.targets.map((t) => t.expr))];
    const used = exprs.flatMap(namesIn);
    expect(used.length).toBeGreaterThan(20);
    expect(used.filter((n) => !names.has(n))).toEqual([]);
  });
});
