// Hostlist expressions as internal/topology writes them: comma-separated
// items, each a name with bracketed ranges ("ndv5-[00000-00031]",
// "r[1-2]n[01-04]"); zero padding follows the width of the lower bound.
// The browser test checks this against topology.ExpandHostlist.

const MAX_NAMES = 1 << 18; // as topology.maxHostlist

function splitTop(s) {
  const parts = [];
  let depth = 0, start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '[') depth++;
    else if (c === ']') depth--;
    else if (c === ',' && depth === 0) { parts.push(s.slice(start, i)); start = i + 1; }
  }
  parts.push(s.slice(start));
  return parts;
}

function pad(v, width) {
  const s = String(v);
  return s.length >= width ? s : '0'.repeat(width - s.length) + s;
}

function expandRanges(item, body) {
  if (body === '') throw new Error(`hostlist ${JSON.stringify(item)}: empty brackets`);
  const out = [];
  for (const r of body.split(',')) {
    const dash = r.indexOf('-');
    const lo = dash < 0 ? r : r.slice(0, dash);
    const hi = dash < 0 ? r : r.slice(dash + 1);
    if (!/^[0-9]{1,15}$/.test(lo) || !/^[0-9]{1,15}$/.test(hi)) {
      throw new Error(`hostlist ${JSON.stringify(item)}: ${JSON.stringify(r)} is not a number or range`);
    }
    const a = Number(lo), b = Number(hi);
    if (b < a) throw new Error(`hostlist ${JSON.stringify(item)}: range ${r} counts down`);
    if (out.length + (b - a) >= MAX_NAMES) throw new Error(`hostlist ${JSON.stringify(item)}: more than ${MAX_NAMES} names`);
    for (let v = a; v <= b; v++) out.push(pad(v, lo.length));
  }
  return out;
}

function expandItem(item) {
  const open = item.indexOf('[');
  if (open < 0) {
    if (item.includes(']')) throw new Error(`hostlist ${JSON.stringify(item)}: ']' without '['`);
    return [item];
  }
  const end = item.indexOf(']', open);
  if (end < 0) throw new Error(`hostlist ${JSON.stringify(item)}: '[' without ']'`);
  const prefix = item.slice(0, open), body = item.slice(open + 1, end), rest = item.slice(end + 1);
  if (prefix.includes(']')) throw new Error(`hostlist ${JSON.stringify(item)}: ']' without '['`);
  if (body.includes('[')) throw new Error(`hostlist ${JSON.stringify(item)}: nested '['`);
  const values = expandRanges(item, body);
  const tails = expandItem(rest);
  if (values.length * tails.length > MAX_NAMES) throw new Error(`hostlist ${JSON.stringify(item)}: more than ${MAX_NAMES} names`);
  const out = new Array(values.length * tails.length);
  let k = 0;
  for (const v of values) for (const t of tails) out[k++] = prefix + v + t;
  return out;
}

// expandHostlist returns the names of expr in order.
export function expandHostlist(expr) {
  const out = [];
  for (let item of splitTop(expr || '')) {
    item = item.trim();
    if (item === '') continue;
    for (const n of expandItem(item)) out.push(n);
    if (out.length > MAX_NAMES) throw new Error(`hostlist: more than ${MAX_NAMES} names`);
  }
  return out;
}

// parseGPUList reads an index list ("0-7", "0,2-3") into an array.
export function parseGPUList(s) {
  const out = [];
  for (const part of String(s || '').split(',')) {
    if (part === '') continue;
    const dash = part.indexOf('-');
    const a = Number(dash < 0 ? part : part.slice(0, dash));
    const b = dash < 0 ? a : Number(part.slice(dash + 1));
    if (!Number.isInteger(a) || !Number.isInteger(b) || a < 0 || b < a || b > 63) {
      throw new Error(`GPU list ${JSON.stringify(s)}: bad part ${JSON.stringify(part)}`);
    }
    for (let i = a; i <= b; i++) out.push(i);
  }
  return out;
}
