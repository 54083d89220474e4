/*
 * lgroup.c — the SO_REUSEPORT group of --balance reuseport.
 *
 * Data: the anchor (bound, never listening), the members (one record per
 * socket, reused once closed, each with its drain timer), and order[], the
 * mirror of the kernel's group array (member numbers by kernel index).
 */
#include "hub/lgroup.h"
#include "hub/listen.h"
#include "hub/upgrade.h"

#include <errno.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif
#ifndef SO_DETACH_REUSEPORT_BPF
#define SO_DETACH_REUSEPORT_BPF 68
#endif
#ifndef SO_ATTACH_REUSEPORT_EBPF
#define SO_ATTACH_REUSEPORT_EBPF 52
#endif

/* How new connections are steered: round-robin (eBPF, needs CAP_BPF), else a hash (classic BPF). */
typedef enum { STEER_UNTRIED, STEER_ROUND_ROBIN, STEER_HASH } steer_kind;

typedef struct {
    lgroup      *g;
    int          m;            /* its number */
    int          fd;           /* -1 once closed */
    lsock_state  st;           /* set by lgroup_step only */
    uv_timer_t   watch;        /* draining: reads the accept queue */
    uint64_t     drain_ms;     /* when it was steered away */
    unsigned     timeout_ms;
    lgroup_drained_fn done;
    void        *ctx;
} member;

struct lgroup {
    uv_loop_t  *loop;
    int         anchor;
    member    **mem;
    size_t      nmem;
    int         order[LGROUP_MAX];  /* the kernel's socks[]: member numbers */
    size_t      norder;
    bool        prog_on;            /* a steering program is attached */
    bool        steer_failed;       /* said once */
    steer_kind  steer;
    int         socks_map;          /* round-robin: REUSEPORT_SOCKARRAY of the sockets in rotation */
    int         ctr_map;            /* round-robin: one u32, the next turn */
    size_t      nsocks_map;         /* entries set in socks_map */
    int         map_fds[LGROUP_MAX];/* ... which socket each holds (-1: unknown), for lgroup_rr_steer */
};

/* ---- the pure parts ----------------------------------------------------- */

/* One row of a socket's machine: in state, on input, go to next doing act. */
typedef struct {
    unsigned     from;        /* bit set of states it applies in */
    lsock_input  in;
    lsock_state  next;
    lsock_action act;
} lsock_row;

#define S(x) (1u << (x))
static const lsock_row lsock_table[] = {
    {S(LSOCK_OPEN),                      LSOCK_IN_PARK,    LSOCK_PARKED,   LSOCK_DO_STEER},
    {S(LSOCK_PARKED),                    LSOCK_IN_SERVE,   LSOCK_OPEN,     LSOCK_DO_STEER},
    {S(LSOCK_OPEN) | S(LSOCK_PARKED),    LSOCK_IN_DRAIN,   LSOCK_DRAINING, LSOCK_DO_DRAIN},
    {S(LSOCK_DRAINING),                  LSOCK_IN_DRAINED, LSOCK_DRAINED,  LSOCK_DO_REPORT},
    {S(LSOCK_OPEN) | S(LSOCK_PARKED) | S(LSOCK_DRAINING) | S(LSOCK_DRAINED),
                                         LSOCK_IN_CLOSE,   LSOCK_CLOSED,   LSOCK_DO_CLOSE},
};
#undef S

lsock_decision lsock_next(lsock_state s, lsock_input in)
{
    for (size_t i = 0; i < sizeof lsock_table / sizeof lsock_table[0]; i++)
        if ((lsock_table[i].from & (1u << s)) && lsock_table[i].in == in)
            return (lsock_decision){lsock_table[i].next, lsock_table[i].act};
    return (lsock_decision){s, LSOCK_DO_NOTHING};
}

const char *lsock_name(lsock_state s)
{
    static const char *const names[] = {"open", "parked", "draining", "drained", "closed"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "?";
}

void lgroup_order_remove(int *order, size_t *n, int m)
{
    for (size_t i = 0; i < *n; i++)
        if (order[i] == m) {
            order[i] = order[--*n];
            return;
        }
}

/* Appends one instruction if it fits; returns the new count (cap+1 marks overflow). */
static size_t lgroup_emit(struct sock_filter *out, size_t n, size_t cap, struct sock_filter ins)
{
    if (n < cap)
        out[n] = ins;
    return n + 1;
}

size_t lgroup_prog(const unsigned *keep, size_t nkeep, struct sock_filter *out, size_t cap)
{
    if (nkeep == 0)
        return 0;
    const uint32_t net = (uint32_t)SKF_NET_OFF;
    size_t n = 0;
    /* A = IP version */
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS, net));
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4));
    /* IPv6: skip the 7 IPv4 instructions */
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 7, 0));
    /* IPv4: M[0] = source address; X = header length; A = source port ^ M[0] */
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, net + 12));
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_ST, 0));
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, net));
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_LD | BPF_H | BPF_IND, net));
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_LDX | BPF_MEM, 0));
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0));
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_JMP | BPF_JA, 5));
    /* IPv6 (no extension headers): the address's last word, the port at 40 */
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, net + 20));
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_ST, 0));
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_LD | BPF_H | BPF_ABS, net + 40));
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_LDX | BPF_MEM, 0));
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0));
    /* Fibonacci hashing (Knuth): keys in a row (a client's ports) land evenly, then pick
     * among the sockets in rotation */
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MUL | BPF_K, 0x9E3779B1u));
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16));
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, (uint32_t)nkeep));
    for (size_t i = 0; i + 1 < nkeep; i++) {
        n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)i, 0, 1));
        n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, keep[i]));
    }
    n = lgroup_emit(out, n, cap, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, keep[nkeep - 1]));
    return n <= cap ? n : 0;
}

/* ---- round-robin: an eBPF program of type SK_REUSEPORT ------------------- */

#define INS(c, d, s, o, i) ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})

size_t lgroup_rr_prog(int ctr_map, int socks_map, unsigned nkeep, struct bpf_insn *out, size_t cap)
{
    const struct bpf_insn prog[] = {
        INS(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0),              /* r6 = ctx */
        INS(BPF_ST | BPF_MEM | BPF_W, 10, 0, -4, 0),               /* key 0 at fp-4 */
        INS(BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0),
        INS(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -4),             /* r2 = &key */
        INS(BPF_LD | BPF_DW | BPF_IMM, 1, BPF_PSEUDO_MAP_FD, 0, ctr_map),
        INS(0, 0, 0, 0, 0),
        INS(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem),
        INS(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 11, 0),               /* no counter: the kernel's hash */
        INS(BPF_ALU64 | BPF_MOV | BPF_K, 1, 0, 0, 1),
        INS(BPF_STX | BPF_ATOMIC | BPF_W, 0, 1, 0, BPF_ADD | BPF_FETCH), /* r1 = turn++ */
        INS(BPF_ALU | BPF_MOD | BPF_K, 1, 0, 0, (int)nkeep),       /* r1 = turn % nkeep */
        INS(BPF_STX | BPF_MEM | BPF_W, 10, 1, -8, 0),
        INS(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0),
        INS(BPF_LD | BPF_DW | BPF_IMM, 2, BPF_PSEUDO_MAP_FD, 0, socks_map),
        INS(0, 0, 0, 0, 0),
        INS(BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0),
        INS(BPF_ALU64 | BPF_ADD | BPF_K, 3, 0, 0, -8),
        INS(BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, 0),
        INS(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_select_reuseport),
        INS(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, SK_PASS),        /* selected, or the kernel's hash */
        INS(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
    };
    size_t n = sizeof prog / sizeof prog[0];
    if (n > cap || nkeep == 0)
        return 0;
    memcpy(out, prog, sizeof prog);
    return n;
}

/* The bpf(2) system call (no libbpf): returns its result, -1 with errno on failure. */
static long lgroup_bpf(int cmd, union bpf_attr *attr)
{
    return syscall(SYS_bpf, cmd, attr, sizeof *attr);
}

/* Creates the round-robin maps. Returns 0, or -1 (no CAP_BPF, old kernel). */
static int lgroup_rr_maps(lgroup *g)
{
    union bpf_attr a = {.map_type = BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, .key_size = 4, .value_size = 8,
                        .max_entries = LGROUP_MAX};
    g->socks_map = (int)lgroup_bpf(BPF_MAP_CREATE, &a);
    a = (union bpf_attr){.map_type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 4, .max_entries = 1};
    g->ctr_map = g->socks_map >= 0 ? (int)lgroup_bpf(BPF_MAP_CREATE, &a) : -1;
    if (g->ctr_map < 0) {
        if (g->socks_map >= 0)
            close(g->socks_map);
        g->socks_map = -1;
        return -1;
    }
    return 0;
}

/*
 * Round-robin over the sockets in rotation (fds[0..n-1]): puts them in the
 * socket array and attaches a program taking turns over n through fd.
 * Returns 0, or -1 (the caller falls back to the hash).
 */
/* True when a[0..n) and b[0..n) hold the same descriptors, in any order (each once). */
static bool lgroup_same_set(const int *a, const int *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            found = a[i] == b[j];
        if (!found)
            return false;
    }
    return true;
}

static int lgroup_rr_steer(lgroup *g, const int *fds, size_t n, int fd)
{
    /* The same sockets in rotation as the program in place deals over (a
     * socket out of rotation closed, parked…; the array's order need not
     * follow the kernel's): nothing to change, and no moment with an empty
     * array, when the kernel's hash could pick a drained socket. */
    if (g->prog_on && n == g->nsocks_map && lgroup_same_set(fds, g->map_fds, n))
        return 0;
    /* A socket can be in the array once only (EBUSY): empty it, then fill
     * it; meanwhile a failed selection falls back to the kernel's hash. */
    for (size_t i = 0; i < g->nsocks_map; i++) {
        uint32_t k = (uint32_t)i;
        union bpf_attr a = {.map_fd = (uint32_t)g->socks_map, .key = (uint64_t)(uintptr_t)&k};
        lgroup_bpf(BPF_MAP_DELETE_ELEM, &a);
    }
    g->nsocks_map = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t k = (uint32_t)i;
        uint64_t v = (uint64_t)fds[i];
        union bpf_attr a = {.map_fd = (uint32_t)g->socks_map, .key = (uint64_t)(uintptr_t)&k,
                            .value = (uint64_t)(uintptr_t)&v, .flags = BPF_ANY};
        if (lgroup_bpf(BPF_MAP_UPDATE_ELEM, &a) != 0)
            return -1;
        g->map_fds[i] = fds[i];
        g->nsocks_map = i + 1;
    }
    struct bpf_insn code[32];
    size_t len = lgroup_rr_prog(g->ctr_map, g->socks_map, (unsigned)n, code, 32);
    static const char license[] = "Dual MIT/GPL";
    union bpf_attr a = {.prog_type = BPF_PROG_TYPE_SK_REUSEPORT, .insn_cnt = (uint32_t)len,
                        .insns = (uint64_t)(uintptr_t)code, .license = (uint64_t)(uintptr_t)license,
                        .expected_attach_type = BPF_SK_REUSEPORT_SELECT};
    int prog = len ? (int)lgroup_bpf(BPF_PROG_LOAD, &a) : -1;
    if (prog < 0)
        return -1;
    int rc = setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog, sizeof prog);
    close(prog);   /* the group holds it */
    return rc;
}

/* ---- sockets ------------------------------------------------------------ */

bool lgroup_applies(const char *spec)
{
    return strncmp(spec, "unix:", 5) != 0 && strncmp(spec, "fd:", 3) != 0;
}

/*
 * A TCP socket with SO_REUSEPORT bound to ss (IPV6_V6ONLY as like's, for
 * IPv6), listening unless bind_only. Returns the fd, or -1 with errno.
 */
static int lgroup_socket(const struct sockaddr_storage *ss, socklen_t sl, int like, bool bind_only)
{
    int v6only = 0;
    socklen_t vl = sizeof v6only;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        (ss->ss_family == AF_INET6 &&
         (getsockopt(like, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &vl) != 0 ||
          setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) != 0)) ||
        bind(fd, (const struct sockaddr *)ss, sl) != 0 || (!bind_only && listen(fd, SOMAXCONN) != 0)) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Groups an upgrade handed over (file apps'), by the spec each was opened for. */
static struct lgroup_handed {
    char                  *spec;
    lgroup                *g;
    struct lgroup_handed *next;
} *lgroup_handed;

int lgroup_hand_over(const char *spec, lgroup *g)
{
    struct lgroup_handed *h = malloc(sizeof *h);
    char *s = strdup(spec);
    if (!h || !s) {
        free(h);
        free(s);
        return -1;
    }
    *h = (struct lgroup_handed){.spec = s, .g = g, .next = lgroup_handed};
    lgroup_handed = h;
    return 0;
}

bool lgroup_handed_for(const char *spec)
{
    for (const struct lgroup_handed *h = lgroup_handed; h; h = h->next)
        if (strcmp(h->spec, spec) == 0)
            return true;
    return false;
}

void lgroup_hand_over_end(void)
{
    while (lgroup_handed) {
        struct lgroup_handed *h = lgroup_handed;
        lgroup_handed = h->next;
        lgroup_free(h->g);
        free(h->spec);
        free(h);
    }
}

lgroup *lgroup_open(uv_loop_t *loop, const char *spec, char *err, size_t errcap)
{
    for (struct lgroup_handed **pp = &lgroup_handed; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->spec, spec) == 0) {
            struct lgroup_handed *h = *pp;
            lgroup *taken = h->g;
            *pp = h->next;
            free(h->spec);
            free(h);
            return taken;
        }
    lgroup *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    g->loop = loop;
    g->socks_map = g->ctr_map = -1;
    /* First without SO_REUSEPORT: a port another group (another hub of
     * ours) listens on is in use, not a group to join. */
    int probe = listen_tcp(spec, false, true, err, errcap);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (probe < 0 || getsockname(probe, (struct sockaddr *)&ss, &sl) != 0 ||
        (g->anchor = lgroup_socket(&ss, sl, probe, true)) < 0) {
        if (probe >= 0)
            snprintf(err, errcap, "cannot listen on %s: %s", spec, strerror(errno));
        if (probe >= 0)
            close(probe);
        free(g);
        return NULL;
    }
    close(probe);
    return g;
}

/* Member m's record, or NULL. */
static member *lgroup_mem(const lgroup *g, int m)
{
    return m >= 0 && (size_t)m < g->nmem ? g->mem[m] : NULL;
}

/* A socket of the group to set options on (any member still open), or -1. */
static int lgroup_any_fd(const lgroup *g)
{
    return g->norder ? g->mem[g->order[0]]->fd : -1;
}

/*
 * Makes the kernel pick only sockets in rotation (OPEN), by a program over
 * their indices; with none in rotation, the kernel's own hash over all.
 */
static void lgroup_steer_but(lgroup *g, int skip);

static void lgroup_steer(lgroup *g)
{
    lgroup_steer_but(g, -1);
}

/* As lgroup_steer, with kernel index skip (≥ 0) out of rotation too. */
static void lgroup_steer_but(lgroup *g, int skip)
{
    unsigned keep[LGROUP_MAX];
    int fds[LGROUP_MAX];
    size_t nkeep = 0;
    for (size_t i = 0; i < g->norder; i++)
        if (g->mem[g->order[i]]->st == LSOCK_OPEN && (int)i != skip) {
            fds[nkeep] = g->mem[g->order[i]]->fd;
            keep[nkeep++] = (unsigned)i;
        }
    int fd = lgroup_any_fd(g);
    if (fd < 0)
        return;
    if (g->steer == STEER_UNTRIED)
        g->steer = lgroup_rr_maps(g) == 0 ? STEER_ROUND_ROBIN : STEER_HASH;
    if (g->steer == STEER_ROUND_ROBIN && nkeep > 0) {
        if (lgroup_rr_steer(g, fds, nkeep, fd) == 0) {
            g->prog_on = true;
            return;
        }
        g->steer = STEER_HASH;   /* e.g. a kernel without SK_REUSEPORT programs: hash from now on */
    }
    if (nkeep == 0) {
        /* no one in rotation (every slot parked): better served late than never */
        if (g->prog_on && setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &(int){0}, sizeof(int)) == 0) {
            g->prog_on = false;
            return;
        }
        if (!g->prog_on)
            return;
        nkeep = g->norder;   /* no detach on this kernel: a program over every index */
        for (size_t i = 0; i < nkeep; i++)
            keep[i] = (unsigned)i;
    }
    static struct sock_filter code[2 * LGROUP_MAX + 32];
    size_t len = lgroup_prog(keep, nkeep, code, sizeof code / sizeof code[0]);
    struct sock_fprog prog = {.len = (unsigned short)len, .filter = code};
    if (len && setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) == 0) {
        g->prog_on = true;
    } else if (!g->steer_failed) {
        g->steer_failed = true;
        fprintf(stderr, "drover: cannot steer connections in the reuseport group (%s): "
                "a socket being drained may still get new connections\n", strerror(errno));
    }
}

int lgroup_add(lgroup *g, char *err, size_t errcap)
{
    if (g->norder >= LGROUP_MAX) {
        snprintf(err, errcap, "more than %d listening sockets", LGROUP_MAX);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(g->anchor, (struct sockaddr *)&ss, &sl) != 0) {
        snprintf(err, errcap, "cannot read the listening address: %s", strerror(errno));
        return -1;
    }
    int fd = lgroup_socket(&ss, sl, g->anchor, false);
    if (fd < 0) {
        snprintf(err, errcap, "cannot open a listening socket for the slot: %s", strerror(errno));
        return -1;
    }
    member *mm = NULL;
    for (size_t i = 0; i < g->nmem && !mm; i++)
        if (g->mem[i]->st == LSOCK_CLOSED)
            mm = g->mem[i];
    if (!mm) {
        member **nm = realloc(g->mem, (g->nmem + 1) * sizeof *nm);
        if (nm)
            g->mem = nm;
        mm = nm ? calloc(1, sizeof *mm) : NULL;
        if (!mm) {
            close(fd);
            snprintf(err, errcap, "out of memory");
            return -1;
        }
        mm->g = g;
        mm->m = (int)g->nmem;
        uv_timer_init(g->loop, &mm->watch);
        mm->watch.data = mm;
        g->mem[g->nmem++] = mm;
    }
    mm->fd = fd;
    mm->st = LSOCK_OPEN;
    mm->done = NULL;
    g->order[g->norder++] = mm->m;
    lgroup_steer(g);   /* the program must know the new index */
    return mm->m;
}

int lgroup_fd(const lgroup *g, int m)
{
    member *mm = lgroup_mem(g, m);
    return mm ? mm->fd : -1;
}

lsock_state lgroup_state(const lgroup *g, int m)
{
    member *mm = lgroup_mem(g, m);
    return mm ? mm->st : LSOCK_CLOSED;
}

int lgroup_queued(const lgroup *g, int m)
{
    member *mm = lgroup_mem(g, m);
    struct tcp_info ti;
    socklen_t tl = sizeof ti;
    if (!mm || mm->fd < 0 || getsockopt(mm->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0)
        return -1;
    return (int)ti.tcpi_unacked;   /* a listener's accept queue (sk_ack_backlog) */
}

static void lgroup_on_watch(uv_timer_t *t);

/* Feeds input in to member mm's machine and performs the action decided. */
static void lgroup_step(member *mm, lsock_input in, unsigned left)
{
    lgroup *g = mm->g;
    lsock_decision d = lsock_next(mm->st, in);
    mm->st = d.next;
    switch (d.act) {
    case LSOCK_DO_NOTHING:
        break;
    case LSOCK_DO_STEER:
        lgroup_steer(g);
        break;
    case LSOCK_DO_DRAIN:
        lgroup_steer(g);
        uv_update_time(g->loop);
        mm->drain_ms = uv_now(g->loop);
        uv_timer_start(&mm->watch, lgroup_on_watch, LGROUP_POLL_MS, LGROUP_POLL_MS);
        break;
    case LSOCK_DO_REPORT: {
        uv_timer_stop(&mm->watch);
        lgroup_drained_fn done = mm->done;
        mm->done = NULL;
        if (done)
            done(mm->ctx, mm->m, left);
        break;
    }
    case LSOCK_DO_CLOSE: {
        uv_timer_stop(&mm->watch);
        mm->done = NULL;
        /*
         * Leaving the kernel's array moves its last socket into mm's place:
         * a classic program still naming the last index would then name one
         * past the end, and the kernel would pick by its own hash among every
         * socket — a drained one waiting for its worker to exit included,
         * whose queued connection would be reset at its close (seen under
         * Connection: close load). So the last socket, if in rotation, is
         * first taken out of the program while the others serve; the program
         * for the new array follows the close.
         */
        size_t last = g->norder ? g->norder - 1 : 0;
        if (g->steer == STEER_HASH && g->norder > 1 && g->order[last] != mm->m) {
            size_t open = 0;
            for (size_t i = 0; i < g->norder; i++)
                open += g->mem[g->order[i]]->st == LSOCK_OPEN;
            if (g->mem[g->order[last]]->st == LSOCK_OPEN && open > 1)
                lgroup_steer_but(g, (int)last);
        }
        /* shutdown leaves the kernel's group now, whoever else holds the socket */
        shutdown(mm->fd, SHUT_RDWR);
        close(mm->fd);
        mm->fd = -1;
        lgroup_order_remove(g->order, &g->norder, mm->m);
        lgroup_steer(g);
        break;
    }
    }
}

/* A draining socket's watch: drained once its queue is empty after the settle time, or at the timeout. */
static void lgroup_on_watch(uv_timer_t *t)
{
    member *mm = t->data;
    uv_update_time(mm->g->loop);
    uint64_t waited = uv_now(mm->g->loop) - mm->drain_ms;
    int q = lgroup_queued(mm->g, mm->m);
    if (waited >= mm->timeout_ms || (waited >= LGROUP_SETTLE_MS && q <= 0))
        lgroup_step(mm, LSOCK_IN_DRAINED, q > 0 ? (unsigned)q : 0);
}

void lgroup_serve(lgroup *g, int m, bool serving)
{
    member *mm = lgroup_mem(g, m);
    if (mm)
        lgroup_step(mm, serving ? LSOCK_IN_SERVE : LSOCK_IN_PARK, 0);
}

int lgroup_drain(lgroup *g, int m, unsigned timeout_ms, lgroup_drained_fn done, void *ctx)
{
    member *mm = lgroup_mem(g, m);
    if (!mm || lsock_next(mm->st, LSOCK_IN_DRAIN).act != LSOCK_DO_DRAIN)
        return -1;
    mm->timeout_ms = timeout_ms;
    mm->done = done;
    mm->ctx = ctx;
    lgroup_step(mm, LSOCK_IN_DRAIN, 0);
    return 0;
}

void lgroup_close(lgroup *g, int m)
{
    member *mm = lgroup_mem(g, m);
    if (mm)
        lgroup_step(mm, LSOCK_IN_CLOSE, 0);
}

/* Close callback of a member's watch: the member record goes with it. */
static void lgroup_free_member_cb(uv_handle_t *h)
{
    free(h->data);
}

void lgroup_free(lgroup *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->nmem; i++) {
        member *mm = g->mem[i];
        if (mm->fd >= 0)
            close(mm->fd);
        uv_timer_stop(&mm->watch);
        uv_close((uv_handle_t *)&mm->watch, lgroup_free_member_cb);
    }
    free(g->mem);
    if (g->socks_map >= 0)
        close(g->socks_map);
    if (g->ctr_map >= 0)
        close(g->ctr_map);
    close(g->anchor);
    free(g);
}

/* ---- upgrade ------------------------------------------------------------ */


json_t *lgroup_save(const lgroup *g, bool final, char *err, size_t errcap)
{
    json_t *(*fd)(int) = final ? upgrade_keep_fd : upgrade_fd_json;
    json_t *mem = json_array(), *order = json_array();
    for (size_t i = 0; i < g->nmem; i++) {
        const member *mm = g->mem[i];
        if (mm->st == LSOCK_DRAINING || mm->st == LSOCK_DRAINED) {
            snprintf(err, errcap, "a listening socket is draining (a scale-down is in progress)");
            json_decref(mem);
            json_decref(order);
            return NULL;
        }
        json_array_append_new(mem, json_pack("{s:o, s:i}", "fd", mm->fd >= 0 ? fd(mm->fd)
                                                                              : json_integer(-1),
                                             "st", (int)mm->st));
    }
    for (size_t i = 0; i < g->norder; i++)
        json_array_append_new(order, json_integer(g->order[i]));
    return json_pack("{s:o, s:o, s:o, s:i, s:i, s:b, s:o, s:o}", "anchor", fd(g->anchor),
                     "socks_map", fd(g->socks_map), "ctr_map", fd(g->ctr_map),
                     "steer", (int)g->steer, "nsocks_map", (int)g->nsocks_map, "prog_on", g->prog_on,
                     "members", mem, "order", order);
}

lgroup *lgroup_restore(uv_loop_t *loop, const json_t *saved, char *err, size_t errcap)
{
    json_t *mem = json_object_get(saved, "members"), *v;
    size_t n = json_array_size(mem), i;
    lgroup *g = calloc(1, sizeof *g);
    member **ms = calloc(n ? n : 1, sizeof *ms);
    if (!g || !ms) {
        free(g);
        free(ms);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    g->loop = loop;
    g->mem = ms;
    g->anchor = upgrade_fd(saved, "anchor");
    g->socks_map = upgrade_fd(saved, "socks_map");
    g->ctr_map = upgrade_fd(saved, "ctr_map");
    g->steer = (steer_kind)json_integer_value(json_object_get(saved, "steer"));
    g->nsocks_map = (size_t)json_integer_value(json_object_get(saved, "nsocks_map"));
    g->prog_on = json_is_true(json_object_get(saved, "prog_on"));
    for (size_t k = 0; k < LGROUP_MAX; k++)
        g->map_fds[k] = -1;   /* unknown: the next steer fills the array again */
    json_array_foreach(mem, i, v) {
        member *mm = calloc(1, sizeof *mm);
        if (!mm) {
            snprintf(err, errcap, "out of memory");
            lgroup_free(g);
            return NULL;
        }
        mm->g = g;
        mm->m = (int)i;
        mm->fd = upgrade_fd(v, "fd");
        mm->st = (lsock_state)json_integer_value(json_object_get(v, "st"));
        uv_timer_init(loop, &mm->watch);
        mm->watch.data = mm;
        g->mem[g->nmem++] = mm;
    }
    json_array_foreach(json_object_get(saved, "order"), i, v)
        if (g->norder < LGROUP_MAX)
            g->order[g->norder++] = (int)json_integer_value(v);
    return g;
}
