// Command-line parsing: node:util parseArgs (strict) for the shape, zod for the values. Every problem
// becomes one usage error (exit code 2) whose message names the option and what is wrong with it.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type * as z from 'zod';
import { usageError } from '../errors.js';

export type OptionSpecs = NonNullable<ParseArgsConfig['options']>;

export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export function parseShape(command: string, argv: string[], options: OptionSpecs, allowPositionals: boolean): Parsed {
  try {
    const { values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals });
    return { values: values as Parsed['values'], positionals };
  } catch (e) {
    throw usageError(describeParseError(command, e));
  }
}

function describeParseError(command: string, e: unknown): string {
  const err = e as { code?: string; message?: string };
  const msg = err.message ?? String(e);
  const quoted = /'([^']*)'/.exec(msg)?.[1] ?? '';
  const help = `see dmremap-ublk ${command} --help`;
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option ${quoted} for ${command} (${help})`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const opt = quoted.split(' ')[0] ?? quoted;
      return msg.includes('argument missing') ? `option ${opt} needs a value` : `option ${opt} takes no value`;
    }
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument ${JSON.stringify(quoted)} for ${command} (${help})`;
    default:
      return msg;
  }
}

/** Validates parsed values with `schema`; the first issue's message becomes the usage error. */
export function validate<S extends z.ZodType>(schema: S, values: unknown): z.output<S> {
  const r = schema.safeParse(values);
  if (r.success) return r.data;
  throw usageError(r.error.issues[0]?.message ?? 'invalid arguments');
}

/** The single positional argument naming a device (status, del). */
export function oneTarget(command: string, positionals: string[]): string {
  if (positionals.length === 0) {
    throw usageError(`missing device to ${command} (a /dev/ublkbN path, device id or name)`);
  }
  if (positionals.length > 1) throw usageError(`${command} takes one device, got ${positionals.length}`);
  const t = positionals[0] as string;
  if (t === '') throw usageError(`device to ${command} must not be empty`);
  return t;
}
