// The surface map as one self-contained HTML page: the SVG inline, the model as JSON in a
// <script type="application/json"> (escaped: no `</script>` can end it early), and a small inline script
// that shows a cell's details (byte range, reads per latency bin, block counts) on hover and keeps them on
// click (or named in the address: page.html#region=N). No network: no external script, style sheet, font or image, and no link.
import type { SurfaceModel } from '../control/protocol.js';
import { escapeXml, jsonForScript } from './escape.js';
import { BIN_SWATCHES, NOT_READ, PAGE_BACKGROUND, TEXT_COLOUR } from './palette.js';
import { mapTitle, svgMarkup } from './svg.js';

/** The page's script (plain text: it reads the data, writes only textContent and attributes). */
const SCRIPT = `(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('surface-data').textContent);
  var model = data.model;
  var svg = document.getElementById('surface-map');
  var detail = document.getElementById('detail');
  var mark = document.getElementById('selected');
  var pinned = null;
  function bytes(n) {
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    var v = n, i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return i === 0 ? n + ' B' : v.toFixed(1) + ' ' + u[i];
  }
  function describe(r) {
    var reads = data.binLabels.map(function (l, k) { return l + ': ' + r.bins[k]; }).join(', ');
    return [
      'Region ' + r.index + ' of ' + model.regions.length + (pinned === r.index ? ' (kept: click again to release)' : ''),
      'Bytes ' + r.start + ' to ' + (r.end - 1) + ' (' + bytes(r.start) + ' to ' + bytes(r.end) + ', ' + bytes(r.end - r.start) + ')',
      'Slowest read: ' + (r.worstBin === null ? data.notRead : data.binLabels[r.worstBin]),
      'Reads of the latest pass: ' + reads,
      'Blocks: ' + r.pending + ' pending, ' + r.remapped + ' remapped, ' + r.relocated + ' relocated'
    ].join('\\n');
  }
  function indexOf(target) {
    var i = target && target.getAttribute ? target.getAttribute('data-i') : null;
    return i === null ? null : Number(i);
  }
  function show(i) {
    var r = model.regions[i];
    if (!r) return;
    detail.textContent = describe(r);
    var cell = svg.querySelector('rect.cell[data-i="' + i + '"]');
    if (cell) {
      var x = Number(cell.getAttribute('x')), y = Number(cell.getAttribute('y')), w = Number(cell.getAttribute('width'));
      mark.setAttribute('x', String(x - 1.5));
      mark.setAttribute('y', String(y - 1.5));
      mark.setAttribute('width', String(w + 3));
      mark.setAttribute('height', String(w + 3));
      mark.setAttribute('visibility', 'visible');
    }
  }
  svg.addEventListener('mousemove', function (e) {
    if (pinned !== null) return;
    var i = indexOf(e.target);
    if (i !== null) show(i);
  });
  svg.addEventListener('click', function (e) {
    var i = indexOf(e.target);
    if (i === null) return;
    pinned = pinned === i ? null : i;
    show(i);
  });
  // #region=N in the address: that region's details, kept (a link to one region).
  var m = /^#region=(\\d+)$/.exec(window.location.hash);
  if (m && model.regions[Number(m[1])]) {
    pinned = Number(m[1]);
    show(pinned);
  }
})();`;

export function renderHtml(model: SurfaceModel): string {
  const svg = svgMarkup(model, false).replace(
    /<\/svg>$/,
    '<rect id="selected" x="0" y="0" width="0" height="0" fill="none" stroke="#000000" stroke-width="2" visibility="hidden" pointer-events="none"/>\n</svg>',
  );
  const data = { model, binLabels: BIN_SWATCHES.map((b) => b.label), notRead: NOT_READ.label };
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    `<title>${escapeXml(mapTitle(model))}</title>`,
    '<style>',
    `body { margin: 0; background: ${PAGE_BACKGROUND}; color: ${TEXT_COLOUR}; font-family: sans-serif; }`,
    '#surface-map { display: block; }',
    '#surface-map [data-i] { cursor: pointer; }',
    '#detail { margin: 0 16px 16px 16px; padding: 8px; min-height: 5.5em; border: 1px solid #999999; background: #ffffff; font-size: 13px; white-space: pre-wrap; }',
    '</style>',
    '</head>',
    '<body>',
    svg,
    '<pre id="detail">Move the pointer over a cell to see its region; click to keep it.</pre>',
    `<script type="application/json" id="surface-data">${jsonForScript(data)}</script>`,
    `<script>${SCRIPT}</script>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}
