// Loads a GGUF file with llama.cpp (through node-llama-cpp's prebuilt CPU library, fetched by
// scripts/fetch-llama-cpp) and prints one JSON object: the model's vocabulary size, the greedy
// continuation (argmax of llama.cpp's raw logits, token by token) of the prompt ids, the mean
// negative log-likelihood and perplexity of the prompt's tokens after the first, and optionally the
// raw logits at every prompt position.
//
//   node bench/compress/llama_cpp_load.mjs --model M.gguf --ids 1,17,42 [--n 8] [--text "some text"]
//        [--logits] [--llama-cpp .cache/llama-cpp]
//
// --text also tokenizes the text with the GGUF's own vocabulary and prints its greedy continuation.
import path from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = {n: "8", "llama-cpp": path.join(here, "..", "..", ".cache", "llama-cpp")};
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
  const key = a.slice(2);
  if (key === "logits") args.logits = true;
  else args[key] = process.argv[++i];
}
if (!args.model || !args.ids) {
  console.error("usage: llama_cpp_load.mjs --model M.gguf --ids 1,2,3 [--n 8] [--text T] [--logits] [--llama-cpp DIR]");
  process.exit(2);
}
const entry = path.join(path.resolve(args["llama-cpp"]), "node_modules", "node-llama-cpp", "dist", "index.js");
const {getLlama, LlamaLogLevel} = await import(pathToFileURL(entry).href);

const llama = await getLlama({build: "never", gpu: false, logLevel: LlamaLogLevel.error, progressLogs: false});
const model = await llama.loadModel({modelPath: path.resolve(args.model), gpuLayers: 0});
const ids = args.ids.split(",").map(Number);
const steps = Number(args.n);
const nVocab = model.tokens.ggufVocabSize ?? model.fileInsights?.vocabSize;

function logitsArray(map) {
  const out = new Float64Array(map.size);
  for (const [token, value] of map) out[token] = value;
  return out;
}
function argmax(a) {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}
function logSoftmaxAt(a, k) {
  let m = -Infinity;
  for (const v of a) m = Math.max(m, v);
  let s = 0;
  for (const v of a) s += Math.exp(v - m);
  return a[k] - m - Math.log(s);
}

// Raw logits after each of `prompt`'s tokens, then `steps` greedy tokens, in a fresh sequence.
async function run(prompt, wantAllLogits) {
  const context = await model.createContext({contextSize: Math.max(64, prompt.length + steps + 8), batchSize: 64, threads: 1});
  const sequence = context.getSequence();
  const input = prompt.map((t) => [t, {generateNext: {logits: true}}]);
  const out = await sequence.controlledEvaluate(input);
  const logits = out.map((o) => logitsArray(o.next.logits));
  let nll = 0;
  for (let i = 0; i + 1 < prompt.length; i++) nll -= logSoftmaxAt(logits[i], prompt[i + 1]);
  const greedy = [argmax(logits[logits.length - 1])];
  while (greedy.length < steps) {
    const next = await sequence.controlledEvaluate([[greedy[greedy.length - 1], {generateNext: {logits: true}}]]);
    greedy.push(argmax(logitsArray(next[0].next.logits)));
  }
  await context.dispose();
  const mean = prompt.length > 1 ? nll / (prompt.length - 1) : 0;
  return {greedy, nll: mean, perplexity: Math.exp(mean), logits: wantAllLogits ? logits.map((l) => Array.from(l)) : undefined};
}

const result = {model: args.model, n_vocab: nVocab, prompt: ids, ...(await run(ids, args.logits))};
if (args.text) {
  const tokens = Array.from(model.tokenize(args.text));
  const r = await run(tokens, false);
  result.text = {prompt: args.text, ids: tokens, greedy: r.greedy, continuation: model.detokenize(r.greedy), perplexity: r.perplexity};
}
console.log(JSON.stringify(result));
await model.dispose();
await llama.dispose();
