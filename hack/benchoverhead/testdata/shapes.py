"""The workloads of the overhead bench: python3 shapes.py SHAPE DIR [PORT]. Each does its
work once and prints, on its own clocks, which start after the interpreter is up (the
tracer's start-up and the interpreter's are not counted), ELAPSED <ns> of wall time and
CPU <ns> of the process's CPU time, all threads, kernel included: that is where the probes'
work lands, and it is what other work on a shared machine disturbs least."""
import mmap
import os
import socket
import sys
import threading
import time

MODULES = """json sqlite3 asyncio ssl decimal email.mime.multipart http.client xml.etree.ElementTree
logging.handlers argparse csv difflib fractions statistics tarfile zipfile gzip bz2 lzma pickle
shelve uuid urllib.request unittest multiprocessing concurrent.futures subprocess tempfile
shutil glob fnmatch textwrap string pprint dataclasses typing enum functools itertools
collections.abc heapq bisect array struct hashlib hmac secrets base64 binascii codecs locale
gettext calendar datetime zoneinfo sched queue contextvars selectors socketserver http.server
xmlrpc.client ftplib imaplib smtplib poplib mailbox mimetypes wave colorsys tomllib configparser
netrc plistlib sqlite3.dbapi2 ctypes curses ast dis inspect tokenize pydoc doctest trace
tracemalloc cProfile pstats timeit ipaddress""".split()


def imports(d):
    for m in MODULES:
        try:
            __import__(m)
        except ImportError:
            pass


def smallfiles(d):
    sub = os.path.join(d, "small")
    for name in sorted(os.listdir(sub)):
        with open(os.path.join(sub, name), "rb") as f:
            f.read()


def touch(path):
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        s = 0
        for off in range(0, len(m), 4096):
            s += m[off]
        m.close()


def mmap_hot(d):
    touch(os.path.join(d, "weights"))


def mmap_cold(d):
    touch(os.path.join(d, "weights"))


def anon(d):
    b = bytearray(384 << 20)  # zero-filled: every page faulted in anonymously
    b[-1] = 1


def seqread(d):
    with open(os.path.join(d, "big"), "rb", buffering=0) as f:
        buf = bytearray(1 << 20)
        while f.readinto(buf):
            pass


def download(d, port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /model HTTP/1.0\r\n\r\n")
    buf = bytearray(1 << 20)
    while s.recv_into(buf):
        pass
    s.close()


def loader(d):
    path = os.path.join(d, "big")
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    chunk = 4 << 20

    def part(i, n):
        off = i * chunk
        while off < size:
            os.pread(fd, chunk, off)
            off += n * chunk

    ts = [threading.Thread(target=part, args=(i, 4)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    os.close(fd)


def main():
    shape, d = sys.argv[1], sys.argv[2]
    if shape == "mmap-cold":
        fd = os.open(os.path.join(d, "weights"), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    t, c = time.perf_counter_ns(), time.process_time_ns()
    if shape == "download":
        download(d, int(sys.argv[3]))
    else:
        globals()[shape.replace("-", "_")](d)
    print("ELAPSED", time.perf_counter_ns() - t)
    print("CPU", time.process_time_ns() - c, flush=True)


main()
