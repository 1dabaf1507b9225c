"""PyTorch eager peer for bench_train: the same GPT-2-shaped model, batch and optimizer, in Python.
With --lora R only rank-R LoRA adapters on the attention projections train, as in bench_train."""
import argparse, json, math, resource, time
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
for k, v in dict(layers=6, d=256, heads=8, T=256, B=8, vocab=8192, steps=10, threads=2, lora=0).items():
    p.add_argument(f"--{k}", type=int, default=v)
p.add_argument("--device", default="cpu")
p.add_argument("--bf16", type=int, default=0)
p.add_argument("--compile", type=int, default=0)
p.add_argument("--phases", type=int, default=0)
p.add_argument("--profile", default="")
a = p.parse_args()
torch.set_num_threads(a.threads)


class Block(nn.Module):
    def __init__(s, d, h):
        super().__init__()
        s.h = h
        s.ln_1, s.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        s.c_attn, s.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        s.c_fc, s.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        # nanoGPT's way on PyTorch without fused attention: one causal mask, made once.
        s.register_buffer("mask", torch.ones(a.T, a.T, dtype=torch.bool).triu(1), persistent=False)

    def forward(s, x):
        B, T, C = x.shape
        q, k, v = s.c_attn(s.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, s.h, C // s.h).transpose(1, 2) for t in (q, k, v))
        if hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
            att = att.masked_fill(s.mask[:T, :T], float("-inf"))
            y = att.softmax(-1) @ v
        x = x + s.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + s.mlp_proj(F.gelu(s.c_fc(s.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(s):
        super().__init__()
        s.wte, s.wpe = nn.Embedding(a.vocab, a.d), nn.Embedding(a.T, a.d)
        s.h = nn.ModuleList(Block(a.d, a.heads) for _ in range(a.layers))
        s.ln_f = nn.LayerNorm(a.d)

    def forward(s, ids):
        x = s.wte(ids) + s.wpe(torch.arange(ids.size(1), device=ids.device))
        for b in s.h:
            x = b(x)
        return s.ln_f(x) @ s.wte.weight.t()


def init_weights(model):
    # GPT-2's initialisation, as fedsplit's init_weights: N(0, 0.02), residual projections scaled by
    # 1/sqrt(2 * layers), zero biases, unit norms. The same numeric regime on both sides matters on
    # CPU, where denormal numbers from a wider init slow every kernel down.
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(p)
        elif "ln" in name:
            nn.init.ones_(p)
        else:
            std = 0.02 / math.sqrt(2 * a.layers) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
            nn.init.normal_(p, 0.0, std)


class LoRA(nn.Module):
    """y = base(x) + (alpha / r) * (x A^T) B^T with the base frozen, as PEFT's LoRA Linear."""

    def __init__(s, base, r):
        super().__init__()
        s.base, s.scale = base, 2.0
        s.A = nn.Parameter(torch.empty(r, base.in_features).uniform_(-base.in_features ** -0.5, base.in_features ** -0.5))
        s.B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(s, x):
        return s.base(x) + (x @ s.A.t()) @ s.B.t() * s.scale


dev = torch.device(a.device)
model = GPT()
init_weights(model)
if a.lora:
    model.requires_grad_(False)
    for b in model.h:
        b.c_attn, b.c_proj = LoRA(b.c_attn, a.lora), LoRA(b.c_proj, a.lora)
model = model.to(dev)
trainable = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
fwd = torch.compile(model) if a.compile else model


phase_ms = {}


def mark(name, t):
    """With --phases 1, times each phase (synchronising the device between phases)."""
    if not a.phases:
        return t
    if dev.type == "cuda":
        torch.cuda.synchronize()
    now = time.perf_counter()
    phase_ms[name] = phase_ms.get(name, 0.0) + 1e3 * (now - t)
    return now


def step():
    t = time.perf_counter()
    ids = torch.randint(0, a.vocab, (a.B, a.T + 1), device=dev)
    opt.zero_grad(set_to_none=True)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(a.bf16) and dev.type == "cuda"):
        logits = fwd(ids[:, :-1])
        t = mark("forward", t)
        loss = F.cross_entropy(logits.float().reshape(-1, a.vocab), ids[:, 1:].reshape(-1))
        t = mark("loss", t)
    loss.backward()
    t = mark("backward", t)
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    t = mark("clip", t)
    opt.step()
    mark("optimizer", t)
    return loss


warmup = 2 if not a.compile else 5
for _ in range(warmup):
    step()
phase_ms.clear()  # phases are timed over the measured steps only
if a.profile:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    prof.export_chrome_trace(a.profile)
if dev.type == "cuda":
    torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(a.steps):
    loss = step()
loss.item()
if dev.type == "cuda":
    torch.cuda.synchronize()
secs = time.perf_counter() - t0
print(json.dumps({"impl": "pytorch-compile" if a.compile else "pytorch-eager", "method": "lora" if a.lora else "full",
                  "tokens_per_s": a.B * a.T * a.steps / secs, "step_ms": 1e3 * secs / a.steps,
                  "params": sum(p.numel() for p in model.parameters()), "trainable": sum(p.numel() for p in trainable),
                  "peak_host_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "peak_cuda_bytes": torch.cuda.max_memory_allocated() if dev.type == "cuda" else -1,
                  "threads": a.threads, "device": a.device, "torch": torch.__version__,
                  **({"phase_ms": {k: v / a.steps for k, v in phase_ms.items()}} if a.phases else {})}))
