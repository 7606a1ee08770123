# The inference server of the cold-start benchmark (hack/benchcoldstart). It does what an
# LLM server does before it serves, in the order it does it, and times each step on its
# own clock (seconds since the kernel started this process):
#   imports: IMPORTS modules of the libraries tree under LIBS;
#   libs:    maps each native library (LIBS/native/*) and touches a quarter of it;
#   model:   the shard from the cache agent's store (MODEL_CACHE) when staged, else
#            downloaded from the S3-shaped origin with ranged GETs into MODEL_PATH, then
#            read whole (as a server copies it to the accelerator);
#   weights: maps WEIGHTS (safetensors), parses its header, touches every page of the
#            tensors it keeps (three of every five);
#   ready:   listens on a TCP port; prints the marks as one JSON line.
import http.client, importlib, json, mmap, os, socket, struct, sys, time

env = os.environ


def age():
    with open("/proc/self/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19])
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start / os.sysconf("SC_CLK_TCK")


marks = {"python": round(age(), 4)}


def mark(name):
    marks[name] = round(age(), 4)


def read_whole(path):
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass


def download(path):
    size, step = int(env["MODEL_SIZE"]), 16 << 20
    c = http.client.HTTPConnection(env["ORIGIN_HOST"], int(env["ORIGIN_PORT"]), timeout=600)
    with open(path, "wb") as out:
        for off in range(0, size, step):
            c.request("GET", env["ORIGIN_PATH"], headers={"Range": "bytes=%d-%d" % (off, min(off + step, size) - 1)})
            r = c.getresponse()
            if r.status != 206:
                sys.exit("origin answered %d" % r.status)
            while True:
                b = r.read(1 << 20)
                if not b:
                    break
                out.write(b)
    c.close()


def touch(m, off, n):
    page = mmap.PAGESIZE
    start = off // page * page
    return sum(m[start:off + n:page])


libs = env["LIBS"]
sys.path.insert(0, libs)
mods = sorted(n[:-3] for n in os.listdir(os.path.join(libs, "torchlike")) if n.startswith("m") and n.endswith(".py"))
for name in mods[: int(env["IMPORTS"])]:
    importlib.import_module("torchlike." + name)
mark("imports")

for name in sorted(os.listdir(os.path.join(libs, "native"))):
    with open(os.path.join(libs, "native", name), "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        touch(m, 0, len(m) // 4)
mark("libs")

cache = env.get("MODEL_CACHE", "")
if cache and os.path.exists(cache):
    model, marks["model_from"] = cache, "staged"
else:
    model, marks["model_from"] = env["MODEL_PATH"], "origin"
    os.makedirs(os.path.dirname(model), exist_ok=True)
    download(model)
read_whole(model)
mark("model")

with open(env["WEIGHTS"], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    (hlen,) = struct.unpack("<Q", m[:8])
    header = json.loads(m[8 : 8 + hlen])
    tensors = sorted((k, v) for k, v in header.items() if k != "__metadata__")
    for i, (name, t) in enumerate(tensors):
        if i % 5 < 3:
            a, b = t["data_offsets"]
            touch(m, 8 + hlen + a, b - a)
mark("weights")

s = socket.socket()
s.bind(("0.0.0.0", 0))
s.listen()
mark("ready")
print(json.dumps(marks), flush=True)
if env.get("EXIT_AFTER_READY"):
    sys.exit(0)
while True:
    time.sleep(3600)
