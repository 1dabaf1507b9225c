#!/usr/bin/env python3
# Where the CUDA engine's decode step spends its GPU time: the op sequence of infer/gguf_stage.cpp's
# captured step (stacked q/k/v and gate/up products, complex-product RoPE, index_copy_ into the
# cache, attention over the whole cache with later positions masked, SiLU gating) written in
# PyTorch for the 1.1B llama of bench/infer/pipeline-gpu (16 blocks, fp32 weights), captured as one
# CUDA graph and replayed 200 times; beside it the four matrix-vector products alone (the floor the
# small ops sit on) and a variant with PyTorch's fused RMSNorm and scaled-dot-product attention.
# Prints the host's launch time, the GPU's time per step and what the weights take at 4.3 TB/s.
#   python3 bench/infer/decode-step-torch.py      (on a machine with a CUDA GPU)
import time

import torch
import torch.nn.functional as F

torch.manual_seed(0)
dev = 'cuda'
C, I, H, KV, D, ctx, L = 2048, 5632, 16, 16, 128, 1024, 16
W = lambda *s: torch.randn(*s, device=dev) * 0.02
layers = [dict(an=torch.ones(C, device=dev), fn=torch.ones(C, device=dev), qkv=W((H + 2 * KV) * D, C), o=W(C, H * D),
               gu=W(2 * I, C), down=W(C, I), k=torch.zeros(KV, ctx, D, device=dev), v=torch.zeros(KV, ctx, D, device=dev))
          for _ in range(L)]
ang = torch.arange(ctx, device=dev).float()[:, None] * (10000 ** (-torch.arange(0, D, 2, device=dev).float() / D))
rope = torch.polar(torch.ones_like(ang), ang)
cpos = torch.arange(ctx, device=dev)
rms = lambda x, w: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

def engine(h, pos):  # the engine's ops
    for l in layers:
        x = rms(h, l['an'])
        qkv = x @ l['qkv'].t()
        q, k, v = qkv[:, :H * D], qkv[:, H * D:(H + KV) * D], qkv[:, (H + KV) * D:]
        a = rope.index_select(0, pos)
        q = torch.view_as_real(torch.view_as_complex(q.reshape(1, H, D // 2, 2).contiguous()) * a.unsqueeze(1)).reshape(1, H, D)
        k = torch.view_as_real(torch.view_as_complex(k.reshape(1, KV, D // 2, 2).contiguous()) * a.unsqueeze(1)).reshape(1, KV, D)
        l['k'].index_copy_(1, pos, k.transpose(0, 1)); l['v'].index_copy_(1, pos, v.reshape(1, KV, D).transpose(0, 1))
        s = torch.matmul(q.reshape(KV, H // KV, D), l['k'].transpose(1, 2)) / D ** 0.5
        s = s.masked_fill(cpos.gt(pos), float('-inf'))
        h = h + torch.matmul(torch.softmax(s, -1), l['v']).reshape(1, H * D) @ l['o'].t()
        gu = rms(h, l['fn']) @ l['gu'].t()
        h = h + (F.silu(gu[:, :I]) * gu[:, I:]) @ l['down'].t()
    return h

def products(h, pos):  # the four matrix-vector products of each block alone
    for l in layers:
        qkv = h @ l['qkv'].t()
        h = h + qkv[:, :H * D] @ l['o'].t()
        gu = h @ l['gu'].t()
        h = h + gu[:, :I] @ l['down'].t()
    return h

def fused(h, pos):  # PyTorch's fused RMSNorm and attention (with a mask)
    for l in layers:
        x = F.rms_norm(h, (C,), l['an'], 1e-5)
        qkv = x @ l['qkv'].t()
        a = rope.index_select(0, pos)
        qk = torch.view_as_real(torch.view_as_complex(qkv[:, :(H + KV) * D].reshape(1, H + KV, D // 2, 2)) * a.unsqueeze(1)).reshape(H + KV, D)
        l['k'].index_copy_(1, pos, qk[H:].unsqueeze(1)); l['v'].index_copy_(1, pos, qkv[:, (H + KV) * D:].reshape(KV, 1, D))
        m = cpos.le(pos)
        att = F.scaled_dot_product_attention(qk[:H].reshape(1, H, 1, D), l['k'].unsqueeze(0), l['v'].unsqueeze(0), attn_mask=m)
        h = h + att.reshape(1, H * D) @ l['o'].t()
        gu = F.rms_norm(h, (C,), l['fn'], 1e-5) @ l['gu'].t()
        h = h + (F.silu(gu[:, :I]) * gu[:, I:]) @ l['down'].t()
    return h

def probe(name, fn):
    h0 = torch.randn(1, C, device=dev); pos = torch.tensor([100], device=dev)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2): out = fn(h0, pos)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g): out = fn(h0, pos)
    for _ in range(5): g.replay()
    torch.cuda.synchronize()
    n = 200
    t0 = time.perf_counter()
    for _ in range(n): g.replay()
    t1 = time.perf_counter()
    torch.cuda.synchronize(); t2 = time.perf_counter()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(n): g.replay()
    e1.record(); torch.cuda.synchronize()
    # eager, for comparison
    torch.cuda.synchronize(); t3 = time.perf_counter()
    for _ in range(20): fn(h0, pos)
    torch.cuda.synchronize(); t4 = time.perf_counter()
    print(f"{name:10s} graph: host launch {1e3 * (t1 - t0) / n:.3f} ms/step, back-to-back {1e3 * (t2 - t0) / n:.3f} ms/step, "
          f"events {e0.elapsed_time(e1) / n:.3f} ms/step; eager {1e3 * (t4 - t3) / 20:.3f} ms/step", flush=True)

with torch.no_grad():
    for name, fn in [("engine", engine), ("products", products), ("fused", fused)]:
        try: probe(name, fn)
        except Exception as e: print(name, "failed:", repr(e)[:300])
    wbytes = sum(l['qkv'].numel() + l['o'].numel() + l['gu'].numel() + l['down'].numel() for l in layers) * 4
    print(f"weights {wbytes / 1e9:.2f} GB: at 4.3 TB/s {1e3 * wbytes / 4.3e12:.3f} ms/step")
