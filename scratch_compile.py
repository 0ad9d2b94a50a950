import sys, time, torch
sys.path.insert(0, ".")
from bench.runtime import llama7b, decode_tok_s, prefill_ms
layers = int(sys.argv[1])
m = llama7b(layers)
t = decode_tok_s(m, 1)
print("eager-graph dense", layers, t, flush=True)
p = prefill_ms(m, 2048); print("prefill eager", p, flush=True)
t0 = time.time()
m.forward = torch.compile(m.forward, dynamic=False)
t = decode_tok_s(m, 1)
print("compiled dense", layers, t, "compile+run s", time.time() - t0, flush=True)
t0 = time.time()
p = prefill_ms(m, 2048); print("prefill compiled", p, time.time() - t0, flush=True)
