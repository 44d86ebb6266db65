/* LD_PRELOAD fault injection for tests/faults/fault_test.sh.
 *
 *   MV_FAULT_CONTROL=/path/to/control LD_PRELOAD=libmv_fault_shim.so mailvault serve ...
 *
 * The control file holds rules, one per line:
 *
 *   <op> <path-substring> <ERRNO-NAME> [MAX-BYTES]     e.g.  write /packs/ ENOSPC
 *
 * MAX-BYTES (write only): fail only calls that write at most that many bytes (a pack's SEAL
 * record, not the group appends before it).
 *
 *   op write   write, pwrite(64), writev, pwritev(2), fallocate(64) (not ftruncate: shrinking a
 *              file needs no space, and the vault cuts a failed append with it)
 *      sync    fsync, fdatasync (not sync_file_range: it orders writeback, promises nothing,
 *              and RocksDB asserts that its probe call succeeds)
 *      create  open/openat/creat (and their 64 and fortify variants) with O_CREAT, and the
 *              target of rename/renameat(2)
 *
 * A call fails (returns -1 with that errno, doing nothing) when the path of its descriptor
 * (readlink of /proc/self/fd/N, cached per descriptor and checked against the descriptor's
 * device and inode) or, for create, the path it names contains the substring. '#' starts a
 * comment; an empty or missing file means no faults. The file is re-read when its mtime or
 * size changes, looked at no more often than every 20 ms (a vDSO clock read otherwise), so a
 * test turns faults on and off by rewriting it (write a temporary file and rename it over).
 *
 * MV_FAULT_LOG=/path: the first time each rule of each version of the control file fails a
 * call, one line "inject OP PATH ERRNO" is appended there (the test checks that the fault was
 * reached), and the line "clear" when a reload leaves no rules.
 *
 * Safety: no malloc, no locks, no stdio on the intercepted paths; the shim's own file access
 * uses raw syscalls so it never recurses into itself. Rule sets are immutable snapshots in a
 * ring of slots published by an atomic index; a reload (one thread at a time, guarded by an
 * atomic flag) writes the next slot. A reader that sat on a slot through 15 reloads could see
 * it change; the tests rewrite the file a few times a minute.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_RULES 16
#define MAX_SUB 128
#define SLOTS 16
#define FD_CACHE 4096
#define PATH_MAX_CACHED 256

enum { OP_WRITE = 1, OP_SYNC = 2, OP_CREATE = 4 };

struct rule {
  int op;
  int err;
  char sub[MAX_SUB];
  size_t max_bytes; /* write: only calls of at most this many bytes (0: any) */
  int logged; /* atomic: first hit written to the log */
};

struct ruleset {
  int n;
  int ops; /* union of the rules' ops: a quick "nothing for this op" */
  struct rule r[MAX_RULES];
};

static struct ruleset g_slots[SLOTS];
static int g_cur = 0;          /* atomic: index of the published slot */
static int g_active = 0;       /* atomic: ops of the published slot (0: fast path) */
static int g_reloading = 0;    /* atomic flag */
static int64_t g_next_check_ns = 0; /* atomic */
static int64_t g_mtime_ns = -1, g_size = -1; /* guarded by g_reloading */
static const char* g_control = NULL;
static const char* g_log = NULL;

struct fdent {
  int seq; /* atomic: odd while being written */
  dev_t dev;
  ino_t ino;
  char path[PATH_MAX_CACHED];
};
static struct fdent g_fds[FD_CACHE];

/* ---- the real functions ---- */
typedef ssize_t (*write_fn)(int, const void*, size_t);
typedef ssize_t (*pwrite_fn)(int, const void*, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec*, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec*, int, off_t);
typedef ssize_t (*pwritev2_fn)(int, const struct iovec*, int, off_t, int);
typedef int (*fsync_fn)(int);
typedef int (*fallocate_fn)(int, int, off_t, off_t);
typedef int (*open_fn)(const char*, int, ...);
typedef int (*openat_fn)(int, const char*, int, ...);
typedef int (*open2_fn)(const char*, int);
typedef int (*openat2_fn)(int, const char*, int);
typedef int (*creat_fn)(const char*, mode_t);
typedef int (*close_fn)(int);
typedef int (*rename_fn)(const char*, const char*);
typedef int (*renameat_fn)(int, const char*, int, const char*);
typedef int (*renameat2_fn)(int, const char*, int, const char*, unsigned int);

#define REAL(name, type)                                                   \
  static type real_##name;                                                 \
  static type get_##name(void) {                                           \
    type f = __atomic_load_n(&real_##name, __ATOMIC_ACQUIRE);              \
    if (!f) {                                                              \
      void* p_ = dlsym(RTLD_NEXT, #name);                                  \
      memcpy(&f, &p_, sizeof f); /* ISO C: no object-to-function cast */   \
      __atomic_store_n(&real_##name, f, __ATOMIC_RELEASE);                 \
    }                                                                      \
    return f;                                                              \
  }

REAL(write, write_fn)
REAL(pwrite, pwrite_fn)
REAL(pwrite64, pwrite_fn)
REAL(writev, writev_fn)
REAL(pwritev, pwritev_fn)
REAL(pwritev64, pwritev_fn)
REAL(pwritev2, pwritev2_fn)
REAL(pwritev64v2, pwritev2_fn)
REAL(fsync, fsync_fn)
REAL(fdatasync, fsync_fn)
REAL(fallocate, fallocate_fn)
REAL(fallocate64, fallocate_fn)
REAL(open, open_fn)
REAL(open64, open_fn)
REAL(openat, openat_fn)
REAL(openat64, openat_fn)
REAL(__open_2, open2_fn)
REAL(__open64_2, open2_fn)
REAL(__openat_2, openat2_fn)
REAL(__openat64_2, openat2_fn)
REAL(creat, creat_fn)
REAL(creat64, creat_fn)
REAL(close, close_fn)
REAL(rename, rename_fn)
REAL(renameat, renameat_fn)
REAL(renameat2, renameat2_fn)

/* ---- small helpers (no libc state) ---- */
static size_t slen(const char* s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

static int contains(const char* hay, const char* needle) {
  size_t hn = slen(hay), nn = slen(needle);
  if (nn == 0) return 1;
  for (size_t i = 0; i + nn <= hn; i++) {
    if (memcmp(hay + i, needle, nn) == 0) return 1;
  }
  return 0;
}

/* "/proc/self/fd/N" without stdio */
static void fd_link(int fd, char* out) {
  static const char pre[] = "/proc/self/fd/";
  memcpy(out, pre, sizeof pre - 1);
  char d[16];
  int n = 0;
  unsigned v = (unsigned)fd;
  do {
    d[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  size_t o = sizeof pre - 1;
  while (n) out[o++] = d[--n];
  out[o] = 0;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const struct {
  const char* name;
  int value;
} kErrnos[] = {
    {"ENOSPC", ENOSPC}, {"EIO", EIO},       {"EDQUOT", EDQUOT}, {"EROFS", EROFS}, {"EACCES", EACCES},
    {"EPERM", EPERM},   {"ENOMEM", ENOMEM}, {"EFBIG", EFBIG},   {"EINTR", EINTR}, {"EAGAIN", EAGAIN},
    {"EBADF", EBADF},   {"ENOENT", ENOENT}, {"EEXIST", EEXIST}, {"EMFILE", EMFILE},
};

static int errno_by_name(const char* s, size_t n) {
  for (size_t i = 0; i < sizeof kErrnos / sizeof kErrnos[0]; i++) {
    if (slen(kErrnos[i].name) == n && memcmp(kErrnos[i].name, s, n) == 0) return kErrnos[i].value;
  }
  return 0;
}

static const char* errno_name(int e) {
  for (size_t i = 0; i < sizeof kErrnos / sizeof kErrnos[0]; i++) {
    if (kErrnos[i].value == e) return kErrnos[i].name;
  }
  return "E?";
}

static void log_line(const char* a, const char* b, const char* c, const char* d) {
  if (!g_log) return;
  int fd = (int)syscall(SYS_openat, AT_FDCWD, g_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  char buf[1024];
  size_t n = 0;
  const char* parts[4] = {a, b, c, d};
  for (int i = 0; i < 4; i++) {
    if (!parts[i]) continue;
    if (i && n < sizeof buf) buf[n++] = ' ';
    size_t l = slen(parts[i]);
    if (l > sizeof buf - n - 1) l = sizeof buf - n - 1;
    memcpy(buf + n, parts[i], l);
    n += l;
  }
  if (n < sizeof buf) buf[n++] = '\n';
  (void)syscall(SYS_write, fd, buf, n);
  (void)syscall(SYS_close, fd);
}

/* ---- the control file ---- */
static void parse(const char* text, size_t len, struct ruleset* rs) {
  rs->n = 0;
  rs->ops = 0;
  size_t i = 0;
  while (i < len && rs->n < MAX_RULES) {
    size_t e = i;
    while (e < len && text[e] != '\n') e++;
    /* tokens of [i, e) */
    const char* tok[4];
    size_t tl[4];
    int nt = 0;
    size_t p = i;
    while (p < e && nt < 4) {
      while (p < e && (text[p] == ' ' || text[p] == '\t' || text[p] == '\r')) p++;
      if (p >= e || text[p] == '#') break;
      size_t q = p;
      while (q < e && text[q] != ' ' && text[q] != '\t' && text[q] != '\r') q++;
      tok[nt] = text + p;
      tl[nt] = q - p;
      nt++;
      p = q;
    }
    i = e + 1;
    if (nt < 3 || tl[1] == 0 || tl[1] >= MAX_SUB) continue;
    size_t max_bytes = 0;
    if (nt == 4) {
      for (size_t k = 0; k < tl[3]; k++) {
        if (tok[3][k] < '0' || tok[3][k] > '9') { max_bytes = (size_t)-1; break; }
        max_bytes = max_bytes * 10 + (size_t)(tok[3][k] - '0');
      }
      if (max_bytes == (size_t)-1 || max_bytes == 0) continue;
    }
    int op = 0;
    if (tl[0] == 5 && memcmp(tok[0], "write", 5) == 0) op = OP_WRITE;
    else if (tl[0] == 4 && memcmp(tok[0], "sync", 4) == 0) op = OP_SYNC;
    else if (tl[0] == 6 && memcmp(tok[0], "create", 6) == 0) op = OP_CREATE;
    int err = errno_by_name(tok[2], tl[2]);
    if (!op || !err) continue;
    struct rule* r = &rs->r[rs->n++];
    r->op = op;
    r->err = err;
    r->max_bytes = max_bytes;
    memcpy(r->sub, tok[1], tl[1]);
    r->sub[tl[1]] = 0;
    __atomic_store_n(&r->logged, 0, __ATOMIC_RELAXED);
    rs->ops |= op;
  }
}

static void maybe_reload(void) {
  if (!g_control) return;
  int64_t now = now_ns();
  if (now < __atomic_load_n(&g_next_check_ns, __ATOMIC_RELAXED)) return;
  if (__atomic_exchange_n(&g_reloading, 1, __ATOMIC_ACQUIRE)) return; /* another thread does it */
  __atomic_store_n(&g_next_check_ns, now + 20 * 1000000, __ATOMIC_RELAXED);
  struct stat st;
  int64_t mt = -2, sz = -2;
  if (syscall(SYS_newfstatat, AT_FDCWD, g_control, &st, 0) == 0) {
    mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    sz = (int64_t)st.st_size;
  }
  if (mt != g_mtime_ns || sz != g_size) {
    g_mtime_ns = mt;
    g_size = sz;
    char text[4096];
    size_t len = 0;
    if (mt != -2) {
      int fd = (int)syscall(SYS_openat, AT_FDCWD, g_control, O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        for (;;) {
          long n = syscall(SYS_read, fd, text + len, sizeof text - len);
          if (n <= 0) break;
          len += (size_t)n;
          if (len == sizeof text) break;
        }
        (void)syscall(SYS_close, fd);
      }
    }
    int next = (__atomic_load_n(&g_cur, __ATOMIC_RELAXED) + 1) % SLOTS;
    parse(text, len, &g_slots[next]);
    __atomic_store_n(&g_cur, next, __ATOMIC_RELEASE);
    __atomic_store_n(&g_active, g_slots[next].ops, __ATOMIC_RELEASE);
    if (g_slots[next].n == 0) {
      log_line("clear", NULL, NULL, NULL);
    } else {
      for (int k = 0; k < g_slots[next].n; k++) {
        const struct rule* r = &g_slots[next].r[k];
        log_line("rule", r->op == OP_WRITE ? "write" : r->op == OP_SYNC ? "sync" : "create", r->sub,
                 errno_name(r->err));
      }
    }
  }
  __atomic_store_n(&g_reloading, 0, __ATOMIC_RELEASE);
}

/* The path behind fd into out (empty when unknown). */
static void fd_path(int fd, char* out, size_t cap) {
  out[0] = 0;
  struct stat st;
  if (syscall(SYS_fstat, fd, &st) != 0) return;
  if (fd >= 0 && fd < FD_CACHE) {
    struct fdent* e = &g_fds[fd];
    int s1 = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE);
    if (!(s1 & 1) && s1 != 0 && e->dev == st.st_dev && e->ino == st.st_ino) {
      size_t n = 0;
      while (n + 1 < cap && n < PATH_MAX_CACHED && e->path[n]) {
        out[n] = e->path[n];
        n++;
      }
      out[n] = 0;
      __atomic_thread_fence(__ATOMIC_ACQUIRE);
      if (__atomic_load_n(&e->seq, __ATOMIC_RELAXED) == s1) return;
    }
  }
  char link[64];
  fd_link(fd, link);
  long n = syscall(SYS_readlinkat, AT_FDCWD, link, out, cap - 1);
  if (n < 0) n = 0;
  out[n] = 0;
  if (fd >= 0 && fd < FD_CACHE && (size_t)n < PATH_MAX_CACHED) {
    struct fdent* e = &g_fds[fd];
    int s = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
    if (s & 1) return; /* another thread is writing it */
    if (!__atomic_compare_exchange_n(&e->seq, &s, s + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) return;
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    memcpy(e->path, out, (size_t)n + 1);
    __atomic_store_n(&e->seq, s + 2, __ATOMIC_RELEASE);
  }
}

/* The errno to fail with for op on path, or 0. */
static int match(int op, const char* path, size_t len) {
  if (!path[0]) return 0;
  const struct ruleset* rs = &g_slots[__atomic_load_n(&g_cur, __ATOMIC_ACQUIRE)];
  for (int i = 0; i < rs->n; i++) {
    struct rule* r = (struct rule*)&rs->r[i];
    if (r->op == op && (!r->max_bytes || len <= r->max_bytes) && contains(path, r->sub)) {
      if (!__atomic_exchange_n(&r->logged, 1, __ATOMIC_RELAXED)) {
        log_line("inject", op == OP_WRITE ? "write" : op == OP_SYNC ? "sync" : "create", path, errno_name(r->err));
      }
      return r->err;
    }
  }
  return 0;
}

static int fault_fd(int op, int fd, size_t len) {
  maybe_reload();
  if (!(__atomic_load_n(&g_active, __ATOMIC_ACQUIRE) & op)) return 0;
  char path[1024];
  fd_path(fd, path, sizeof path);
  return match(op, path, len);
}

/* For create: the path that dirfd + name stands for (absolute when it can be made so). */
static int fault_create(int dirfd, const char* name, int flags) {
  if (!(flags & O_CREAT) || !name) return 0;
  maybe_reload();
  if (!(__atomic_load_n(&g_active, __ATOMIC_ACQUIRE) & OP_CREATE)) return 0;
  char path[2048];
  if (name[0] == '/') {
    size_t n = slen(name);
    if (n >= sizeof path) n = sizeof path - 1;
    memcpy(path, name, n);
    path[n] = 0;
  } else {
    char link[64];
    if (dirfd == AT_FDCWD) memcpy(link, "/proc/self/cwd", 15);
    else fd_link(dirfd, link);
    long n = syscall(SYS_readlinkat, AT_FDCWD, link, path, 1024);
    if (n < 0) n = 0;
    path[n++] = '/';
    size_t l = slen(name);
    if (l > sizeof path - (size_t)n - 1) l = sizeof path - (size_t)n - 1;
    memcpy(path + n, name, l);
    path[n + (long)l] = 0;
  }
  return match(OP_CREATE, path, 0);
}

__attribute__((constructor)) static void shim_init(void) {
  g_control = getenv("MV_FAULT_CONTROL");
  g_log = getenv("MV_FAULT_LOG");
  if (g_control && !g_control[0]) g_control = NULL;
  if (g_log && !g_log[0]) g_log = NULL;
  /* resolve everything now, before threads start */
  (void)get_write(); (void)get_pwrite(); (void)get_pwrite64(); (void)get_writev(); (void)get_pwritev();
  (void)get_pwritev64(); (void)get_pwritev2(); (void)get_pwritev64v2(); (void)get_fsync(); (void)get_fdatasync();
  (void)get_fallocate(); (void)get_fallocate64();
  (void)get_open(); (void)get_open64(); (void)get_openat(); (void)get_openat64();
  (void)get___open_2(); (void)get___open64_2(); (void)get___openat_2(); (void)get___openat64_2();
  (void)get_creat(); (void)get_creat64(); (void)get_close(); (void)get_rename(); (void)get_renameat();
  (void)get_renameat2();
}

#define FAIL_IF(expr)        \
  do {                       \
    int e_ = (expr);         \
    if (e_) {                \
      errno = e_;            \
      return -1;             \
    }                        \
  } while (0)

/* ---- write ---- */
static size_t iov_len(const struct iovec* v, int c) {
  size_t n = 0;
  for (int i = 0; i < c; i++) n += v[i].iov_len;
  return n;
}

ssize_t write(int fd, const void* b, size_t n) {
  FAIL_IF(fault_fd(OP_WRITE, fd, n));
  return get_write()(fd, b, n);
}
ssize_t pwrite(int fd, const void* b, size_t n, off_t o) {
  FAIL_IF(fault_fd(OP_WRITE, fd, n));
  return get_pwrite()(fd, b, n, o);
}
ssize_t pwrite64(int fd, const void* b, size_t n, off_t o) {
  FAIL_IF(fault_fd(OP_WRITE, fd, n));
  return get_pwrite64()(fd, b, n, o);
}
ssize_t writev(int fd, const struct iovec* v, int c) {
  FAIL_IF(fault_fd(OP_WRITE, fd, iov_len(v, c)));
  return get_writev()(fd, v, c);
}
ssize_t pwritev(int fd, const struct iovec* v, int c, off_t o) {
  FAIL_IF(fault_fd(OP_WRITE, fd, iov_len(v, c)));
  return get_pwritev()(fd, v, c, o);
}
ssize_t pwritev64(int fd, const struct iovec* v, int c, off_t o) {
  FAIL_IF(fault_fd(OP_WRITE, fd, iov_len(v, c)));
  return get_pwritev64()(fd, v, c, o);
}
ssize_t pwritev2(int fd, const struct iovec* v, int c, off_t o, int f) {
  FAIL_IF(fault_fd(OP_WRITE, fd, iov_len(v, c)));
  return get_pwritev2()(fd, v, c, o, f);
}
ssize_t pwritev64v2(int fd, const struct iovec* v, int c, off_t o, int f) {
  FAIL_IF(fault_fd(OP_WRITE, fd, iov_len(v, c)));
  return get_pwritev64v2()(fd, v, c, o, f);
}
int fallocate(int fd, int mode, off_t o, off_t l) {
  FAIL_IF(fault_fd(OP_WRITE, fd, (size_t)l));
  return get_fallocate()(fd, mode, o, l);
}
int fallocate64(int fd, int mode, off_t o, off_t l) {
  FAIL_IF(fault_fd(OP_WRITE, fd, (size_t)l));
  return get_fallocate64()(fd, mode, o, l);
}

/* ---- sync ---- */
int fsync(int fd) {
  FAIL_IF(fault_fd(OP_SYNC, fd, 0));
  return get_fsync()(fd);
}
int fdatasync(int fd) {
  FAIL_IF(fault_fd(OP_SYNC, fd, 0));
  return get_fdatasync()(fd);
}

/* ---- create ---- */
static mode_t mode_arg(int flags, va_list ap) {
  return (flags & (O_CREAT | __O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}
int open(const char* p, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  FAIL_IF(fault_create(AT_FDCWD, p, flags));
  return get_open()(p, flags, m);
}
int open64(const char* p, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  FAIL_IF(fault_create(AT_FDCWD, p, flags));
  return get_open64()(p, flags, m);
}
int openat(int d, const char* p, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  FAIL_IF(fault_create(d, p, flags));
  return get_openat()(d, p, flags, m);
}
int openat64(int d, const char* p, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  FAIL_IF(fault_create(d, p, flags));
  return get_openat64()(d, p, flags, m);
}
int __open_2(const char* p, int flags) {
  FAIL_IF(fault_create(AT_FDCWD, p, flags));
  return get___open_2()(p, flags);
}
int __open64_2(const char* p, int flags) {
  FAIL_IF(fault_create(AT_FDCWD, p, flags));
  return get___open64_2()(p, flags);
}
int __openat_2(int d, const char* p, int flags) {
  FAIL_IF(fault_create(d, p, flags));
  return get___openat_2()(d, p, flags);
}
int __openat64_2(int d, const char* p, int flags) {
  FAIL_IF(fault_create(d, p, flags));
  return get___openat64_2()(d, p, flags);
}
int creat(const char* p, mode_t m) {
  FAIL_IF(fault_create(AT_FDCWD, p, O_CREAT));
  return get_creat()(p, m);
}
int creat64(const char* p, mode_t m) {
  FAIL_IF(fault_create(AT_FDCWD, p, O_CREAT));
  return get_creat64()(p, m);
}
int rename(const char* a, const char* b) {
  FAIL_IF(fault_create(AT_FDCWD, b, O_CREAT));
  return get_rename()(a, b);
}
int renameat(int da, const char* a, int db, const char* b) {
  FAIL_IF(fault_create(db, b, O_CREAT));
  return get_renameat()(da, a, db, b);
}
int renameat2(int da, const char* a, int db, const char* b, unsigned int f) {
  FAIL_IF(fault_create(db, b, O_CREAT));
  return get_renameat2()(da, a, db, b, f);
}

/* ---- close: forget the descriptor's cached path ---- */
int close(int fd) {
  if (fd >= 0 && fd < FD_CACHE) {
    struct fdent* e = &g_fds[fd];
    int s = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
    if (!(s & 1) && s != 0 && __atomic_compare_exchange_n(&e->seq, &s, s + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
      e->path[0] = 0;
      e->ino = 0;
      __atomic_store_n(&e->seq, s + 2, __ATOMIC_RELEASE);
    }
  }
  return get_close()(fd);
}
