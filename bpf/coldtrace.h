/* Events that the kernel side sends to the collector through the ring buffer.
 * Every event starts with struct hdr; the collector dispatches on hdr.type.
 * Layouts are padded by hand so that bpf2go's Go types match without surprises. */
#ifndef COLDTRACE_H
#define COLDTRACE_H

#define PATH_LEN 512
#define COMM_LEN 16
#define PAYLOAD_LEN 256

enum event_type {
	EV_FORK = 1,
	EV_EXEC,
	EV_EXIT,
	EV_OPEN,
	EV_READ,
	EV_MMAP,
	EV_FAULT,
	EV_CACHE_MISS,
	EV_CONN,
	EV_SOCK,
	EV_LISTEN,
	EV_IOCTL,
	EV_CALL,
	EV_CHDIR,
	EV_PAYLOAD,
	EV_WRITE,
	EV_CGROUP,
};

/* Why a socket event was sent. */
enum sock_reason {
	SOCK_SAMPLE = 1,
	SOCK_CLOSE,
};

struct hdr {
	__u32 type;
	__u32 pid; /* tgid */
	__u32 tid;
	__u32 _pad;
	__u64 ts; /* CLOCK_MONOTONIC ns */
	__u64 cgroup;
};

struct event_fork {
	struct hdr h;
	__u32 child;
	__u32 _pad;
	char comm[COMM_LEN];
};

struct event_exec {
	struct hdr h;
	__u64 dev; /* the executable's inode, to name its mappings */
	__u64 ino;
	__u32 ppid;
	__u32 _pad;
	char comm[COMM_LEN];
	char filename[PATH_LEN];
};

struct event_exit {
	struct hdr h;
	__s32 code; /* the wait status: exit code << 8 | signal */
	__u32 _pad;
};

struct event_open {
	struct hdr h;
	__s32 dirfd;
	__s32 fd; /* the syscall's return: a descriptor or -errno */
	__s32 flags;
	__u32 mode; /* i_mode of the opened inode */
	__u64 dev;  /* s_dev of the inode's superblock, as page-cache events report it */
	__u64 ino;
	__s64 size;
	__u64 rdev;
	char path[PATH_LEN]; /* as passed to the syscall; sent only up to its NUL */
};

/* A run of sequential reads of one file through one descriptor, coalesced in the kernel. */
struct event_read {
	struct hdr h;
	__u64 dev;
	__u64 ino;
	__s64 off;
	__s64 len;    /* bytes of the run: end - off */
	__u64 first;  /* entry of the first read */
	__u64 last;   /* return of the last read */
	__u64 busy;   /* time inside the syscalls */
	__u32 count;  /* syscalls */
	__s32 fd;
};

struct event_mmap {
	struct hdr h;
	__u64 addr;
	__u64 len;
	__s64 off;
	__u64 dev;
	__u64 ino;
	__u64 rdev;
	__u32 mode;
	__s32 fd;
	__u32 prot;
	__u32 flags;
};

/* A user page fault on a file mapping, the addresses [from, to) it maps, and the mapping:
 * its addresses and the file offset at its start. dev and ino (and the rest) are 0 where
 * the kernel could not look the mapping up. */
struct event_fault {
	struct hdr h;
	__u64 dev;
	__u64 ino;
	__u64 addr;
	__u64 from;
	__u64 to;
	__u64 vm_start;
	__u64 vm_end;
	__u64 vm_off;
};

/* A cgroup created under a watched one, and tracked from then on. */
struct event_cgroup {
	struct hdr h;
	__u64 id; /* its v2 id */
};

/* Consecutive pages of one file added to the page cache as folios of one order: reads
 * from storage. */
struct event_cache_miss {
	struct hdr h;
	__u64 dev;
	__u64 ino;
	__u64 index; /* first page */
	__u64 pages;
	__u32 order; /* of each of their folios */
	__u32 _pad;
};

struct event_conn {
	struct hdr h;
	__u64 sk;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u16 dir; /* 1 connect, 2 accept */
	__u8 saddr[16];
	__u8 daddr[16];
	__u64 open;
};

/* Cumulative bytes of one tracked socket. */
struct event_sock {
	struct hdr h;
	__u64 sk;
	__u64 recv;
	__u64 sent;
	__u64 first_recv;
	__u64 last_recv;
	__u32 reason;
	__u32 _pad;
};

struct event_listen {
	struct hdr h;
	__u16 family;
	__u16 port;
	__u32 _pad;
	__u8 addr[16];
};

struct event_ioctl {
	struct hdr h;
	__u64 rdev;
	__u64 request;
	__u64 start;
	__s64 ret;
	__s32 fd;
	__u32 _pad;
};

/* A call into a uprobed library function: cookie says which one. */
struct event_call {
	struct hdr h;
	__u64 cookie;
	__u64 start;
	__s64 ret;
};

struct event_chdir {
	struct hdr h;
	__s32 fd; /* fchdir's descriptor, -1 for chdir */
	__u32 _pad;
	char path[PATH_LEN];
};

/* The first bytes a traced process sent on a TCP connection it opened: the request line
 * and headers of plain HTTP, which name the URL. */
struct event_payload {
	struct hdr h;
	__u64 sk;
	__u32 len; /* bytes of data that are valid */
	__u32 _pad;
	__u8 data[PAYLOAD_LEN];
};

/* Bytes one process wrote to one file (write-family syscalls), held in the kernel and sent
 * when the recording ends; sk is the TCP socket that the writing thread last received
 * from before its last write to the file, 0 if none. */
struct event_write {
	struct hdr h;
	__u64 dev;
	__u64 ino;
	__u64 bytes;
	__u64 sk;
};

#endif
