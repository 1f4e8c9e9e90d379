// Strings from outside (paths, names, error texts, log messages) on their way to a terminal: a C0 or C1
// control character, DEL or ESC in them could move the cursor, recolour or retitle the terminal, or fake a
// line of output. Each is shown as a literal \u00XX escape instead.

const CONTROLS = /[\u0000-\u001f\u007f-\u009f]/g;

/** `s` with every C0/C1 control character, DEL and ESC replaced by the six characters `\u00XX`. */
export function escapeControls(s: string): string {
  return s.replace(CONTROLS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
