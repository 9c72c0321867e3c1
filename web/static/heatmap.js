// The fabric heatmap: one cell per GPU on a canvas, cells grouped into
// nodes, nodes into leaf-switch boxes, leaves into block sections.
//
// Why it stays smooth at 131,072 GPUs: the page never makes a DOM node per
// GPU. Colours are one byte per GPU (a palette index) in a typed array; a
// paint compares each GPU's colour with what is on the canvas and writes
// only the cells that changed into an ImageData, then puts back the dirty
// rectangle. Labels and highlights live on a second canvas above, redrawn
// only when they change. Mouse positions map to GPUs by arithmetic over the
// layout (a binary search over blocks, divisions within), never by scanning.

// Palette indices. HUE.. are tenant or job colours; DIM is added to dim a
// colour while a job is highlighted.
export const C = {
  EMPTY: 0, FREE: 1, UNREG: 2, DOWN: 3, BAD: 4, CORDON: 5, DRAIN: 6, OTHER: 7,
  BUSY: 8, HFREE: 9, HUE: 16, NHUES: 20,
};
export const DIM = 64;

const BAND_SHIFT = 5;
const BAND = 1 << BAND_SHIFT; // rows per dirty band of paint()
// Browsers refuse canvases taller than 32,767 pixels (Chromium, Firefox).
const MAX_CANVAS = 32767;

const BG = '#0e1217';
const LEAF_BG = '#171d25';
const BASE = {
  [C.EMPTY]: LEAF_BG,
  [C.FREE]: '#343d49',
  [C.UNREG]: '#1f252d',
  [C.DOWN]: '#e0413c',
  [C.BAD]: '#ff3fd0',
  [C.CORDON]: '#8a7430',
  [C.DRAIN]: '#e8892b',
  [C.OTHER]: '#7d8796',
  [C.BUSY]: '#3fb65c',
  [C.HFREE]: '#23472e',
};
// Qualitative colours for tenants and jobs, without the reds, magenta and
// orange that mean trouble above.
export const HUES = [
  '#4e8fd6', '#5cc26b', '#e6c84a', '#b07ad0', '#4fc3c0', '#c0956a', '#8fa8ff', '#a6e07a',
  '#d9a3e0', '#3f9e8f', '#f0e08a', '#7fb8e8', '#b9c45a', '#9a7fd1', '#6fd6a8', '#d6b98a',
  '#5a78c8', '#c8d8e8', '#8c9e3a', '#c28fb0',
];

function rgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}
// ImageData is RGBA bytes; read as Uint32 on a little-endian machine (every
// browser platform) a pixel is 0xAABBGGRR.
function pack([r, g, b]) { return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0; }

export function cssColour(i) {
  if (i >= C.HUE && i < C.HUE + C.NHUES) return HUES[i - C.HUE];
  return BASE[i] || LEAF_BG;
}

function makePalette() {
  const pal = new Uint32Array(2 * DIM);
  const bg = rgb(LEAF_BG);
  for (let i = 0; i < DIM; i++) {
    const c = rgb(cssColour(i));
    pal[i] = pack(c);
    pal[i + DIM] = pack(c.map((v, k) => Math.round(bg[k] + (v - bg[k]) * 0.22)));
  }
  return pal;
}

function pow2AtLeast(x) { let p = 1; while (p < x) p *= 2; return p; }

// nodeGrid lays a node's GPUs out: 8 GPUs as 4x2, 4 as 2x2, 64 as 8x8.
function nodeGrid(m) {
  if (m <= 2) return [Math.max(1, m), 1];
  if (m <= 4) return [2, 2];
  const gc = m <= 8 ? 4 : m <= 16 ? 4 : 8;
  return [gc, Math.ceil(m / gc)];
}

// geometry computes the layout for cell size c (device pixels) in width W
// with blocks in bc columns: every block a box of leaf boxes, the blocks
// flowing left to right in rows.
function geometryCols(f, W, d, c, bc) {
  const [gc, gr] = nodeGrid(f.maxGPUsPerNode);
  const cellGap = c >= 5 ? 1 : 0;
  const nodeGap = c >= 3 ? Math.max(2, Math.round(c / 3)) : 1;
  const g = {
    c, d, gc, gr, cellGap, nodeGap, bc,
    nodeW: gc * c + nodeGap, nodeH: gr * c + nodeGap,
    pad: Math.max(2, Math.round(2 * d)), margin: Math.round(6 * d),
    headerH: Math.round(18 * d), leafGap: Math.max(3, Math.round(4 * d)), blockGap: Math.round(10 * d),
    W, H: 0, blocks: [], rowY: [], fits: true,
  };
  g.blockW = Math.floor((W - 2 * g.margin - (bc - 1) * g.blockGap) / bc);
  let y = g.margin, rowH = 0;
  f.blocks.forEach((b, bi) => {
    const col = bi % bc;
    if (col === 0) {
      if (bi > 0) y += rowH + g.blockGap;
      g.rowY.push(y);
      rowH = 0;
    }
    let maxN = 1;
    for (let l = b.leafStart; l < b.leafStart + b.leafCount; l++) maxN = Math.max(maxN, f.leaves[l].nodeCount);
    const fitCols = Math.floor((g.blockW - 2 * g.pad + g.nodeGap) / g.nodeW);
    if (fitCols < 1) g.fits = false;
    const cols = Math.max(1, Math.min(maxN, fitCols, pow2AtLeast(Math.sqrt(maxN * g.nodeH / g.nodeW))));
    const rows = Math.ceil(maxN / cols);
    const leafW = cols * g.nodeW - g.nodeGap + 2 * g.pad;
    const labelH = leafW >= 60 * d ? Math.round(13 * d) : 0;
    const leafH = rows * g.nodeH - g.nodeGap + 2 * g.pad + labelH;
    const perRow = Math.max(1, Math.min(b.leafCount, Math.floor((g.blockW + g.leafGap) / (leafW + g.leafGap))));
    const leafRows = Math.ceil(b.leafCount / perRow);
    const h = g.headerH + leafRows * (leafH + g.leafGap) - g.leafGap;
    const x = g.margin + col * (g.blockW + g.blockGap);
    g.blocks.push({ x, y, cols, rows, leafW, leafH, labelH, perRow, leafRows, h });
    rowH = Math.max(rowH, h);
  });
  g.H = Math.max(y + rowH + g.margin, g.margin * 2);
  return g;
}

// geometry picks the number of block columns that makes the layout
// shortest for cell size c.
export function geometry(f, W, d, c) {
  let best = null;
  const most = Math.min(f.blocks.length, 64);
  for (let bc = 1; bc <= most; bc++) {
    const g = geometryCols(f, W, d, c, bc);
    if (!g.fits) break;
    if (!best || g.H < best.H) best = g;
  }
  return best || geometryCols(f, W, d, c, 1);
}

export class Heatmap {
  constructor(wrap, base, overlay, hover) {
    this.wrap = wrap;
    this.base = base;
    this.overlay = overlay;
    this.hover = hover;
    this.ctx = base.getContext('2d', { alpha: false });
    this.octx = overlay.getContext('2d');
    this.pal = makePalette();
    this.zoom = 0; // 0: fit; else a cell size in CSS pixels
    this.f = null;
    this.blockText = [];
    this.selected = null; // Int32Array of node indices to outline
  }

  setFabric(f) {
    this.f = f;
    this.colour = new Uint8Array(f.numGPUs);
    this.relayout();
  }

  // relayout picks the largest cell size whose layout fits the visible
  // height (or the zoom the user chose), then redraws everything.
  relayout() {
    const f = this.f;
    if (!f) return;
    const t0 = performance.now();
    const d = window.devicePixelRatio || 1;
    const W = Math.max(200, Math.floor(this.wrap.clientWidth * d) - Math.round(2 * d));
    const availH = Math.max(200, this.wrap.clientHeight * d);
    let g;
    if (this.zoom > 0) {
      // The zoom asked for, or the largest cell the canvas can hold.
      for (let c = Math.round(this.zoom * d); c >= 1; c--) {
        g = geometry(f, W, d, c);
        if (g.H <= MAX_CANVAS) break;
      }
      this.zoom = g.c / d;
    } else {
      for (let c = Math.round(40 * d); c >= 1; c--) {
        g = geometry(f, W, d, c);
        if (g.H <= availH) break;
      }
    }
    this.g = g;
    this.place();
    this.base.width = g.W;
    this.base.height = g.H;
    this.overlay.width = g.W;
    this.overlay.height = g.H;
    for (const cv of [this.base, this.overlay]) {
      cv.style.width = `${g.W / d}px`;
      cv.style.height = `${g.H / d}px`;
    }
    this.img = this.ctx.createImageData(g.W, g.H);
    this.px = new Uint32Array(this.img.data.buffer);
    this.background();
    this.onCanvas = new Uint32Array(f.numGPUs); // 0: nothing painted yet
    this.layoutMs = performance.now() - t0;
    this.paint();
    this.drawOverlay();
  }

  // place computes the top-left pixel of every node and GPU cell.
  place() {
    const f = this.f, g = this.g;
    this.nodeX = new Int32Array(f.numNodes);
    this.nodeY = new Int32Array(f.numNodes);
    this.gpuX = new Int32Array(f.numGPUs);
    this.gpuY = new Int32Array(f.numGPUs);
    this.leafX = new Int32Array(f.leaves.length);
    this.leafY = new Int32Array(f.leaves.length);
    f.blocks.forEach((b, bi) => {
      const bg = g.blocks[bi];
      for (let k = 0; k < b.leafCount; k++) {
        const l = b.leafStart + k;
        const lx = bg.x + (k % bg.perRow) * (bg.leafW + g.leafGap);
        const ly = bg.y + g.headerH + Math.floor(k / bg.perRow) * (bg.leafH + g.leafGap);
        this.leafX[l] = lx;
        this.leafY[l] = ly;
        const leaf = f.leaves[l];
        for (let j = 0; j < leaf.nodeCount; j++) {
          const n = leaf.nodeStart + j;
          const nx = lx + g.pad + (j % bg.cols) * g.nodeW;
          const ny = ly + g.pad + bg.labelH + Math.floor(j / bg.cols) * g.nodeH;
          this.nodeX[n] = nx;
          this.nodeY[n] = ny;
          for (let i = f.gpuStart[n], k2 = 0; i < f.gpuStart[n + 1]; i++, k2++) {
            this.gpuX[i] = nx + (k2 % g.gc) * g.c;
            this.gpuY[i] = ny + Math.floor(k2 / g.gc) * g.c;
          }
        }
      }
    });
  }

  background() {
    const g = this.g, px = this.px, W = g.W;
    px.fill(pack(rgb(BG)));
    const leafBg = pack(rgb(LEAF_BG));
    const f = this.f;
    for (let l = 0; l < f.leaves.length; l++) {
      const bg = g.blocks[f.leaves[l].block];
      const x0 = this.leafX[l], y0 = this.leafY[l];
      for (let y = y0; y < y0 + bg.leafH; y++) px.fill(leafBg, y * W + x0, y * W + x0 + bg.leafW);
    }
  }

  // paint writes the cells whose colour changed since the last paint and
  // returns how many did.
  //
  // Changed cells are put back per band of BAND rows, each band from its
  // leftmost to its rightmost change: a few jobs ending far apart on a
  // tall canvas put a few small rectangles, not the whole image.
  paint() {
    const g = this.g, px = this.px, W = g.W, pal = this.pal, col = this.colour, on = this.onCanvas;
    const gx = this.gpuX, gy = this.gpuY, s = g.c - g.cellGap, n = col.length;
    const nb = Math.ceil(g.H / BAND);
    const bx0 = new Int32Array(nb).fill(W), bx1 = new Int32Array(nb).fill(-1);
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const v = pal[col[i]];
      if (on[i] === v) continue;
      on[i] = v;
      changed++;
      const x = gx[i], y = gy[i];
      if (s === 1) {
        px[y * W + x] = v;
      } else {
        for (let r = 0, o = y * W + x; r < s; r++, o += W) px.fill(v, o, o + s);
      }
      // A cell may straddle two bands.
      for (let b = y >> BAND_SHIFT, last = (y + s - 1) >> BAND_SHIFT; b <= last; b++) {
        if (x < bx0[b]) bx0[b] = x;
        if (x + s > bx1[b]) bx1[b] = x + s;
      }
    }
    for (let b = 0; b < nb; b++) {
      if (bx1[b] >= 0) this.ctx.putImageData(this.img, 0, 0, bx0[b], b * BAND, bx1[b] - bx0[b], BAND);
    }
    return changed;
  }

  // repaintAll forgets what is on the canvas and paints every cell (the
  // benchmark's full frame).
  repaintAll() {
    this.onCanvas.fill(0);
    return this.paint();
  }

  setBlockText(texts) { this.blockText = texts; }

  // drawOverlay draws block headers, leaf names and the outline of the
  // highlighted job's nodes.
  drawOverlay() {
    const f = this.f, g = this.g, o = this.octx, d = g.d;
    o.clearRect(0, 0, g.W, g.H);
    o.textBaseline = 'middle';
    f.blocks.forEach((b, bi) => {
      const bg = g.blocks[bi];
      const y = bg.y + g.headerH / 2 - d;
      o.font = `600 ${Math.round(12 * d)}px system-ui, sans-serif`;
      o.fillStyle = '#c9d4e0';
      o.textAlign = 'left';
      const nameW = o.measureText(b.name).width;
      o.fillText(fit(o, b.name, g.blockW), bg.x, y);
      const t = this.blockText[bi];
      if (t && g.blockW - nameW > 40 * d) {
        o.font = `${Math.round(11 * d)}px system-ui, sans-serif`;
        o.fillStyle = '#8b98a8';
        o.textAlign = 'right';
        o.fillText(fit(o, t, g.blockW - nameW - 10 * d), bg.x + g.blockW, y);
      }
      if (bg.labelH > 0) {
        o.font = `${Math.round(10 * d)}px system-ui, sans-serif`;
        o.fillStyle = '#7c8898';
        o.textAlign = 'left';
        for (let l = b.leafStart; l < b.leafStart + b.leafCount; l++) {
          o.fillText(fit(o, f.leaves[l].name, bg.leafW - 2 * g.pad), this.leafX[l] + g.pad, this.leafY[l] + g.pad + bg.labelH / 2);
        }
      }
    });
    const sel = this.selected;
    if (sel && sel.length > 0) {
      o.strokeStyle = '#ffffff';
      o.lineWidth = Math.max(1, Math.round(d));
      const w = g.gc * g.c - g.cellGap, h = g.gr * g.c - g.cellGap, m = o.lineWidth;
      if (sel.length <= 4096) {
        for (const n of sel) o.strokeRect(this.nodeX[n] - m / 2 - m, this.nodeY[n] - m / 2 - m, w + 2 * m + m, h + 2 * m + m);
      }
      // The leaves the job spans, so a gang is visible at any zoom.
      const leaves = new Set();
      for (const n of sel) leaves.add(f.nodeLeaf[n]);
      o.strokeStyle = '#9ecbff';
      for (const l of leaves) {
        const bg = g.blocks[f.leaves[l].block];
        o.strokeRect(this.leafX[l] + 0.5, this.leafY[l] + 0.5, bg.leafW - 1, bg.leafH - 1);
      }
    }
  }

  // hitTest maps a point in CSS pixels (relative to the canvas) to
  // {gpu, node, leaf, block}; missing parts are -1.
  hitTest(cssX, cssY) {
    const f = this.f, g = this.g;
    const none = { gpu: -1, node: -1, leaf: -1, block: -1 };
    if (!f || !g) return none;
    const x = Math.floor(cssX * g.d), y = Math.floor(cssY * g.d);
    // The last row of blocks starting at or above y, then the column.
    let lo = 0, hi = g.rowY.length - 1, brow = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (g.rowY[mid] <= y) { brow = mid; lo = mid + 1; } else hi = mid - 1;
    }
    if (brow < 0) return none;
    const bcol = Math.floor((x - g.margin) / (g.blockW + g.blockGap));
    const bi = brow * g.bc + bcol;
    if (bcol < 0 || bcol >= g.bc || bi >= f.blocks.length) return none;
    const bg = g.blocks[bi], b = f.blocks[bi];
    const out = { ...none, block: bi };
    const ry = y - bg.y - g.headerH, rx = x - bg.x;
    if (ry < 0 || rx < 0 || ry >= bg.h - g.headerH) return out;
    const row = Math.floor(ry / (bg.leafH + g.leafGap)), col = Math.floor(rx / (bg.leafW + g.leafGap));
    const ly = ry - row * (bg.leafH + g.leafGap), lx = rx - col * (bg.leafW + g.leafGap);
    if (col >= bg.perRow || ly >= bg.leafH || lx >= bg.leafW) return out;
    const k = row * bg.perRow + col;
    if (k >= b.leafCount) return out;
    const l = b.leafStart + k;
    out.leaf = l;
    const ix = lx - g.pad, iy = ly - g.pad - bg.labelH;
    if (ix < 0 || iy < 0) return out;
    const ncol = Math.floor(ix / g.nodeW), nrow = Math.floor(iy / g.nodeH);
    if (ncol >= bg.cols) return out;
    const j = nrow * bg.cols + ncol;
    if (j >= f.leaves[l].nodeCount) return out;
    const gx = Math.floor((ix - ncol * g.nodeW) / g.c), gy = Math.floor((iy - nrow * g.nodeH) / g.c);
    if (gx >= g.gc || gy >= g.gr) return out;
    const n = f.leaves[l].nodeStart + j;
    out.node = n;
    const gi = gy * g.gc + gx;
    if (gi < f.nodeGPUs(n)) out.gpu = f.gpuStart[n] + gi;
    return out;
  }

  // cellCentre is the centre of a GPU's cell in CSS pixels (tests).
  cellCentre(i) {
    const g = this.g, s = g.c - g.cellGap;
    return { x: (this.gpuX[i] + s / 2) / g.d, y: (this.gpuY[i] + s / 2) / g.d };
  }

  // showHover outlines node n (or hides the outline for -1).
  showHover(n) {
    const h = this.hover, g = this.g;
    if (n < 0) { h.hidden = true; return; }
    const d = g.d;
    h.hidden = false;
    h.style.left = `${(this.nodeX[n] - 2 * d) / d + this.base.offsetLeft}px`;
    h.style.top = `${(this.nodeY[n] - 2 * d) / d + this.base.offsetTop}px`;
    h.style.width = `${(g.gc * g.c - g.cellGap + 2 * d) / d}px`;
    h.style.height = `${(g.gr * g.c - g.cellGap + 2 * d) / d}px`;
  }
}

function fit(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let s = text;
  while (s.length > 1 && ctx.measureText(s + '…').width > width) s = s.slice(0, -1);
  return s + '…';
}
