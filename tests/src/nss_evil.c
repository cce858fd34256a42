/* CVE-2019-14271: a hostile image's NSS module (libnss_berthevil.so.2, named first in its
 * /etc/nsswitch.conf). Whatever loads it runs this constructor: it leaves a marker in the root
 * it sees (the container's, or the host's if a daemon process loaded it unconfined) and says so
 * on stderr. The escape tests check that no daemon process ever loads it (`docker cp` and
 * friends resolve nothing through the container's libraries), and, as the positive control,
 * that a glibc program inside the container does. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

__attribute__((constructor)) static void loaded(void) {
    int fd = open("/berth-nss-evil-loaded", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dprintf(fd, "pid %d\n", (int)getpid());
        close(fd);
    }
    const char msg[] = "BERTH-NSS-EVIL-LOADED\n";
    write(2, msg, sizeof msg - 1);
}
