#!/usr/bin/env python3
"""Summarise a `perf script -F comm,tid[,period],ip,sym,dso` dump of a server
(wasmtp, or Postfix's smtp-sink) into where its CPU goes: each sample is put
in one bucket, from its leaf-most recognisable frame. Kernel samples are
bucketed by the kernel call path they are in (tcp_sendmsg is the send path
whether it came from sendto(2) or write(2) on a socket), and by the system
call's user-side wrapper only when the kernel frames don't say.

With the message count (--messages, or --load: the load generator's output,
whose first line reads `N messages in S s ...`) every bucket is also given in
µs of server CPU per message: a sample stands for its `period` (ns of CPU,
when the dump has that field) or else 1/--freq s.

usage: profile-summary.py [--load LOAD.txt | --messages N] [--baseline BASELINE.txt]
                          [--freq HZ] SCRIPT.txt
"""
import argparse
import collections
import re

# The threads that serve sessions; samples of any other thread are counted
# as that thread, whatever they are doing.
WORKERS = {"tokio-rt-worker", "smtp-sink"}

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
# smtp-sink's user space, by library, tried only when no frame matched USER
# (so wasmtp's buckets are what they were). Its binary is stripped: its own
# frames are `[unknown] (.../smtp-sink)`.
USER_BY_DSO = [
    ("smtp-sink: its own code (SMTP dialog)", r"/sbin/smtp-sink\)"),
    ("Postfix libraries (vstream I/O, event loop, timers, strings)", r"libpostfix-"),
    ("libc: system call wrappers", r"__GI___libc_(read|write)|__GI___poll|__poll|^\S+ epoll_wait |__GI___pthread_sigmask|__GI___sigprocmask|sigsetjmp|__libc_(send|recv)"),
    ("clock (vdso)", r"\[vdso\]"),
    ("libc: other (memset of new buffers, strcasecmp, printf)", r"/libc\.so"),
]
KERNEL_FRAMES = [
    ("kernel: page faults", r"exc_page_fault|handle_mm_fault"),
    ("kernel: madvise / mmap / mprotect (pool slots)", r"madvise|mprotect|mmap_region|do_mmap|vm_munmap|__x64_sys_munmap"),
]
SEND = "kernel: send (TCP xmit + loopback delivery to the client)"
RECV = "kernel: recv"
EPOLL = "kernel: epoll_wait (park until the next command: context switch, wake-up)"
POLL = "kernel: poll (smtp-sink's wait on one fd before each read and write)"
SETUP = "kernel: fcntl, get/setsockopt, getsockname, ioctl (connection setup)"
LOGWRITE = "kernel: write to a file (log lines to stderr)"
# The kernel call path, looked for anywhere in the sample's kernel frames, in
# this order. `write(2)` on a socket goes through sock_write_iter into
# tcp_sendmsg; on /dev/null or a file it doesn't.
KERNEL_PATH = [
    (SEND, r"\b(tcp_sendmsg|tcp_sendmsg_locked|sock_sendmsg|sock_write_iter|__sys_sendto|__sys_sendmsg)\b"),
    (RECV, r"\b(tcp_recvmsg|tcp_recvmsg_locked|sock_recvmsg|sock_read_iter|__sys_recvfrom|__sys_recvmsg)\b"),
    (EPOLL, r"\b(do_epoll_wait|ep_poll|__x64_sys_epoll_wait|__x64_sys_epoll_pwait)\b"),
    (POLL, r"\b(do_sys_poll|__x64_sys_poll|__x64_sys_ppoll)\b"),
    ("kernel: accept", r"\b(do_accept|__sys_accept4|inet_accept|__x64_sys_accept4?)\b"),
    ("kernel: shutdown / close", r"\b(__sys_shutdown|inet_shutdown|tcp_close|sock_close|__fput|__x64_sys_close|__x64_sys_shutdown)\b"),
    ("kernel: rt_sigprocmask", r"\b(__x64_sys_rt_sigprocmask|sigprocmask)\b"),
    ("kernel: epoll_ctl", r"\b(do_epoll_ctl|__x64_sys_epoll_ctl)\b"),
    (SETUP, r"\b(__sys_getsockopt|__sys_setsockopt|__sys_getsockname|do_fcntl|__x64_sys_fcntl|sock_ioctl)\b"),
    (LOGWRITE, r"\b(write_null|tty_write|pipe_write|ext4_file_write_iter)\b"),
]
# When the kernel frames name no path (a sample in the syscall entry, in
# vfs_write before it reaches the socket, or on the way back to user space,
# e.g. preempted there): the system call, from the symbols of the first user
# frames (the libc wrapper). A `write` from the logger is a log line; any
# other `write` (smtp-sink's) is to a socket, as is any `read`.
KERNEL_SYSCALL = [
    (SEND, r"send"),
    (RECV, r"recv"),
    (EPOLL, r"epoll_wait"),
    (POLL, r"(?m)^(__GI___poll|__poll|poll)$"),
    ("kernel: accept", r"accept"),
    ("kernel: shutdown / close", r"shutdown|close"),
    ("kernel: rt_sigprocmask", r"sigprocmask|sigmask"),
    ("kernel: epoll_ctl", r"epoll_ctl"),
    (SETUP, r"fcntl|sockopt|getsockname|ioctl"),
    ("write", r"(?m)^(__GI___libc_write|__libc_write|write)$"),
    (RECV, r"(?m)^(__GI___libc_read|__libc_read|read)$"),
]
# Buckets summed into the lines that answer "what does the kernel's socket
# path cost per message": the send and receive paths, and the wait for the
# next command (epoll_wait, poll).
GROUPS = [
    ("kernel: send + recv (socket I/O)", {SEND, RECV}),
    ("kernel: epoll_wait + poll (waiting for the peer)", {EPOLL, POLL}),
]


def parse(path):
    """[(comm, period_ns or None, [frame, ...])], frames leaf first."""
    samples, cur = [], None
    for line in open(path, errors="replace"):
        if not line.strip():
            if cur:
                samples.append(cur)
            cur = None
        elif line[0] not in " \t":
            head = line.split()
            # comm may contain spaces; tid and (optionally) period follow it.
            nums = []
            while head and head[-1].isdigit():
                nums.insert(0, int(head.pop()))
            period = nums[1] if len(nums) >= 2 else None
            cur = [" ".join(head) or "?", period, []]
        elif cur is not None:
            cur[2].append(line.strip())
    if cur:
        samples.append(cur)
    return samples


def classify(comm, frames):
    if comm not in WORKERS:
        return f"thread {comm}"
    kernel = [f for f in frames if "[kernel" in f]
    user = [f for f in frames if "[kernel" not in f]
    if frames and "[kernel" in frames[0]:
        ktext = "\n".join(kernel)
        for name, p in KERNEL_FRAMES + KERNEL_PATH:
            if re.search(p, ktext):
                return name
        # "ADDR SYMBOL (DSO)": the symbols of the first user frames.
        first = "\n".join(f.split(" ", 1)[-1].rsplit(" (", 1)[0] for f in user[:3])
        for name, p in KERNEL_SYSCALL:
            if re.search(p, first):
                if name == "write":
                    logger = re.search(r"Stderr|tracing", "\n".join(user))
                    return LOGWRITE if logger else SEND
                return name
        return "kernel: other"
    for table, prefix in ((USER, "user: "), (USER_BY_DSO, "user: ")):
        for f in user:
            for name, p in table:
                if re.search(p, f):
                    return prefix + name
    return "user: other"


def messages_from(path):
    """(messages, server CPU µs/msg or None) from the load generator's output."""
    text = open(path, errors="replace").read()
    m = re.search(r"^(\d+) messages in", text, re.M)
    if not m:
        raise SystemExit(f"{path}: no `N messages in` line")
    cpu = re.search(r"server CPU [\d.]+ s: ([\d.]+) µs/msg", text)
    return int(m.group(1)), float(cpu.group(1)) if cpu else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("script", help="perf script output")
    ap.add_argument("--load", help="the load generator's output during the perf run (message count, CPU/msg)")
    ap.add_argument("--messages", type=int, help="messages sent during the perf run (overrides --load)")
    ap.add_argument("--baseline", help="the load generator's output for the same load without perf")
    ap.add_argument("--freq", type=float, default=4999, help="perf's sampling rate, for dumps without `period` (default 4999)")
    args = ap.parse_args()

    samples = parse(args.script)
    counts, ns = collections.Counter(), collections.Counter()
    for comm, period, frames in samples:
        b = classify(comm, frames)
        counts[b] += 1
        ns[b] += period if period is not None else 1e9 / args.freq
    n, total_ns = len(samples), sum(ns.values())

    messages, proc_us = None, None
    if args.load:
        messages, proc_us = messages_from(args.load)
    if args.messages:
        messages = args.messages
    base_us = messages_from(args.baseline)[1] if args.baseline else None

    def row(share, t_ns, name):
        line = f"{100 * share:6.1f}%"
        if messages:
            us = t_ns / 1e3 / messages
            line += f"  {us:7.2f}"
            if base_us:
                line += f"  {share * base_us:7.2f}"
        print(f"{line}  {name}")

    if messages:
        print(" share   µs/msg" + ("  scaled" if base_us else "") + "  bucket")
    for k, v in sorted(counts.items(), key=lambda kv: -ns[kv[0]]):
        row(ns[k] / total_ns, ns[k], k)
    print("-- groups")
    kernel = {k for k in counts if k.startswith("kernel:")}
    user = {k for k in counts if k.startswith("user:")}
    threads = {k for k in counts if k.startswith("thread ")}
    for name, members in GROUPS + [("kernel: all", kernel), ("user space: all", user), ("other threads: all", threads)]:
        t = sum(ns[k] for k in members)
        row(t / total_ns, t, name)
    line = f"{n} samples, {total_ns / 1e9:.2f} s of server CPU sampled"
    if messages:
        line += f" over {messages} messages: {total_ns / 1e3 / messages:.1f} µs/msg under perf"
        if proc_us:
            line += f" ({proc_us:.1f} by /proc)"
    print(line)
    if base_us:
        print(f"scaled: each share of the {base_us:.1f} µs/msg the server used on the same load without perf")


if __name__ == "__main__":
    main()
