/* The in-container probe of the escape tests (tests/tests/escapes.rs), compiled statically by
 * tests/src/probe.rs at test time (no binaries in the repository). Subcommands:
 *
 *   probe syscalls            one line per syscall that a default container must not get:
 *                             "<name> ok" or "<name> <errno name>"
 *   probe overwrite FD        the second half of CVE-2019-5736: reopen the runtime binary held
 *                             open on FD for writing once no process runs it any more, and
 *                             write a marker at offset 0. Prints and records in /exploit-result:
 *                             "overwritten" or "refused <errno name>"
 *   probe scan IP...          connect to every TCP port 1-65535 of each address (in parallel); for each open
 *                             port print "open IP:PORT", then "api IP:PORT" when it answers
 *                             `GET /_ping` like the Engine API (body "OK") */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sched.h>

static const char *ename(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL";
    case EROFS: return "EROFS";
    case ETXTBSY: return "ETXTBSY";
    case ENOENT: return "ENOENT";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EFAULT: return "EFAULT";
    case EBADF: return "EBADF";
    case ENOTDIR: return "ENOTDIR";
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "E%d", e);
        return buf;
    }
    }
}

static void report(const char *name, long r) {
    if (r < 0)
        printf("%s %s\n", name, ename(errno));
    else
        printf("%s ok\n", name);
}

static int syscalls(void) {
    /* keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL): blocked by Docker's seccomp profile. */
    report("keyctl", syscall(SYS_keyctl, 1, 0, 0, 0, 0));
    /* add_key, request_key: likewise. */
    report("add_key", syscall(SYS_add_key, "user", "berth-probe", "x", 1, -3 /* KEY_SPEC_SESSION_KEYRING */));
    /* bpf(BPF_MAP_CREATE) of a one-entry array map. */
    unsigned int attr[16] = {2 /* BPF_MAP_TYPE_ARRAY */, 4, 4, 1};
    report("bpf", syscall(SYS_bpf, 0, attr, sizeof attr));
    /* A new mount: needs CAP_SYS_ADMIN. */
    report("mount", mount("none", "/", "tmpfs", 0, 0));
    /* A user namespace. */
    report("unshare_user", unshare(CLONE_NEWUSER));
    /* AF_VSOCK: would reach the VM's host side; Docker's profile refuses the family. */
    report("socket_vsock", socket(40, SOCK_STREAM, 0));
    /* Loading a kernel module from an fd. */
    report("finit_module", syscall(SYS_finit_module, -1, "", 0));
    /* perf_event_open with a NULL attr: EFAULT if the call were allowed. */
    report("perf_event_open", syscall(SYS_perf_event_open, 0, 0, -1, -1, 0));
    /* open_by_handle_at (the "shocker" escape): needs CAP_DAC_READ_SEARCH. */
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, 0, 0));
    fflush(stdout);
    return 0;
}

static void record(const char *line) {
    printf("%s\n", line);
    fflush(stdout);
    int fd = open("/exploit-result", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        dprintf(fd, "%s\n", line);
        close(fd);
    }
}

static int overwrite(const char *fdarg) {
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/fd/%s", fdarg);
    /* The runtime processes that still execute the binary (ETXTBSY) exit within moments. */
    for (int i = 0; i < 3000; i++) {
        int w = open(path, O_WRONLY);
        if (w >= 0) {
            ssize_t n = pwrite(w, "BERTH-PWNED", 11, 0);
            snprintf(line, sizeof line, n == 11 ? "overwritten" : "refused write %s", ename(errno));
            record(line);
            return 0;
        }
        if (errno != ETXTBSY) {
            snprintf(line, sizeof line, "refused %s", ename(errno));
            record(line);
            return 0;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, 0);
    }
    record("refused ETXTBSY-forever");
    return 0;
}

/* Nonblocking connects in batches; refused ports answer at once on these addresses. */
static void scan_one(const char *ip) {
    struct in_addr a;
    if (inet_pton(AF_INET, ip, &a) != 1) {
        printf("bad-address %s\n", ip);
        return;
    }
    enum { BATCH = 512 };
    static struct pollfd pf[BATCH];
    static int port_of[BATCH];
    for (int base = 1; base <= 65535; base += BATCH) {
        int n = 0;
        for (int p = base; p < base + BATCH && p <= 65535; p++) {
            int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (s < 0) {
                printf("socket-failed %s\n", ename(errno));
                return;
            }
            struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(p), .sin_addr = a};
            int r = connect(s, (struct sockaddr *)&sa, sizeof sa);
            if (r < 0 && errno != EINPROGRESS) {
                close(s);
                continue;
            }
            pf[n].fd = s;
            pf[n].events = POLLOUT;
            port_of[n] = p;
            n++;
        }
        /* Up to 1 s for the batch: filtered ports are reported as closed. */
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        int pending = n;
        while (pending > 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
            if (ms > 1000)
                break;
            int r = poll(pf, n, 1000 - ms);
            if (r <= 0)
                break;
            for (int i = 0; i < n; i++) {
                if (pf[i].fd < 0 || !pf[i].revents)
                    continue;
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(pf[i].fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err == 0) {
                    printf("open %s:%d\n", ip, port_of[i]);
                    /* Ask it like a docker client would. */
                    int fl = fcntl(pf[i].fd, F_GETFL);
                    fcntl(pf[i].fd, F_SETFL, fl & ~O_NONBLOCK);
                    struct timeval tv = {2, 0};
                    setsockopt(pf[i].fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
                    const char *req = "GET /_ping HTTP/1.0\r\nHost: x\r\n\r\n";
                    if (write(pf[i].fd, req, strlen(req)) > 0) {
                        char buf[4096];
                        size_t got = 0;
                        ssize_t k;
                        while (got < sizeof buf - 1 && (k = read(pf[i].fd, buf + got, sizeof buf - 1 - got)) > 0)
                            got += k;
                        buf[got] = 0;
                        char *body = strstr(buf, "\r\n\r\n");
                        if (strncmp(buf, "HTTP/", 5) == 0 && body && strcmp(body + 4, "OK") == 0)
                            printf("api %s:%d\n", ip, port_of[i]);
                    }
                }
                close(pf[i].fd);
                pf[i].fd = -1;
                pending--;
            }
        }
        for (int i = 0; i < n; i++)
            if (pf[i].fd >= 0)
                close(pf[i].fd);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, 0, _IOLBF, 0);
    if (argc >= 2 && strcmp(argv[1], "syscalls") == 0)
        return syscalls();
    if (argc >= 3 && strcmp(argv[1], "overwrite") == 0)
        return overwrite(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "scan") == 0) {
        /* Room for a batch of sockets per address, and one process per address (lines are
         * written whole: each is one write of a line-buffered stdout, below PIPE_BUF). */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        for (int i = 2; i < argc; i++) {
            fflush(stdout);
            if (fork() == 0) {
                scan_one(argv[i]);
                fflush(stdout);
                _exit(0);
            }
        }
        while (wait(0) > 0)
            ;
        printf("scan-done\n");
        return 0;
    }
    fprintf(stderr, "usage: probe syscalls | overwrite FD | scan IP...\n");
    return 2;
}
