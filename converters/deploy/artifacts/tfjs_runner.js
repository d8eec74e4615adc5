// Runs a TF.js graph model in Node, as a browser or a Node server runs it, for `convnext verify`
// (converters/deploy/artifacts/tfjs.py starts it; nothing else does).
//
//     node tfjs_runner.js REQUEST.json
//
// REQUEST.json names the model.json (the checked copy verify wrote: graph, signature and
// weight specs only), where TF.js is, its weight shards in the manifest's order (the Python
// side has checked that each lies in the model's folder and that their sizes add up to what the
// manifest declares), the input batch (raw little-endian float32 in a file, and its shape), the
// node outputs to fetch (name or name:index), the shapes of those worth writing (none: any),
// and where to write what it fetched: the raw float32 values one after another, and an index of
// them (name, shape, offset; -1 for one not written) as JSON.
//
// The model is TF.js's own graph executor on TF.js's WebAssembly backend (the backend a browser
// falls back to without WebGL, and the fast one in Node without tfjs-node's native library,
// which is downloaded at install time from outside the npm registry); `backend` in the request
// picks TF.js's plain JavaScript one, "cpu", instead. Nothing in the model's files is executed:
// a graph model is a list of TF.js operations, each run by the backend's own kernel.
"use strict";

const fs = require("fs");
const path = require("path");
let tf, tfconv; // required in main(), so that a missing package is this script's one-line error

const FETCH_CHUNK = 64; // node outputs fetched in one run: their tensors are held until written

// The shards one after another in one buffer, each read straight into its place (no second
// copy of the weights).
function readWeights(shards) {
  const sizes = shards.map((file) => fs.statSync(file).size);
  const joined = new Uint8Array(sizes.reduce((sum, size) => sum + size, 0));
  let offset = 0;
  shards.forEach((file, i) => {
    const fd = fs.openSync(file, "r");
    let done = 0;
    while (done < sizes[i]) {
      const read = fs.readSync(fd, joined, offset + done, sizes[i] - done, null);
      if (read === 0) throw new Error(`${file}: shorter than when it was checked`);
      done += read;
    }
    fs.closeSync(fd);
    offset += sizes[i];
  });
  return joined.buffer;
}

async function loadModel(request) {
  const json = JSON.parse(fs.readFileSync(request.model, "utf8"));
  const weightSpecs = [];
  for (const group of json.weightsManifest || []) weightSpecs.push(...group.weights);
  const artifacts = {
    modelTopology: json.modelTopology,
    format: json.format,
    generatedBy: json.generatedBy,
    convertedBy: json.convertedBy,
    signature: json.signature,
    weightSpecs,
    weightData: readWeights(request.shards),
  };
  return tfconv.loadGraphModel({ load: async () => artifacts });
}

async function setBackend(name, modules) {
  if (name === "wasm") {
    require(path.join(modules, "@tensorflow", "tfjs-backend-wasm"));
  }
  if (!(await tf.setBackend(name))) throw new Error(`the TF.js backend ${name} did not start`);
  await tf.ready();
}

// Whether a fetched tensor is written: a float one, of a shape the request asks for if it asks.
function wanted(tensor, shapes) {
  if (tensor.dtype !== "float32") return false;
  if (!shapes) return true;
  return shapes.some(
    (shape) => shape.length === tensor.shape.length && shape.every((d, i) => d === tensor.shape[i]),
  );
}

async function main() {
  const request = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  // by absolute path: the TF.js verify checked, not one in a node_modules above this script
  const modules = request.modules;
  tf = require(path.join(modules, "@tensorflow", "tfjs-core"));
  tfconv = require(path.join(modules, "@tensorflow", "tfjs-converter"));
  require(path.join(modules, "@tensorflow", "tfjs-backend-cpu"));
  // TF.js's advice on the console (install tfjs-node, use execute()) would mix with our output
  console.log = console.warn = console.info = () => {};
  await setBackend(request.backend, modules);
  const model = await loadModel(request);
  const raw = fs.readFileSync(request.input);
  const values = new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4);
  const input = tf.tensor(values, request.shape, "float32");
  const feed = { [model.inputs[0].name]: input };
  const out = fs.openSync(request.values, "w");
  const index = [];
  let offset = 0;
  for (let start = 0; start < request.fetch.length; start += FETCH_CHUNK) {
    const names = request.fetch.slice(start, start + FETCH_CHUNK);
    let tensors = await model.executeAsync(feed, names);
    if (!Array.isArray(tensors)) tensors = [tensors];
    tensors.forEach((tensor, i) => {
      const entry = { name: names[i], shape: tensor.shape, dtype: tensor.dtype, offset: -1 };
      if (wanted(tensor, request.shapes)) {
        const floats = tensor.dataSync();
        const data = Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength);
        entry.offset = offset;
        fs.writeSync(out, data);
        offset += data.length;
      }
      index.push(entry);
      tensor.dispose();
    });
  }
  fs.closeSync(out);
  fs.writeFileSync(request.index, JSON.stringify({ backend: tf.getBackend(), tensors: index }));
}

main().catch((error) => {
  process.stderr.write(`${String((error && error.message) || error).split("\n")[0]}\n`);
  process.exit(1);
});
