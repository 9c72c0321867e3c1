// The fabric as the heatmap draws it: blocks of leaves of nodes of GPUs,
// in flat typed arrays so that a 131,072-GPU fleet is a few hundred KB and
// every per-GPU pass is a plain loop. Leaves of a block, nodes of a leaf and
// GPUs of a node have contiguous indices; the layout and the hit test rely
// on it.

import { expandHostlist } from './hostlist.js';

export const MAX_GPUS_PER_NODE = 64; // a placement's GPU mask is 64 bits

export class Fabric {
  constructor(name) {
    this.name = name;
    this.blocks = []; // {name, leafStart, leafCount}
    this.leaves = []; // {name, block, nodeStart, nodeCount}
    this.nodeNames = [];
    this.nodeIndex = new Map();
    this._gpus = []; // GPUs per node while building
    this.numGPUs = 0;
    this.maxGPUsPerNode = 0;
  }

  // finish packs the per-node lists into typed arrays.
  finish() {
    const n = this.nodeNames.length;
    this.numNodes = n;
    this.nodeLeaf = new Int32Array(n);
    this.gpuStart = new Int32Array(n + 1);
    for (let l = 0; l < this.leaves.length; l++) {
      const lf = this.leaves[l];
      for (let i = lf.nodeStart; i < lf.nodeStart + lf.nodeCount; i++) this.nodeLeaf[i] = l;
    }
    let g = 0;
    for (let i = 0; i < n; i++) {
      this.gpuStart[i] = g;
      g += this._gpus[i];
      this.maxGPUsPerNode = Math.max(this.maxGPUsPerNode, this._gpus[i]);
    }
    this.gpuStart[n] = g;
    this.numGPUs = g;
    this.gpuNode = new Int32Array(g);
    for (let i = 0; i < n; i++) this.gpuNode.fill(i, this.gpuStart[i], this.gpuStart[i + 1]);
    delete this._gpus;
    return this;
  }

  nodeGPUs(i) { return this.gpuStart[i + 1] - this.gpuStart[i]; }
  leafOf(node) { return this.leaves[this.nodeLeaf[node]]; }
  blockOf(node) { return this.blocks[this.leaves[this.nodeLeaf[node]].block]; }
}

// Builder appends blocks, leaves and nodes in drawing order.
class Builder {
  constructor(name) { this.f = new Fabric(name); }
  block(name) {
    this.f.blocks.push({ name, leafStart: this.f.leaves.length, leafCount: 0 });
  }
  leaf(name) {
    const b = this.f.blocks.length - 1;
    this.f.blocks[b].leafCount++;
    this.f.leaves.push({ name, block: b, nodeStart: this.f.nodeNames.length, nodeCount: 0 });
  }
  node(name, gpus) {
    if (this.f.nodeIndex.has(name)) return false;
    this.f.nodeIndex.set(name, this.f.nodeNames.length);
    this.f.nodeNames.push(name);
    this.f._gpus.push(Math.max(0, Math.min(MAX_GPUS_PER_NODE, gpus | 0)));
    this.f.leaves[this.f.leaves.length - 1].nodeCount++;
    return true;
  }
  // done drops empty leaves and blocks, so the layout never draws boxes
  // without GPUs, then packs the arrays.
  done() {
    const f = this.f;
    const blocks = [], leaves = [];
    for (const b of f.blocks) {
      const start = leaves.length;
      for (let l = b.leafStart; l < b.leafStart + b.leafCount; l++) {
        if (f.leaves[l].nodeCount > 0) leaves.push({ ...f.leaves[l], block: blocks.length });
      }
      if (leaves.length > start) blocks.push({ name: b.name, leafStart: start, leafCount: leaves.length - start });
    }
    f.blocks = blocks;
    f.leaves = leaves;
    return f.finish();
  }
}

const natural = new Intl.Collator('en', { numeric: true }).compare;

// The group a leaf is drawn in: its block, else the nearest domain above
// it (a pod or the cluster in a fabric without blocks).
const BLOCKISH = ['block', 'pod', 'cluster', 'zone', 'region'];

// fromDocument builds the fabric from the native document that GET
// /v1/fabric serves (topology.Document), and then the registered nodes
// the document does not list (extra: [{name, leaf, gpus}]).
export function fromDocument(doc, extra) {
  const spec = (doc && doc.spec) || {};
  const classes = new Map();
  for (const c of spec.nodeClasses || []) classes.set(c.name, c.gpus | 0);
  const byName = new Map();
  for (const d of spec.domains || []) byName.set(d.name, d);
  const groupOf = (leaf) => {
    for (let d = byName.get(leaf.parent); d; d = byName.get(d.parent)) {
      if (BLOCKISH.includes(d.level)) return d.name;
    }
    return leaf.name === 'local' ? 'unlisted' : '(no block)';
  };
  const order = [];
  const leavesOf = new Map();
  for (const d of spec.domains || []) {
    if (d.level !== 'leaf') continue;
    const g = groupOf(d);
    if (!leavesOf.has(g)) { leavesOf.set(g, []); order.push(g); }
    leavesOf.get(g).push(d);
  }
  const b = new Builder((doc.metadata && doc.metadata.name) || 'fabric');
  for (const g of order) {
    b.block(g);
    for (const leaf of leavesOf.get(g)) {
      b.leaf(leaf.name);
      for (const grp of leaf.nodes || []) {
        const gpus = classes.has(grp.class) ? classes.get(grp.class) : 8;
        for (const name of expandHostlist(grp.hosts)) b.node(name, gpus);
      }
    }
  }
  addExtra(b, extra, 'unlisted');
  return b.done();
}

// fromNodes builds the fabric from the node list alone (a server without
// GET /v1/fabric): nodes grouped by their leaf, in one group named name;
// nodes under leaf "local" (registered, not in the fabric file) apart.
export function fromNodes(nodes, name) {
  const b = new Builder(name || 'registered nodes');
  addExtra(b, nodes.filter((n) => n.leaf && n.leaf !== 'local'), name || 'registered nodes');
  addExtra(b, nodes.filter((n) => !n.leaf || n.leaf === 'local'), 'unlisted');
  return b.done();
}

function addExtra(b, extra, blockName) {
  if (!extra || extra.length === 0) return;
  const byLeaf = new Map();
  for (const n of extra) {
    if (b.f.nodeIndex.has(n.name)) continue;
    const leaf = n.leaf || 'local';
    if (!byLeaf.has(leaf)) byLeaf.set(leaf, []);
    byLeaf.get(leaf).push(n);
  }
  if (byLeaf.size === 0) return;
  b.block(blockName);
  for (const leaf of [...byLeaf.keys()].sort(natural)) {
    b.leaf(leaf);
    for (const n of byLeaf.get(leaf).sort((x, y) => natural(x.name, y.name))) b.node(n.name, n.gpus);
  }
}

// demo builds an ND H100 v5-like fleet of gpus GPUs without a server: 8
// GPUs per node, 32 nodes per leaf, 32 leaves per block (the shape of
// `gpucloud topology gen --preset ndv5`).
export function demo(gpus) {
  const nodes = Math.max(1, Math.ceil(gpus / 8));
  const b = new Builder(`demo-${nodes * 8}`);
  const width = String(nodes - 1).length < 5 ? 5 : String(nodes - 1).length;
  for (let i = 0; i < nodes; i++) {
    if (i % 1024 === 0) b.block(`block-${String(i / 1024).padStart(3, '0')}`);
    if (i % 32 === 0) b.leaf(`leaf-${String(i / 32).padStart(4, '0')}`);
    b.node(`ndv5-${String(i).padStart(width, '0')}`, 8);
  }
  return b.done();
}
