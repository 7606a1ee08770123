#!/bin/bash
# GPU check: coldtrace on a real NVIDIA driver. Run as root from the repository root
# with a built ./coldtrace; results go to $OUT (default ./gpucheck-out).
# 1. cuinit.c (driver API, own clock) against the uprobe timings in the trace;
# 2. a PyTorch start-up (import, CUDA context, a matmul, listen), recorded twice.
set -u
OUT=${OUT:-gpucheck-out}
mkdir -p "$OUT"
uname -r; nvidia-smi -L
ls -l /sys/kernel/btf/vmlinux || echo "no BTF: eBPF CO-RE cannot load here"
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
ldconfig -p | grep libcuda.so

nvcc -o /tmp/cuinit hack/gpucheck/cuinit.c -lcuda || gcc -o /tmp/cuinit hack/gpucheck/cuinit.c -I/usr/local/cuda/include -L/usr/local/nvidia/lib64 -lcuda
./coldtrace record --timeout 120s -o "$OUT/cuinit.json.gz" -- /tmp/cuinit
./coldtrace report --format json "$OUT/cuinit.json.gz" | python3 -c '
import json,sys; t=json.load(sys.stdin); g=t.get("gpu",{})
print("library:", g.get("library"))
for c in g.get("calls",[]): print("call", c["name"], "%.3f ms" % ((c["end_ns"]-c["start_ns"])/1e6), "ret", c["ret"])
print("ioctls:", sum(i["count"] for i in g.get("ioctls",[])), "opens:", [o["path"] for o in g.get("opens",[])])'

cat > /tmp/torchstart.py <<'PY'
import socket, time
t0 = time.monotonic()
import torch
t1 = time.monotonic()
x = torch.ones(4096, 4096, device="cuda")
y = (x @ x).sum().item()
torch.cuda.synchronize()
t2 = time.monotonic()
print(f"import_s={t1-t0:.3f} cuda_s={t2-t1:.3f}", flush=True)
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); time.sleep(600)
PY
for i in 1 2; do
  ./coldtrace record --timeout 300s -o "$OUT/torch$i.json.gz" -- python3 /tmp/torchstart.py
done
./coldtrace advise "$OUT/torch1.json.gz" "$OUT/torch2.json.gz" || true
