//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/* coldtrace: the kernel side of the cold-start tracer.
 *
 * Only stable attach points: subsystem tracepoints, BTF tracepoints and uprobes. Work
 * outside the traced set costs one or two map lookups: a process is traced when its tgid
 * is in tracked_pids (the tree of `record -- CMD`, followed through fork) or its cgroup is
 * in tracked_cgroups (containers). Reads are coalesced into sequential runs
 * and page-cache insertions into runs of consecutive pages before anything is sent; socket
 * bytes are counted in the kernel and sampled at most once per sample_ns. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "coldtrace.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_MPTCP 262 /* Go listens with MPTCP by default since 1.24 */
#define MSG_PEEK 2
#define MAP_ANONYMOUS 0x20
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define S_IFREG 0100000
#define S_IFCHR 0020000
#define PAGE_SHIFT 12

/* x86-64 syscall numbers: the object is built for amd64 only. */
#define NR_read 0
#define NR_write 1
#define NR_open 2
#define NR_close 3
#define NR_mmap 9
#define NR_ioctl 16
#define NR_pread64 17
#define NR_pwrite64 18
#define NR_readv 19
#define NR_writev 20
#define NR_sendfile64 40
#define NR_accept 43
#define NR_sendto 44
#define NR_sendmsg 46
#define NR_listen 50
#define NR_chdir 80
#define NR_fchdir 81
#define NR_openat 257
#define NR_splice 275
#define NR_accept4 288
#define NR_preadv 295
#define NR_pwritev 296
#define NR_copy_file_range 326
#define NR_preadv2 327
#define NR_pwritev2 328
#define NR_openat2 437

/* Casts a kernel address read as a number into a typed pointer that can be dereferenced
 * directly: a plain load instead of a bpf_probe_read_kernel call per field. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* Set by the loader before load. */
const volatile __u64 sample_ns = 1000000;       /* socket byte samples: at most one per ms */
const volatile __u64 fault_around_bytes = 65536; /* the kernel's fault-around window */
/* The kernel maps a large cached folio whole at a fault near it (Linux 6.18). */
const volatile bool whole_folios = false;
const volatile __u64 wakeup_bytes = 262144; /* wake the reader once this much is queued */
/* The kernel reports each fault's mapped file pages on rss_stat (Linux 6.2 and later): see
 * fault_mapped. */
const volatile bool rss_gate = false;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);
} events SEC(".maps");

/* Failed ring buffer reservations, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} tracked_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} tracked_cgroups SEC(".maps");

/* Cgroups (v2 ids) under which the container runtime creates containers' cgroups: a
 * cgroup created below one is tracked from its creation (see cgroup_mkdir). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u8);
} watched_cgroups SEC(".maps");

/* Syscall arguments saved at entry for the exit handler, per thread. A thread is inside one
 * syscall at a time, so one slot serves every syscall we follow. */
struct args {
	__u64 ts;   /* entry time, where the exit handler uses it (a clock read is not free) */
	__u32 nr;   /* the syscall */
	__u32 busy; /* inside that syscall (BUSY or BUSY_OVERLAY); 0 means the slot is empty */
	__u64 a[6];
	__u64 rsk;  /* the TCP socket this thread last received bytes from; take() keeps it */
	/* The user page fault the thread is in, noted by page_fault for fault_mapped: the
	 * faulting address and instruction; fault_ip is 0 once taken. */
	__u64 fault_addr, fault_ip;
};

#define BUSY 1
/* A read of an overlayfs file: its pages belong to the real inode in a layer, which the
 * collector maps back, so pages added during the call are misses whatever their inode. */
#define BUSY_OVERLAY 2
#define OVERLAYFS_SUPER_MAGIC 0x794c7630

/* Task-local storage: cheaper than a hash keyed by thread, and freed with the thread. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct args);
} pending SEC(".maps");

/* slot returns the current thread's syscall slot. */
static __always_inline struct args *slot(bool create)
{
	return bpf_task_storage_get(&pending, bpf_get_current_task_btf(), 0,
				    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

struct fdkey {
	__u32 pid;
	__s32 fd;
};

/* The open run of sequential reads per descriptor. An ended run (count == 0) keeps its
 * entry: the next open usually gets the same descriptor number, and rewriting an entry in
 * place is much cheaper than deleting it and inserting it again. */
struct run {
	__u64 dev, ino;
	__s64 off, end;
	__u64 first, last, busy;
	__u32 count;
	__u32 tid;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct fdkey);
	__type(value, struct run);
} runs SEC(".maps");

/* Character-device descriptors (accelerators among them), whose ioctls are reported. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fdkey);
	__type(value, __u64); /* rdev */
} devfds SEC(".maps");

/* The open run of page-cache insertions per process: folios of one order, one after
 * another in one file. */
struct miss_run {
	__u64 dev, ino, index, pages, ts;
	__u32 tid;
	__u32 order; /* of every folio in the run */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct miss_run);
} misses SEC(".maps");

/* TCP sockets of traced processes. */
struct sockstate {
	__u32 pid;
	__u32 tid;
	__u16 dir;
	__u16 _pad[3];
	__u64 open;
	__u64 recv, sent, first_recv, last_recv, last_emit;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct sockstate);
} socks SEC(".maps");

struct callkey {
	__u32 tid;
	__u32 _pad;
	__u64 cookie;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct callkey);
	__type(value, __u64);
} calls SEC(".maps");

static __always_inline bool tracked(__u32 pid)
{
	if (bpf_map_lookup_elem(&tracked_pids, &pid))
		return true;
	__u64 cg = bpf_get_current_cgroup_id();
	return bpf_map_lookup_elem(&tracked_cgroups, &cg) != NULL;
}

static __always_inline void count_lost_n(__u64 events)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&lost, &zero);
	if (n)
		__sync_fetch_and_add(n, events); /* programs on one CPU may preempt each other */
}

#define count_lost() count_lost_n(1)

static __always_inline void fill_hdr(struct hdr *h, __u32 type, __u32 pid, __u32 tid, __u64 ts)
{
	h->type = type;
	h->pid = pid;
	h->tid = tid;
	h->_pad = 0;
	h->ts = ts;
	h->cgroup = bpf_get_current_cgroup_id();
}

/* reserve_at takes a ring buffer slot and fills the header with time ts; size must be a
 * constant. reserve stamps the event with the current time. */
#define reserve_at(ptr, typ, pid_, tid_, ts_)                            \
	({                                                                   \
		ptr = bpf_ringbuf_reserve(&events, sizeof(*ptr), 0);             \
		if (ptr)                                                         \
			fill_hdr(&ptr->h, typ, pid_, tid_, ts_);                     \
		else                                                             \
			count_lost();                                                \
		ptr;                                                             \
	})
#define reserve(ptr, typ, pid_, tid_) reserve_at(ptr, typ, pid_, tid_, bpf_ktime_get_ns())

/* Waking the reader costs the traced process an interrupt (a self-IPI) and a context
 * switch; the reader polls anyway, so wake it only when this event, of size bytes, takes
 * the queued data past wakeup_bytes. Waking it for every event past that mark would cost
 * an interrupt per event until the reader catches up. */
static __always_inline __u64 wake_flags(__u64 size)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	return avail >= wakeup_bytes && avail < wakeup_bytes + size + 8 /* record header */
		       ? BPF_RB_FORCE_WAKEUP
		       : BPF_RB_NO_WAKEUP;
}

#define submit(e) bpf_ringbuf_submit(e, wake_flags(sizeof(*e)))
/* Events the recorder waits for (readiness, exits) wake it at once. */
#define submit_now(e) bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP)

/* fd_file returns the current task's open file at fd. The verifier does not let a program
 * index the descriptor array directly, so that one slot is read with a helper. */
static __always_inline struct file *fd_file(int fd)
{
	struct fdtable *fdt = bpf_get_current_task_btf()->files->fdt;
	struct file *f = NULL;

	if (fd < 0 || (unsigned int)fd >= fdt->max_fds)
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fdt->fd[fd]);
	if (!f)
		return NULL;
	return bpf_rdonly_cast(f, bpf_core_type_id_kernel(struct file));
}

struct finfo {
	__u64 dev, ino, rdev;
	__s64 size;
	__u32 mode;
};

static __always_inline void file_info(struct file *f, struct finfo *fi)
{
	struct inode *inode = f->f_inode;
	fi->dev = inode->i_sb->s_dev;
	fi->ino = inode->i_ino;
	fi->rdev = inode->i_rdev;
	fi->size = inode->i_size;
	fi->mode = inode->i_mode;
}

static __always_inline struct sock *fd_sock(int fd)
{
	struct file *f = fd_file(fd);
	if (!f)
		return NULL;
	if ((f->f_inode->i_mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = f->private_data;
	return BPF_CORE_READ(sock, sk);
}

/* The x86-64 syscall arguments in the user registers that sys_enter passes. */
#define ARG0(regs) ((regs)->di)
#define ARG1(regs) ((regs)->si)
#define ARG2(regs) ((regs)->dx)
#define ARG3(regs) ((regs)->r10)
#define ARG4(regs) ((regs)->r8)
#define ARG5(regs) ((regs)->r9)

/* save_args keeps the first n arguments, zeroing the rest, which reading() compares, and
 * the entry time if stamp. */
static __always_inline void save_args(struct pt_regs *regs, long nr, int n, bool stamp)
{
	struct args *a = slot(true);
	if (!a)
		return;
	a->ts = stamp ? bpf_ktime_get_ns() : 0;
	a->nr = nr;
	a->busy = BUSY;
	a->a[0] = n > 0 ? ARG0(regs) : 0;
	a->a[1] = n > 1 ? ARG1(regs) : 0;
	a->a[2] = n > 2 ? ARG2(regs) : 0;
	a->a[3] = n > 3 ? ARG3(regs) : 0;
	a->a[4] = n > 4 ? ARG4(regs) : 0;
	a->a[5] = n > 5 ? ARG5(regs) : 0;
}

/* take returns and clears the saved arguments of the current thread's syscall. */
static __always_inline bool take(struct args *out)
{
	struct args *a = slot(false);
	if (!a || !a->busy)
		return false;
	*out = *a;
	a->busy = 0;
	return true;
}

/* Syscall handlers: sys_enter and sys_exit (at the end) tail-call them by syscall number,
 * for traced processes only (sys_enter asks tracked(), sys_exit finds the arguments that
 * the enter handler saved). An enter handler gets the user registers and the syscall number, an exit handler the
 * registers and the return value. */
#define ENTER(name) SEC("tp_btf/sys_enter") int BPF_PROG(enter_##name, struct pt_regs *regs, long nr)
#define EXIT(name) SEC("tp_btf/sys_exit") int BPF_PROG(exit_##name, struct pt_regs *regs, long ret)

#define ENTER_SAVE(name, nargs, stamp)                                         \
	ENTER(name)                                                                \
	{                                                                          \
		save_args(regs, nr, nargs, stamp);                                     \
		return 0;                                                              \
	}

/* ---- processes ---- */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(sched_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ppid = parent->tgid;
	__u32 pid = child->tgid;

	bool thread = child->pid != child->tgid;
	if (bpf_map_lookup_elem(&tracked_pids, &ppid)) {
		__u8 one = 1;
		if (!thread)
			bpf_map_update_elem(&tracked_pids, &pid, &one, BPF_ANY);
	} else if (!tracked(ppid)) {
		return 0;
	}
	/* A slot from the start, where page_fault notes the new task's first faults. */
	bpf_task_storage_get(&pending, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (thread)
		return 0;
	struct event_fork *e;
	if (!reserve(e, EV_FORK, ppid, parent->pid))
		return 0;
	e->child = pid;
	e->_pad = 0;
	__builtin_memcpy(e->comm, child->comm, COMM_LEN);
	submit(e);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 pid = p->tgid;
	if (!tracked(pid))
		return 0;
	slot(true); /* for page_fault: the new program faults before its first syscall */
	struct event_exec *e;
	if (!reserve(e, EV_EXEC, pid, p->pid))
		return 0;
	e->ppid = p->real_parent->tgid;
	e->_pad = 0;
	struct inode *inode = bprm->file->f_inode;
	e->dev = inode->i_sb->s_dev;
	e->ino = inode->i_ino;
	__builtin_memcpy(e->comm, p->comm, COMM_LEN);
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), bprm->filename);
	submit(e);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(sched_exit, struct task_struct *p)
{
	__u32 pid = p->tgid;
	if (p->pid != p->tgid || !tracked(pid))
		return 0;
	struct event_exit *e;
	if (reserve(e, EV_EXIT, pid, p->pid)) {
		e->code = p->exit_code;
		e->_pad = 0;
		submit_now(e);
	}
	bpf_map_delete_elem(&tracked_pids, &pid);
	return 0;
}

/* ---- files ---- */

ENTER_SAVE(openat, 4, false)
ENTER_SAVE(openat2, 4, false)
ENTER_SAVE(open, 3, false)

/* Open events go out with their path's real length, not all PATH_LEN bytes, so that the
 * ring buffer and its reader move a tenth of the bytes: each is built here and copied. BPF
 * programs are preemptible, so two on one CPU could build in the scratch at once (see
 * emit_run): only a program alone with it does; another reserves a whole record instead. */
struct open_scratch {
	__u32 busy; /* programs using the scratch now */
	struct event_open e;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct open_scratch);
} open_scratch SEC(".maps");

/* fill_open fills e but its header and returns the path's length with its NUL. */
static __always_inline __u64 fill_open(struct event_open *e, struct args *a, long ret, int dirfd_arg,
				       int path_arg, int flags_arg, struct finfo *fi)
{
	e->dirfd = dirfd_arg < 0 ? -100 /* AT_FDCWD */ : (int)a->a[dirfd_arg];
	e->fd = ret;
	e->flags = flags_arg < 0 ? 0 : (int)a->a[flags_arg];
	long n = bpf_probe_read_user_str(e->path, sizeof(e->path), (void *)a->a[path_arg]);
	if (n < 1) {
		e->path[0] = 0;
		n = 1;
	}
	e->dev = fi->dev;
	e->ino = fi->ino;
	e->size = fi->size;
	e->mode = fi->mode;
	e->rdev = fi->rdev;
	return n;
}

static __always_inline int open_exit(long ret, int dirfd_arg, int path_arg, int flags_arg)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32, tid = id;
	struct args a;

	if (!take(&a) || ret < 0)
		return 0;
	struct finfo fi = {};
	struct file *f = fd_file(ret);
	if (f)
		file_info(f, &fi);

	__u32 zero = 0;
	struct open_scratch *sc = bpf_map_lookup_elem(&open_scratch, &zero);
	if (!sc)
		return 0;
	__sync_fetch_and_add(&sc->busy, 1);
	if (*(volatile __u32 *)&sc->busy == 1) {
		struct event_open *e = &sc->e;
		fill_hdr(&e->h, EV_OPEN, pid, tid, bpf_ktime_get_ns());
		__u64 size = offsetof(struct event_open, path) + fill_open(e, &a, ret, dirfd_arg, path_arg, flags_arg, &fi);
		if (size > sizeof(*e))
			size = sizeof(*e);
		if (bpf_ringbuf_output(&events, e, size, wake_flags(size)))
			count_lost();
		__sync_fetch_and_add(&sc->busy, -1);
	} else {
		__sync_fetch_and_add(&sc->busy, -1);
		struct event_open *e;
		if (reserve(e, EV_OPEN, pid, tid)) {
			fill_open(e, &a, ret, dirfd_arg, path_arg, flags_arg, &fi);
			bpf_ringbuf_submit(e, wake_flags(sizeof(*e)));
		}
	}

	if ((fi.mode & S_IFMT) == S_IFCHR) {
		struct fdkey k = { .pid = pid, .fd = ret };
		bpf_map_update_elem(&devfds, &k, &fi.rdev, BPF_ANY);
	}
	return 0;
}

EXIT(openat) { return open_exit(ret, 0, 1, 2); }

/* openat2's flags live in struct open_how; the collector needs only dirfd and path. */
EXIT(openat2) { return open_exit(ret, 0, 1, -1); }

EXIT(open) { return open_exit(ret, -1, 0, 1); }

/* Nothing waits for a read run, so runs go out READ_BATCH at a time, back to back in one
 * ring buffer record, instead of one record each. A batch fills on its CPU until it is
 * full or Drain takes it. It holds the runs of whatever processes ran there: user space
 * routes each run by its own header. */
#define READ_BATCH 32

struct read_batch {
	__u32 n;
	__u32 busy; /* programs using the batch now (see emit_run) */
	struct event_read ev[READ_BATCH];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct read_batch);
} read_batches SEC(".maps");

static __always_inline void fill_run(struct event_read *e, struct run *r, __u32 pid, int fd)
{
	fill_hdr(&e->h, EV_READ, pid, r->tid, r->last); /* as Drain stamps held runs */
	e->dev = r->dev;
	e->ino = r->ino;
	e->off = r->off;
	e->len = r->end - r->off;
	e->first = r->first;
	e->last = r->last;
	e->busy = r->busy;
	e->count = r->count;
	e->fd = fd;
}

/* emit_run adds a run to its CPU's batch. A BPF program runs with migration disabled, not
 * preemption: another one may run on this CPU between any two of these lines and emit
 * into the same batch, which would overwrite runs or send half-written ones. So only a
 * program that finds itself alone with the batch fills it (an atomic add without fetch,
 * which every BPF CPU version has, then a read: of two, at most one reads 1); another
 * sends its run in a record of its own. */
static __always_inline void emit_run(struct run *r, __u32 pid, int fd)
{
	__u32 zero = 0;
	struct read_batch *b = bpf_map_lookup_elem(&read_batches, &zero);
	if (!b)
		return;
	__sync_fetch_and_add(&b->busy, 1);
	if (*(volatile __u32 *)&b->busy != 1) {
		__sync_fetch_and_add(&b->busy, -1);
		struct event_read one;
		fill_run(&one, r, pid, fd);
		if (bpf_ringbuf_output(&events, &one, sizeof(one), wake_flags(sizeof(one))))
			count_lost();
		return;
	}
	__u32 i = b->n & (READ_BATCH - 1);
	fill_run(&b->ev[i], r, pid, fd);
	if (++i < READ_BATCH) {
		b->n = i;
	} else {
		b->n = 0;
		if (bpf_ringbuf_output(&events, b->ev, sizeof(b->ev), wake_flags(sizeof(b->ev))))
			count_lost_n(READ_BATCH);
	}
	__sync_fetch_and_add(&b->busy, -1);
}

static __always_inline void flush_run(__u32 pid, int fd)
{
	struct fdkey k = { .pid = pid, .fd = fd };
	struct run *r = bpf_map_lookup_elem(&runs, &k);
	if (!r || !r->count)
		return;
	emit_run(r, pid, fd);
	r->count = 0;
}

/* A close ends the descriptor's read run and its device entry. No event: the collector's
 * descriptor table is overwritten by the next open of the same number, and reads carry
 * their inode, so a stale entry can never name the wrong file. */
ENTER(close)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	int fd = ARG0(regs);

	flush_run(pid, fd);
	/* A lookup takes no lock; a delete takes one even for a missing key. */
	struct fdkey k = { .pid = pid, .fd = fd };
	if (bpf_map_lookup_elem(&devfds, &k))
		bpf_map_delete_elem(&devfds, &k);
	return 0;
}

/* read_enter notes a read of fd at off (-1: the file position). Slots: a[0] fd, a[1] dev,
 * a[2] ino, a[3] offset; dev and ino stay zero when fd is not a regular file, which tells
 * cache_add that pages added during the call (a splice from a pipe into a file) are
 * writes, not reads. */
static __always_inline int read_enter(__u64 nr, int fd, __s64 off)
{
	struct args *a = slot(true);
	if (!a)
		return 0;
	a->ts = bpf_ktime_get_ns();
	a->nr = nr;
	a->busy = BUSY;
	a->a[0] = fd;
	a->a[1] = a->a[2] = a->a[3] = 0;
	struct file *f = fd_file(fd);
	if (f) {
		struct finfo fi = {};
		file_info(f, &fi);
		if ((fi.mode & S_IFMT) == S_IFREG) {
			a->a[1] = fi.dev;
			a->a[2] = fi.ino;
			a->a[3] = off < 0 ? f->f_pos : off;
			if (f->f_inode->i_sb->s_magic == OVERLAYFS_SUPER_MAGIC)
				a->busy = BUSY_OVERLAY;
		}
	}
	return 0;
}

static __always_inline __s64 user_off(__u64 ptr)
{
	__s64 off = -1;
	if (ptr)
		bpf_probe_read_user(&off, sizeof(off), (void *)ptr);
	return off;
}

static __always_inline int read_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32, tid = id;
	struct args a;

	if (!take(&a) || ret <= 0 || !a.a[2])
		return 0;
	__u64 now = bpf_ktime_get_ns();
	struct fdkey k = { .pid = pid, .fd = a.a[0] };
	struct run *r = bpf_map_lookup_elem(&runs, &k);
	if (r && r->count && r->dev == a.a[1] && r->ino == a.a[2] && r->end == (__s64)a.a[3]) {
		r->end += ret;
		r->last = now;
		r->busy += now - a.ts;
		r->count++;
		return 0;
	}
	if (r && r->count)
		emit_run(r, pid, k.fd);
	struct run n = {
		.dev = a.a[1], .ino = a.a[2], .off = a.a[3], .end = (__s64)a.a[3] + ret,
		.first = a.ts, .last = now, .busy = now - a.ts, .count = 1, .tid = tid,
	};
	if (r)
		*r = n;
	else
		bpf_map_update_elem(&runs, &k, &n, BPF_ANY);
	return 0;
}

#define READ_PROBES(name, fdexpr, offexpr)                                     \
	ENTER(name) { return read_enter(nr, fdexpr, offexpr); }                   \
	EXIT(name) { return read_exit(ret); }

READ_PROBES(read, ARG0(regs), -1)
READ_PROBES(readv, ARG0(regs), -1)
READ_PROBES(pread64, ARG0(regs), ARG3(regs))
READ_PROBES(preadv, ARG0(regs), ARG3(regs))
READ_PROBES(preadv2, ARG0(regs), ARG3(regs)) /* offset -1 means the file position */
READ_PROBES(sendfile64, ARG1(regs), user_off(ARG2(regs)))
READ_PROBES(copy_file_range, ARG0(regs), user_off(ARG1(regs)))
READ_PROBES(splice, ARG0(regs), user_off(ARG1(regs)))

ENTER_SAVE(mmap, 6, false)

EXIT(mmap)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32, tid = id;
	struct args a;

	if (!take(&a))
		return 0;
	int fd = a.a[4];
	if (fd < 0 || (a.a[3] & MAP_ANONYMOUS) || (__u64)ret >= (__u64)-4095)
		return 0;
	struct file *f = fd_file(fd);
	if (!f)
		return 0;
	struct event_mmap *e;
	if (!reserve(e, EV_MMAP, pid, tid))
		return 0;
	struct finfo fi = {};
	file_info(f, &fi);
	e->addr = ret;
	e->len = a.a[1];
	e->off = a.a[5];
	e->dev = fi.dev;
	e->ino = fi.ino;
	e->rdev = fi.rdev;
	e->mode = fi.mode;
	e->fd = fd;
	e->prot = a.a[2];
	e->flags = a.a[3];
	submit(e);
	return 0;
}

struct fault_ctx {
	__u64 addr;
	__u64 dev, ino;
	__u64 vm_start, vm_end, vm_off;
	__u64 from, to; /* the addresses the fault maps */
	bool file;
};

#define PMD_BYTES (1ULL << 21) /* what one page table maps */

/* cached_folio looks index up in the page cache (an xarray), lock-free: a folio freed
 * meanwhile is read as it was, which at worst widens one fault's pages. */
static __always_inline struct folio *cached_folio(struct address_space *m, __u64 index)
{
	void *entry = BPF_CORE_READ(m, i_pages.xa_head);
	bool descended = false;
	for (int i = 0; i < 8; i++) {
		__u64 e = (__u64)entry;
		if ((e & 3) != 2 || e <= 4096) /* not a node */
			break;
		struct xa_node *node = (void *)(e - 2);
		__u64 slot = (index >> (BPF_CORE_READ(node, shift) & 63)) & 63;
		if (bpf_core_read(&entry, sizeof(entry), &node->slots[slot]))
			return NULL;
		e = (__u64)entry;
		if ((e & 3) == 2 && e < 250) /* a sibling of a multi-index entry */
			if (bpf_core_read(&entry, sizeof(entry), &node->slots[(e >> 2) & 63]))
				return NULL;
		descended = true;
	}
	__u64 e = (__u64)entry;
	if (!e || (e & 3) || (!descended && index))
		return NULL; /* empty, a shadow or an internal entry */
	return entry;
}

/* map_whole widens [*from, *to) to the large folio cached at address va of vma, where the
 * kernel maps that folio whole (filemap_map_folio_range): within the vma, within one page
 * table, and ending before the file's last page. */
static __always_inline void map_whole(struct vm_area_struct *vma, struct address_space *m,
				      __u64 file_end, __u64 va, __u64 *from, __u64 *to)
{
	__u64 index = vma->vm_pgoff + ((va - vma->vm_start) >> PAGE_SHIFT);
	struct folio *fo = cached_folio(m, index);
	if (!fo || BPF_CORE_READ(fo, mapping) != m)
		return;
	__u64 flags = 0;
	bpf_core_read(&flags, sizeof(flags), &fo->flags);
	if (!(flags & (1ULL << bpf_core_enum_value(enum pageflags, PG_head))))
		return;
	__u64 n = 1ULL << (BPF_CORE_READ(fo, _flags_1) & 0xff & 31);
	__u64 first = BPF_CORE_READ(fo, index);
	if (index < first || index >= first + n || first + n - 1 > file_end)
		return;
	__u64 start = va - ((index - first) << PAGE_SHIFT), end = start + (n << PAGE_SHIFT);
	if (start < vma->vm_start || end > vma->vm_end ||
	    (start & ~(PMD_BYTES - 1)) != ((end - 1) & ~(PMD_BYTES - 1)))
		return;
	if (start < *from)
		*from = start;
	if (end > *to)
		*to = end;
}

/* fault_vma finds the fault's file and the addresses it maps: the fault-around window as
 * do_fault_around computes it (the aligned block, or as many pages from the vma's start
 * where that cuts it), within the vma and the page table, and the large folios at its ends
 * that the kernel maps whole. */
static long fault_vma(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct fault_ctx *c = data;
	struct file *f = vma->vm_file;
	if (!f)
		return 0;
	struct inode *inode = f->f_inode;
	c->dev = inode->i_sb->s_dev;
	c->ino = inode->i_ino;
	c->vm_start = vma->vm_start;
	c->vm_end = vma->vm_end;
	c->vm_off = vma->vm_pgoff << PAGE_SHIFT;
	c->file = true;

	__u64 page = c->addr & ~((1ULL << PAGE_SHIFT) - 1);
	__u64 pt_end = (page & ~(PMD_BYTES - 1)) + PMD_BYTES;
	__u64 from = page & ~(fault_around_bytes - 1);
	if (from < vma->vm_start)
		from = vma->vm_start;
	__u64 to = from + fault_around_bytes;
	if (to > pt_end)
		to = pt_end;
	if (to > vma->vm_end)
		to = vma->vm_end;
	if (whole_folios) {
		struct address_space *m = f->f_mapping;
		__u64 size = inode->i_size;
		if (size > 0) {
			__u64 file_end = ((size + (1ULL << PAGE_SHIFT) - 1) >> PAGE_SHIFT) - 1;
			__u64 lo = from, hi = to;
			map_whole(vma, m, file_end, lo, &from, &to);
			map_whole(vma, m, file_end, hi - (1ULL << PAGE_SHIFT), &from, &to);
		}
	}
	c->from = from;
	c->to = to;
	return 0;
}

static __always_inline void emit_fault(__u32 pid, __u32 tid, __u64 address, struct fault_ctx *c)
{
	struct event_fault *e;
	if (!reserve(e, EV_FAULT, pid, tid))
		return;
	e->dev = c->dev;
	e->ino = c->ino;
	e->addr = address;
	e->from = c->from;
	e->to = c->to;
	e->vm_start = c->vm_start;
	e->vm_end = c->vm_end;
	e->vm_off = c->vm_off;
	submit(e);
}

/* A page fault at a user address. With rss_gate it only notes where the thread faults, in
 * the slot that only threads of traced processes have: fault_mapped looks at the faults that
 * map file pages, so anonymous memory costs a slot lookup. Without (before Linux 6.2) it
 * looks the mapping up itself, for every fault of a traced process. user_ip is the user
 * instruction that faulted, or made the syscall in which the kernel faulted. */
static __always_inline int note_fault(unsigned long address, __u64 user_ip)
{
	if (rss_gate) {
		struct args *a = slot(false);
		if (a) {
			a->fault_addr = address;
			a->fault_ip = user_ip;
		}
		return 0;
	}
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	if (!tracked(pid))
		return 0;
	struct fault_ctx c = { .addr = address };
	struct task_struct *task = bpf_get_current_task_btf();
	long err = bpf_find_vma(task, address, fault_vma, &c, 0);
	/* With interrupts off, as here, bpf_find_vma unlocks the mm from an irq_work and
	 * refuses (-EBUSY) while the previous one is pending: a fault right after another on
	 * this CPU. The event then goes without its file (dev and ino 0), and user space
	 * finds the mapping among the process's mmaps. */
	if (err == -16 /* EBUSY */)
		c.file = true;
	else if (err || !c.file)
		return 0;
	emit_fault(pid, id, address, &c);
	return 0;
}

SEC("tp_btf/page_fault_user")
int BPF_PROG(page_fault, unsigned long address, struct pt_regs *regs, unsigned long error_code)
{
	return note_fault(address, regs->ip);
}

/* The kernel faults on user memory on a syscall's behalf: a path or buffer argument that
 * lies in a mapped file (a string constant in an executable's .rodata, a write from mapped
 * weights) is read from the file by the syscall, not by the program. Without these, such
 * pages are left out of the hot set and fault from storage on a warmed start. */
SEC("tp_btf/page_fault_kernel")
int BPF_PROG(page_fault_kernel, unsigned long address, struct pt_regs *regs, unsigned long error_code)
{
	if (address >> 47) /* a kernel address (x86-64's user space ends at 2^47) */
		return 0;
	struct pt_regs *user = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	return note_fault(address, user ? user->ip : 0);
}

#define MM_FILEPAGES 0
#define MM_SHMEMPAGES 3

/* Since Linux 6.2 every change of a process's resident pages passes here, in the task that
 * makes it, and a fault that maps pages of a file reports them (MM_FILEPAGES, MM_SHMEMPAGES
 * for tmpfs) before it returns, however it mapped them: one page, the pages around it, or a
 * PMD; an anonymous fault reports MM_ANONPAGES. So the mapping is looked up only for faults
 * that mapped file pages, and with interrupts on, where bpf_find_vma unlocks the mm at once
 * (on page_fault_user, with them off, each lookup costs an irq_work, a self-interrupt, and
 * refuses the next until it ran). The faulting instruction in the user registers tells the
 * noted fault from a later syscall that unmaps file pages. */
SEC("tp_btf/rss_stat")
int BPF_PROG(fault_mapped, struct mm_struct *mm, int member)
{
	if (member != MM_FILEPAGES && member != MM_SHMEMPAGES)
		return 0;
	struct args *a = slot(false);
	if (!a || !a->fault_ip)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	if (!regs || regs->ip != a->fault_ip || task->mm != mm)
		return 0;
	a->fault_ip = 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	if (!tracked(pid))
		return 0;
	struct fault_ctx c = { .addr = a->fault_addr };
	if (bpf_find_vma(task, c.addr, fault_vma, &c, 0) || !c.file)
		return 0;
	emit_fault(pid, id, c.addr, &c);
	return 0;
}

/* A container's cgroup is tracked as it is created, before its first process runs: the
 * runtime starts a container right after creating it, and user space hears of the create
 * only later. Only cgroup v2 ids are tracked (bpf_get_current_cgroup_id's); hierarchy 0 is
 * v2's. Ancestors are looked up to a depth of 8 (kubepods/burstable/pod/container). */
SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	if (cgrp->root->hierarchy_id != 0)
		return 0;
	struct cgroup *c = cgrp;
	for (int i = 0; i < 8; i++) {
		struct cgroup_subsys_state *parent = c->self.parent;
		if (!parent)
			return 0;
		c = parent->cgroup;
		__u64 id = c->kn->id;
		if (!bpf_map_lookup_elem(&watched_cgroups, &id))
			continue;
		/* Tracked only if user space hears of it, which untracks it if no container
		 * claims it: with the ring full, the container is tracked at its event. */
		__u64 pid_tgid = bpf_get_current_pid_tgid();
		struct event_cgroup *e;
		if (!reserve(e, EV_CGROUP, pid_tgid >> 32, (__u32)pid_tgid))
			return 0;
		__u64 cg = cgrp->kn->id;
		__u8 one = 1;
		bpf_map_update_elem(&tracked_cgroups, &cg, &one, BPF_ANY);
		e->id = cg;
		submit_now(e); /* an idle agent's reader sleeps until one comes */
		return 0;
	}
	return 0;
}

/* Writes add pages to the page cache too, and those are not reads from storage. A page
 * added while the thread is inside a syscall counts only if that syscall is a read of the
 * very file; outside syscalls, it is a page fault reading a mapping. Write syscalls leave
 * a pending slot so that they are seen as syscalls. */
static __always_inline bool reading(__u64 dev, __u64 ino)
{
	struct args *a = slot(false);
	return !a || !a->busy || a->busy == BUSY_OVERLAY || (a->a[1] == dev && a->a[2] == ino);
}

/* Bytes written per (file, process), counted in the kernel and sent only by Drain: a
 * download of gigabytes in small writes costs no event. */
struct wkey {
	__u64 dev, ino;
	__u32 pid;
	__u32 _pad;
};

struct wstate {
	__u64 bytes;
	__u64 sk; /* the writing thread's last receiving socket at its last write */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct wkey);
	__type(value, struct wstate);
} writes SEC(".maps");

/* write_enter notes a write-family call on fd; buf is its second argument: the data, or
 * for writev the iovecs and for sendmsg the msghdr (emit_payload follows them). Slots:
 * a[0] fd, a[3] buf; a[1] and a[2] (dev, ino) stay
 * zero: no file is being read, so pages added during the call are no misses. */
static __always_inline int write_enter(__u64 nr, int fd, __u64 buf)
{
	struct args *a = slot(true);
	if (!a)
		return 0;
	a->ts = 0;
	a->nr = nr;
	a->busy = BUSY;
	a->a[0] = fd;
	a->a[1] = a->a[2] = a->a[4] = a->a[5] = 0;
	a->a[3] = buf;
	return 0;
}

static __always_inline int write_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct args a;

	if (!take(&a) || ret <= 0)
		return 0;
	struct file *f = fd_file(a.a[0]);
	if (!f)
		return 0;
	struct inode *inode = f->f_inode;
	if ((inode->i_mode & S_IFMT) != S_IFREG)
		return 0;
	struct wkey k = { .dev = inode->i_sb->s_dev, .ino = inode->i_ino, .pid = id >> 32 };
	struct wstate *w = bpf_map_lookup_elem(&writes, &k);
	if (!w) {
		struct wstate n = {};
		bpf_map_update_elem(&writes, &k, &n, BPF_NOEXIST);
		w = bpf_map_lookup_elem(&writes, &k);
		if (!w)
			return 0;
	}
	__sync_fetch_and_add(&w->bytes, ret);
	if (a.rsk)
		w->sk = a.rsk;
	return 0;
}

#define WRITE_PROBES(name)                                                     \
	ENTER(name) { return write_enter(nr, ARG0(regs), ARG1(regs)); }           \
	EXIT(name) { return write_exit(ret); }

WRITE_PROBES(write)
WRITE_PROBES(pwrite64)
WRITE_PROBES(writev)
WRITE_PROBES(pwritev)
WRITE_PROBES(pwritev2)
WRITE_PROBES(sendto)
WRITE_PROBES(sendmsg)

static __always_inline void emit_miss(struct miss_run *m, __u32 pid)
{
	struct event_cache_miss *e;
	if (!reserve_at(e, EV_CACHE_MISS, pid, m->tid, m->ts))
		return;
	e->dev = m->dev;
	e->ino = m->ino;
	e->index = m->index;
	e->pages = m->pages;
	e->order = m->order;
	submit(e);
}

SEC("tracepoint/filemap/mm_filemap_add_to_page_cache")
int cache_add(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	if (!tracked(pid))
		return 0;
	__u64 dev = ctx->s_dev, ino = ctx->i_ino, index = ctx->index;
	if (!reading(dev, ino))
		return 0;
	/* The folio's order: a large folio can be mapped by one PMD, so that the accesses
	 * after the fault that mapped it fault no more (see the collector). */
	__u32 order = 0;
	if (bpf_core_field_exists(ctx->order))
		order = BPF_CORE_READ(ctx, order) & 31;
	__u64 pages = 1ULL << order;

	struct miss_run *m = bpf_map_lookup_elem(&misses, &pid);
	if (m && m->dev == dev && m->ino == ino && m->index + m->pages == index && m->order == order) {
		m->pages += pages;
		return 0;
	}
	if (m)
		emit_miss(m, pid);
	struct miss_run n = { .dev = dev, .ino = ino, .index = index, .pages = pages,
			      .ts = bpf_ktime_get_ns(), .tid = (__u32)id, .order = order };
	bpf_map_update_elem(&misses, &pid, &n, BPF_ANY);
	return 0;
}

ENTER_SAVE(chdir, 1, false)
ENTER_SAVE(fchdir, 1, false)

static __always_inline int chdir_exit(long ret, bool byfd)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct args a;
	if (!take(&a) || ret != 0)
		return 0;
	struct event_chdir *e;
	if (!reserve(e, EV_CHDIR, id >> 32, (__u32)id))
		return 0;
	e->_pad = 0;
	if (byfd) {
		e->fd = a.a[0];
		e->path[0] = 0;
	} else {
		e->fd = -1;
		bpf_probe_read_user_str(e->path, sizeof(e->path), (void *)a.a[0]);
	}
	submit(e);
	return 0;
}

EXIT(chdir) { return chdir_exit(ret, false); }

EXIT(fchdir) { return chdir_exit(ret, true); }

/* ---- network ---- */

static __always_inline bool is_tcp(struct sock *sk)
{
	__u16 proto = BPF_CORE_READ(sk, sk_protocol);
	return proto == IPPROTO_TCP || proto == IPPROTO_MPTCP;
}

static __always_inline void emit_conn(struct sock *sk, struct sockstate *s)
{
	struct event_conn *e;
	if (!reserve(e, EV_CONN, s->pid, s->tid))
		return;
	e->sk = (__u64)sk;
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->dir = s->dir;
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (e->family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr);
	} else {
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	}
	e->open = s->open;
	submit(e);
}

static __always_inline void emit_sock(__u64 sk, struct sockstate *s, __u32 reason)
{
	struct event_sock *e;
	if (!reserve(e, EV_SOCK, s->pid, s->tid))
		return;
	e->sk = sk;
	e->recv = s->recv;
	e->sent = s->sent;
	e->first_recv = s->first_recv;
	e->last_recv = s->last_recv;
	e->reason = reason;
	e->_pad = 0;
	submit(e);
}

SEC("tracepoint/sock/inet_sock_set_state")
int sock_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	__u64 sk = (__u64)ctx->skaddr;

	if (ctx->newstate == TCP_SYN_SENT) {
		/* connect(): process context, so the current task owns the socket. */
		__u64 id = bpf_get_current_pid_tgid();
		if (!tracked(id >> 32))
			return 0;
		struct sockstate s = { .pid = id >> 32, .tid = id, .dir = 1, .open = bpf_ktime_get_ns() };
		bpf_map_update_elem(&socks, &sk, &s, BPF_ANY);
		return 0;
	}
	struct sockstate *s = bpf_map_lookup_elem(&socks, &sk);
	if (!s)
		return 0;
	if (ctx->newstate == TCP_ESTABLISHED && ctx->oldstate == TCP_SYN_SENT) {
		emit_conn((struct sock *)sk, s);
	} else if (ctx->newstate == TCP_CLOSE) {
		emit_sock(sk, s, SOCK_CLOSE);
		bpf_map_delete_elem(&socks, &sk);
	}
	return 0;
}

ENTER_SAVE(accept, 3, true)
ENTER_SAVE(accept4, 4, true)

static __always_inline int accept_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct args a;
	if (!take(&a) || ret < 0)
		return 0;
	struct sock *sk = fd_sock(ret);
	if (!sk || !is_tcp(sk))
		return 0;
	struct sockstate s = { .pid = id >> 32, .tid = id, .dir = 2, .open = a.ts };
	__u64 key = (__u64)sk;
	bpf_map_update_elem(&socks, &key, &s, BPF_ANY);
	emit_conn(sk, &s);
	return 0;
}

EXIT(accept) { return accept_exit(ret); }

EXIT(accept4) { return accept_exit(ret); }

/* emit_payload sends the first bytes of data sent on sk, from the buffer of the write-family
 * call the thread is in (write, writev, sendto, sendmsg; other ways of sending, such as
 * sendfile or io_uring, send none). */
static __always_inline void emit_payload(__u64 sk, __u64 sent)
{
	struct args *a = slot(false);
	if (!a || !a->busy)
		return;
	__u32 nr = a->nr;
	__u64 buf = a->a[3];
	if (nr == NR_sendmsg) {
		struct user_msghdr m;
		if (bpf_probe_read_user(&m, sizeof(m), (void *)buf))
			return;
		buf = (__u64)m.msg_iov;
	}
	if (nr == NR_writev || nr == NR_sendmsg) {
		struct iovec v;
		if (bpf_probe_read_user(&v, sizeof(v), (void *)buf))
			return;
		buf = (__u64)v.iov_base;
		if (v.iov_len < sent)
			sent = v.iov_len;
	} else if (nr != NR_write && nr != NR_sendto) {
		return;
	}
	if (sent > PAYLOAD_LEN)
		sent = PAYLOAD_LEN;
	__u64 id = bpf_get_current_pid_tgid();
	struct event_payload *e;
	if (!reserve(e, EV_PAYLOAD, id >> 32, (__u32)id))
		return;
	e->sk = sk;
	e->_pad = 0;
	if (bpf_probe_read_user(e->data, sent, (void *)buf))
		sent = 0;
	e->len = sent;
	submit(e);
}

static __always_inline int sock_bytes(struct trace_event_raw_sock_msg_length *ctx, bool recv)
{
	if ((ctx->family != AF_INET && ctx->family != AF_INET6) || ctx->protocol != IPPROTO_TCP)
		return 0;
	if (ctx->ret <= 0 || (recv && (ctx->flags & MSG_PEEK)))
		return 0;
	__u64 sk = (__u64)ctx->sk;
	struct sockstate *s = bpf_map_lookup_elem(&socks, &sk);
	if (!s)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (recv) {
		/* Which connection a thread last received from: the origin of what it writes. */
		struct args *a = slot(true);
		if (a)
			a->rsk = sk;
		s->recv += ctx->ret;
		if (!s->first_recv)
			s->first_recv = now;
		s->last_recv = now;
	} else {
		if (!s->sent && s->dir == 1)
			emit_payload(sk, ctx->ret);
		s->sent += ctx->ret;
	}
	if (now - s->last_emit >= sample_ns) {
		s->last_emit = now;
		emit_sock(sk, s, SOCK_SAMPLE);
	}
	return 0;
}

SEC("tracepoint/sock/sock_recv_length")
int sock_recv(struct trace_event_raw_sock_msg_length *ctx) { return sock_bytes(ctx, true); }

SEC("tracepoint/sock/sock_send_length")
int sock_send(struct trace_event_raw_sock_msg_length *ctx) { return sock_bytes(ctx, false); }

/* Readiness: a successful listen() on a TCP socket. The state change to LISTEN does not
 * pass through the inet_sock_set_state tracepoint, so the syscall is the attach point. */
ENTER_SAVE(listen, 2, false)

EXIT(listen)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct args a;
	if (!take(&a) || ret != 0)
		return 0;
	struct sock *sk = fd_sock(a.a[0]);
	if (!sk || !is_tcp(sk))
		return 0;
	struct event_listen *e;
	if (!reserve(e, EV_LISTEN, id >> 32, (__u32)id))
		return 0;
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->_pad = 0;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	if (e->family == AF_INET6)
		BPF_CORE_READ_INTO(&e->addr, sk, __sk_common.skc_v6_rcv_saddr);
	else
		BPF_CORE_READ_INTO((__u32 *)e->addr, sk, __sk_common.skc_rcv_saddr);
	submit_now(e);
	return 0;
}

/* ---- accelerators ---- */

ENTER(ioctl)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	struct fdkey k = { .pid = pid, .fd = ARG0(regs) };
	if (!bpf_map_lookup_elem(&devfds, &k))
		return 0;
	save_args(regs, nr, 3, true);
	return 0;
}

EXIT(ioctl)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	struct args a;
	if (!take(&a))
		return 0;
	struct fdkey k = { .pid = pid, .fd = a.a[0] };
	__u64 *rdev = bpf_map_lookup_elem(&devfds, &k);
	struct event_ioctl *e;
	if (!reserve(e, EV_IOCTL, pid, (__u32)id))
		return 0;
	e->rdev = rdev ? *rdev : 0;
	e->request = a.a[1];
	e->start = a.ts;
	e->ret = ret;
	e->fd = k.fd;
	e->_pad = 0;
	submit(e);
	return 0;
}

/* Entry and return of the uprobed driver calls; the attach cookie names the function. */
SEC("uprobe")
int call_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!tracked(id >> 32))
		return 0;
	struct callkey k = { .tid = id, .cookie = bpf_get_attach_cookie(ctx) };
	__u64 now = bpf_ktime_get_ns();
	bpf_map_update_elem(&calls, &k, &now, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int call_exit(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct callkey k = { .tid = id, .cookie = bpf_get_attach_cookie(ctx) };
	__u64 *start = bpf_map_lookup_elem(&calls, &k);
	if (!start)
		return 0;
	struct event_call *e;
	if (reserve(e, EV_CALL, id >> 32, (__u32)id)) {
		e->cookie = k.cookie;
		e->start = *start;
		e->ret = PT_REGS_RC(ctx);
		submit(e);
	}
	bpf_map_delete_elem(&calls, &k);
	return 0;
}

/* ---- syscall dispatch ----
 * Two raw tracepoints see every syscall on the node and tail-call the handler of the
 * syscall, if it has one. While they are attached, every syscall of every process takes
 * the kernel's tracing slow path and runs both: that floor is most of what a syscall pays
 * (docs/overhead.md measures it), and raw tracepoints cannot be scoped to a cgroup. Above
 * the floor the dispatchers keep an untraced process's syscalls to a load from a constant
 * table and, for the followed ones, the tracked() lookups at entry and a task-storage
 * lookup at exit: no tail call, so no handler needs to ask tracked() itself. The
 * per-syscall tracepoints (syscalls:sys_enter_NAME) cost more than that, for the calls of
 * traced processes and of every other (the kernel formats each event's arguments into a
 * perf buffer before the program runs; docs/overhead.md has the figures). So these two are
 * attached only while something is recorded: see Probes.SetActive. */

/* The syscalls with an entry and an exit handler; close has only an entry handler,
 * nothing waits for its return. */
#define WITH_EXIT(X) X(read) X(write) X(open) X(mmap) X(ioctl) X(pread64) X(pwrite64)  \
	X(readv) X(writev) X(sendfile64) X(accept) X(sendto) X(sendmsg) X(listen)         \
	X(chdir) X(fchdir) X(openat) X(splice) X(accept4) X(preadv) X(pwritev)            \
	X(copy_file_range) X(preadv2) X(pwritev2) X(openat2)
#define ENTER_SLOT(name) [NR_##name] = (void *)&enter_##name,
#define EXIT_SLOT(name) [NR_##name] = (void *)&exit_##name,
#define FLAG(name) [NR_##name] = 1,
#define MAX_NR 512

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, MAX_NR);
	__type(key, __u32);
	__array(values, int(void *));
} enter_calls SEC(".maps") = {
	.values = { WITH_EXIT(ENTER_SLOT) ENTER_SLOT(close) },
};

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, MAX_NR);
	__type(key, __u32);
	__array(values, int(void *));
} exit_calls SEC(".maps") = {
	.values = { WITH_EXIT(EXIT_SLOT) },
};

/* Which syscalls have handlers, in .rodata: one load, no helper call. */
static const __u8 has_enter[MAX_NR] = { WITH_EXIT(FLAG) FLAG(close) };
static const __u8 has_exit[MAX_NR] = { WITH_EXIT(FLAG) };

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long nr)
{
	if ((__u64)nr >= MAX_NR || !has_enter[nr] || !tracked(bpf_get_current_pid_tgid() >> 32))
		return 0;
	bpf_tail_call(ctx, &enter_calls, nr);
	return 0;
}

/* The exit tracepoint passes no syscall number: orig_ax still holds it. Every exit
 * handler starts by taking the arguments its entry handler saved, so a thread without
 * saved arguments has nothing to do. */
SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit, struct pt_regs *regs, long ret)
{
	__u64 nr = regs->orig_ax;
	if (nr >= MAX_NR || !has_exit[nr])
		return 0;
	struct args *a = slot(false);
	if (!a || !a->busy)
		return 0;
	bpf_tail_call(ctx, &exit_calls, nr);
	return 0;
}

/* Keep every event type in the object's BTF so that bpf2go generates its Go type. */
const struct event_fork *_ev_fork __attribute__((unused));
const struct event_exec *_ev_exec __attribute__((unused));
const struct event_exit *_ev_exit __attribute__((unused));
const struct event_open *_ev_open __attribute__((unused));
const struct event_read *_ev_read __attribute__((unused));
const struct event_mmap *_ev_mmap __attribute__((unused));
const struct event_fault *_ev_fault __attribute__((unused));
const struct event_cache_miss *_ev_cache_miss __attribute__((unused));
const struct event_conn *_ev_conn __attribute__((unused));
const struct event_sock *_ev_sock __attribute__((unused));
const struct event_listen *_ev_listen __attribute__((unused));
const struct event_ioctl *_ev_ioctl __attribute__((unused));
const struct event_call *_ev_call __attribute__((unused));
const struct event_chdir *_ev_chdir __attribute__((unused));
const struct event_payload *_ev_payload __attribute__((unused));
const struct event_write *_ev_write __attribute__((unused));
const struct event_cgroup *_ev_cgroup __attribute__((unused));
const enum event_type *_ev_type __attribute__((unused));
