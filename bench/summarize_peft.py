"""Summarises bench/peft's JSON lines (stdin): one row per implementation and method, then ratios."""
import json, statistics, sys

runs = {}
for line in sys.stdin:
    if line.startswith("{"):
        r = json.loads(line)
        runs.setdefault((r["impl"], r["method"]), []).append(r)


def med(key, impl, method):
    return statistics.median(r[key] for r in runs[(impl, method)])


gpu = next(iter(runs.values()))[0]["device"] == "cuda"
mem = "peak_cuda_bytes" if gpu else "peak_host_bytes"
print(f"{'impl':<14} {'method':<6} {'trainable':>12} {'share':>7} {'adapter KiB':>11} {'step ms':>9} "
      f"{'peak MiB (' + ('CUDA' if gpu else 'host RSS') + ')':>20}")
for (impl, method), rs in sorted(runs.items()):
    r = rs[0]
    adapter = f"{4 * r['trainable'] / 1024:.1f}" if method != "full" else "-"
    print(f"{impl:<14} {method:<6} {r['trainable']:>12,} {100 * r['trainable'] / r['params']:>6.2f}% {adapter:>11} "
          f"{med('step_ms', impl, method):>9.1f} {med(mem, impl, method) / 2**20:>20.1f}")
for (impl, method) in sorted(runs):
    if method != "full":
        print(f"{impl}: {method}/full step time {med('step_ms', impl, method) / med('step_ms', impl, 'full'):.2f}x, "
              f"peak memory {med(mem, impl, method) / med(mem, impl, 'full'):.2f}x")
peer = "pytorch-eager"
for method in ("full", "lora"):
    print(f"{method}: fedsplit/{peer} speed {med('step_ms', peer, method) / med('step_ms', 'fedsplit', method):.2f}x, "
          f"peak memory {med(mem, 'fedsplit', method) / med(mem, peer, method):.2f}x "
          f"(median step {med('step_ms', 'fedsplit', method):.1f} vs {med('step_ms', peer, method):.1f} ms, "
          f"{len(runs[(peer, method)])} rounds)")
