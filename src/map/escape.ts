// Text into markup: every string that comes from the device (its path, its name) or from numbers goes
// through these, so that a name like `<script>` or `"/><a href=` is shown as text and never becomes markup.

/** Text or an attribute value in XML/HTML (both quotes escaped: safe in either kind of attribute). */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * JSON to put inside <script type="application/json">: `<` `>` `&` and the JavaScript line separators are
 * \u escapes, so no `</script>` or `<!--` can appear in it, and JSON.parse gives the same value back.
 */
export function jsonForScript(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
