// Prompt and decode speed of llama.cpp (node-llama-cpp's prebuilt CPU library, fetched by
// scripts/fetch-llama-cpp) on a GGUF file, measured the way `fedsplit generate` measures itself so
// that bench/infer/engine-vs-llama-cpp can compare the two:
//   prompt: one evaluation of all N prompt tokens (logits of the last one only);
//   decode: M greedy tokens = M greedy picks and the M - 1 single-token evaluations between them
//           (the first pick reads the prompt's logits), reported as M / seconds.
// Model loading and context creation are not timed. Prints one JSON object with the median (and
// every repetition) of both rates.
//
//   node bench/infer/llama_cpp_speed.mjs --model M.gguf (--ids 1,17,42 | --text "prompt")
//        [--new 64] [--threads 2] [--reps 5] [--llama-cpp .cache/llama-cpp]
//
// --text is tokenized with the GGUF's vocabulary and gets the BOS token in front, as fedsplit
// does with the model's tokenizer; the script prints the ids so a caller can check they match.
import path from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = {new: "64", threads: "2", reps: "5", "llama-cpp": path.join(here, "..", "..", ".cache", "llama-cpp")};
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (!a.startsWith("--") || i + 1 >= process.argv.length) throw new Error(`unexpected argument ${a}`);
  args[a.slice(2)] = process.argv[++i];
}
if (!args.model || (!args.ids && args.text === undefined)) {
  console.error("usage: llama_cpp_speed.mjs --model M.gguf (--ids 1,2,3 | --text T) [--new 64] [--threads 2] [--reps 5] [--llama-cpp DIR]");
  process.exit(2);
}
const entry = path.join(path.resolve(args["llama-cpp"]), "node_modules", "node-llama-cpp", "dist", "index.js");
const {getLlama, LlamaLogLevel} = await import(pathToFileURL(entry).href);

const llama = await getLlama({build: "never", gpu: false, logLevel: LlamaLogLevel.error, progressLogs: false});
const model = await llama.loadModel({modelPath: path.resolve(args.model), gpuLayers: 0});
const threads = Number(args.threads);
const steps = Number(args.new);
const reps = Number(args.reps);
let ids;
if (args.ids) {
  ids = args.ids.split(",").map(Number);
} else {
  ids = Array.from(model.tokenize(args.text));
  if (model.tokens.bos != null) ids.unshift(model.tokens.bos);
}

// Greedy picks happen in llama.cpp's own sampler (temperature 0), as fedsplit's happen in C++:
// copying 8192 logits into a JS Map per token would time JavaScript, not the engine.
const greedyNext = {generateNext: {token: true, options: {temperature: 0}}};

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const contextSize = ids.length + steps + 8;
// One batch holds the whole prompt, as fedsplit evaluates it in one forward.
const context = await model.createContext({contextSize, batchSize: contextSize, threads, sequences: 1});
const sequence = context.getSequence();
const promptRates = [];
const decodeRates = [];
let greedy = [];
// Repetition 0 warms caches and the thread pool and is not reported.
for (let rep = 0; rep <= reps; rep++) {
  await sequence.clearHistory();
  const input = ids.map((t, i) => (i + 1 === ids.length ? [t, greedyNext] : t));
  let t0 = performance.now();
  const out = await sequence.controlledEvaluate(input);
  const promptSeconds = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const tokens = [];
  let next = out[out.length - 1].next.token;
  for (let i = 0; i < steps; i++) {
    tokens.push(next);
    if (i + 1 < steps) next = (await sequence.controlledEvaluate([[next, greedyNext]]))[0].next.token;
  }
  const decodeSeconds = (performance.now() - t0) / 1000;
  if (rep === 0) continue;
  promptRates.push(ids.length / promptSeconds);
  decodeRates.push(steps / decodeSeconds);
  greedy = tokens;
}
console.log(JSON.stringify({
  engine: "llama.cpp", model: args.model, threads, prompt_tokens: ids.length, new_tokens: steps, reps,
  prompt_tokens_per_s: median(promptRates), decode_tokens_per_s: median(decodeRates),
  prompt_rates: promptRates, decode_rates: decodeRates, ids, greedy,
}));
await context.dispose();
await model.dispose();
await llama.dispose();
