#!/usr/bin/env python3
"""Summarise a `perf script -F comm,tid,ip,sym,dso` dump of wasmtp into where
the server's CPU goes: each sample is put in one bucket, from its leaf-most
recognisable frame (kernel samples by the system call or fault they are in).

usage: profile-summary.py SCRIPT.txt
"""
import collections
import re
import sys

USER = [
    ("plugin: instantiate (Live::start)", r"Live::start|instantiate_async|InstancePre.*instantiate|WasiCtxBuilder"),
    ("plugin: drop instance / store", r"drop_in_place<wasmtime|drop_in_place<.*Live|drop_in_place<.*SessionPlugin|drop_in_place<.*Store|deallocate_|InstanceAllocator"),
    ("tracing: log events (format, filter, write)", r"tracing_subscriber::fmt|on_event|Event::dispatch|fmt::format|EnvFilter::enabled|tracing_core::event"),
    ("tracing: spans (enter/exit, registry)", r"on_enter|on_exit|Dispatch::enter|Dispatch::exit|current_span|sharded_slab|Registry|Span::|on_new_span|on_close"),
    ("plugin: hook call (wasmtime, guest, conversions)", r"wasmtime|plugin::|\[JIT\]|wasm_function|cranelift"),
    ("SMTP parse + replies + session logic", r"smtp::command|smtp::address|smtp::reply|strip_keyword|Framer|Session::|transaction::"),
    ("DATA decoder", r"DataDecoder"),
    ("tokio (scheduler, io, timers)", r"tokio::|mio::"),
    ("allocator", r"\bmalloc\b|_int_malloc|_int_free|cfree|realloc|malloc_consolidate|__libc_malloc"),
    ("memcpy/memcmp", r"memmove|memcpy|memcmp|memchr"),
]
KERNEL_FRAMES = [
    ("kernel: page faults", r"exc_page_fault|handle_mm_fault"),
    ("kernel: madvise / mmap / mprotect (pool slots)", r"madvise|mprotect|mmap_region|do_mmap|vm_munmap|__x64_sys_munmap"),
]
KERNEL_SYSCALL = [
    ("kernel: send (TCP xmit + loopback delivery to the client)", r"send"),
    ("kernel: recv", r"recv"),
    ("kernel: epoll_wait (idle wait)", r"epoll_wait"),
    ("kernel: accept", r"accept"),
    ("kernel: shutdown / close", r"shutdown|close"),
    ("kernel: write (log lines to stderr)", r"write"),
]


def main():
    samples, cur = [], None
    for line in open(sys.argv[1], errors="replace"):
        if not line.strip():
            if cur:
                samples.append(cur)
            cur = None
        elif line[0] not in " \t":
            cur = [line.strip()]
        elif cur is not None:
            cur.append(line.strip())
    if cur:
        samples.append(cur)
    counts = collections.Counter()
    for s in samples:
        comm, frames = s[0].split()[0], s[1:]
        if comm != "tokio-rt-worker":
            counts[f"thread {comm}"] += 1
            continue
        kernel = [f for f in frames if "[kernel" in f]
        user = [f for f in frames if "[kernel" not in f]
        bucket = None
        if frames and "[kernel" in frames[0]:
            ktext = "\n".join(kernel)
            for name, p in KERNEL_FRAMES:
                if re.search(p, ktext):
                    bucket = name
                    break
            if bucket is None:
                first = "\n".join(user[:3])
                for name, p in KERNEL_SYSCALL:
                    if re.search(p, first):
                        bucket = name
                        break
            bucket = bucket or "kernel: other"
        else:
            for f in user:
                for name, p in USER:
                    if re.search(p, f):
                        bucket = "user: " + name
                        break
                if bucket:
                    break
            bucket = bucket or "user: other"
        counts[bucket] += 1
    n = len(samples)
    for k, v in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"{100 * v / n:6.1f}%  {k}")
    print(f"{n} samples")


if __name__ == "__main__":
    main()
