/* yunstack-hotplug: give a clone of a memory template the identity its host hands it.
 *
 * A guest started from a memory template wakes up as the template.  Its host then hands it its
 * identity in one of two ways:
 *
 * - over the virtio-serial port org.yunstack.identity (the way a clone gets it): the host writes
 *   the files of the guest's config drive and what it worked out of them, this writes them into a
 *   fresh directory SOURCE and takes the identity itself, in this process (resume.c): a fork
 *   costs a clone some 30 ms under TCG, and uevents wait in the socket meanwhile.  When resume.c
 *   leaves it to the shell, a child runs `yunstack-cloudinit resume SOURCE`;
 * - when a block device that is added carries the label config-2 (a config drive hot-plugged):
 *   a child runs `yunstack-cloudinit resume /dev/NAME`.
 *
 * Children run in a session of their own and are not waited for.
 *
 * The resume hook takes an identity only if the guest has none yet.
 *
 * Both are waited for in one ppoll.  The kernel's uevents are read here rather than through busybox
 * `uevent`, which starts a shell for every event (plugging a device makes about fifteen; under TCG
 * each costs a clone ~15 ms).  Only a new block device is read, three small reads (ISO 9660 keeps
 * the volume id at 32808, space padded; FAT at 43 for FAT12/16 or 71 for FAT32, and mkfs.vfat may
 * upper-case it).  A virtio-serial port whose host side is not connected reads as end of file and
 * polls as hung up, so the port is polled only once the host has connected: the kernel signals
 * SIGIO to the port's owner when it does (and when data comes).
 *
 * The port's message (docs/explanation/memory-templates.md, "Identity over virtio-serial"):
 *
 *     yunstack-identity 1 LENGTH\n    then LENGTH bytes of records, each
 *     NAME SIZE\n                     then SIZE bytes, the file NAME
 *
 * NAME is one of a fixed set; a record of another name is skipped (a newer host's).  Once the
 * files are written, the listener answers on the port
 * "yunstack-identity ok\n" (the host closes its end only then, so nothing it wrote is lost).  A
 * message that does not parse is dropped, unanswered.
 *
 * The resume hook waits, before the guest prints YUNSTACK-READY, for a uevent listener to be bound
 * (a NETLINK_KOBJECT_UEVENT socket in group 1, /proc/net/netlink): a template saved right after
 * READY then has this listening.  Exit status 1 with a message when the socket cannot be made.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "resume.h"

#define RESUME "/sbin/yunstack-cloudinit"
#define PORT_NAME "org.yunstack.identity"
#define PORTS "/sys/class/virtio-ports"
#define INCOMING "/run/yunstack/identity"
#define MAX_MESSAGE (4 << 20) /* user data is at most 64 KiB; the rest is small */

struct label_at {
    off_t offset;
    size_t length;
};

static const struct label_at LABELS[] = {{32808, 9}, {43, 11}, {71, 11}};
static const char *const FILES[] = {"meta_data.json", "network_data.json", "user_data", "host_time", "macs",
                                    "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "resume", "authorized_keys",
                                    "random_seed"};

static volatile sig_atomic_t host_came;

static void on_sigio(int signo)
{
    (void)signo;
    host_came = 1;
}

/* The value of KEY in a uevent message (NUL-separated KEY=VALUE after an "ACTION@PATH" header). */
static const char *field(const char *msg, size_t len, const char *key)
{
    size_t klen = strlen(key);
    for (size_t at = 0; at < len; at += strlen(msg + at) + 1) {
        if (strncmp(msg + at, key, klen) == 0 && msg[at + klen] == '=')
            return msg + at + klen + 1;
    }
    return NULL;
}

static int is_config_drive(const char *dev)
{
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int found = 0;
    for (size_t i = 0; i < sizeof LABELS / sizeof LABELS[0] && !found; i++) {
        char label[16] = {0};
        if (pread(fd, label, LABELS[i].length, LABELS[i].offset) != (ssize_t)LABELS[i].length)
            continue;
        found = strncmp(label, "config-2 ", 9) == 0 || strncmp(label, "CONFIG-2 ", 9) == 0;
    }
    close(fd);
    return found;
}

static void resume(const char *source)
{
    pid_t pid = fork();
    if (pid != 0)
        return; /* the parent goes on listening; a failed fork loses this one, as a lost uevent would */
    setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0)
        dup2(null, 0);
    execl(RESUME, RESUME, "resume", source, (char *)NULL);
    perror("yunstack-hotplug: " RESUME);
    _exit(127);
}

/* The identity the port brought, taken here (resume.c), or by the shell resume in a child. */
static void take_port_identity(void)
{
    signal(SIGCHLD, SIG_DFL); /* resume.c waits for what it starts */
    int taken = take_identity(INCOMING);
    signal(SIGCHLD, SIG_IGN);
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ; /* what ended meanwhile; the rest is reaped by the kernel when it ends */
    if (taken != 0)
        resume(INCOMING);
}

/* The identity port's device (/dev/vportNpM), opened for signal-driven reads; -1 without one. */
static int open_port(void)
{
    DIR *dir = opendir(PORTS);
    if (dir == NULL)
        return -1;
    int fd = -1;
    struct dirent *entry;
    while (fd < 0 && (entry = readdir(dir)) != NULL) {
        char path[300], name[64] = {0};
        if (entry->d_name[0] == '.' || snprintf(path, sizeof path, PORTS "/%s/name", entry->d_name) >= (int)sizeof path)
            continue;
        int nfd = open(path, O_RDONLY | O_CLOEXEC);
        if (nfd < 0)
            continue;
        ssize_t n = read(nfd, name, sizeof name - 1);
        close(nfd);
        if (n <= 0 || strncmp(name, PORT_NAME "\n", strlen(PORT_NAME) + 1) != 0)
            continue;
        snprintf(path, sizeof path, "/dev/%s", entry->d_name);
        fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0 && (fcntl(fd, F_SETOWN, getpid()) != 0 || fcntl(fd, F_SETFL, O_NONBLOCK | O_ASYNC) != 0)) {
            perror("yunstack-hotplug: " PORT_NAME);
            close(fd);
            fd = -1;
        }
    }
    closedir(dir);
    return fd;
}

static int known_file(const char *name)
{
    for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++)
        if (strcmp(name, FILES[i]) == 0)
            return 1;
    return 0;
}

/* Write the records of a whole message into INCOMING (emptied first); 0 when all were good. */
static int take_message(const char *body, size_t len)
{
    mkdir("/run/yunstack", 0755);
    mkdir(INCOMING, 0700);
    for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, INCOMING "/%s", FILES[i]);
        unlink(path);
    }
    size_t at = 0;
    while (at < len) {
        const char *eol = memchr(body + at, '\n', len - at);
        char name[64];
        unsigned long size;
        if (eol == NULL || eol - (body + at) >= 80 || sscanf(body + at, "%63s %lu", name, &size) != 2 ||
            size > len - (size_t)(eol + 1 - body)) {
            fprintf(stderr, "yunstack-hotplug: a malformed identity record, message dropped\n");
            return -1;
        }
        at = (size_t)(eol + 1 - body);
        if (!known_file(name)) {
            at += size;
            continue;
        }
        char path[128];
        snprintf(path, sizeof path, INCOMING "/%s", name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, body + at, size) != (ssize_t)size) {
            perror("yunstack-hotplug: " INCOMING);
            if (fd >= 0)
                close(fd);
            return -1;
        }
        close(fd);
        at += size;
    }
    return 0;
}

/* Buffers what the port gives until a whole message is there, then hands it to the resume hook. */
struct reader {
    char *buf;
    size_t len;
};

/* Read what the port has; 0 to keep polling it, -1 when the host has gone (stop polling it). */
static int read_port(int fd, struct reader *r)
{
    for (;;) {
        if (r->buf == NULL && (r->buf = malloc(MAX_MESSAGE + 128)) == NULL)
            return -1;
        if (r->len >= MAX_MESSAGE + 64) {
            fprintf(stderr, "yunstack-hotplug: an identity message over %d bytes, dropped\n", MAX_MESSAGE);
            r->len = 0;
        }
        ssize_t n = read(fd, r->buf + r->len, MAX_MESSAGE + 64 - r->len);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        if (n == 0)
            return -1; /* no host now, or its connection is not seen yet: what came is kept */
        r->len += (size_t)n;
        const char *eol = memchr(r->buf, '\n', r->len);
        if (eol == NULL)
            continue;
        unsigned long length;
        int version;
        if (sscanf(r->buf, "yunstack-identity %d %lu", &version, &length) != 2 || version != 1 || length > MAX_MESSAGE) {
            fprintf(stderr, "yunstack-hotplug: not an identity message, dropped\n");
            r->len = 0;
            continue;
        }
        size_t head = (size_t)(eol + 1 - r->buf);
        if (r->len < head + length)
            continue;
        if (take_message(r->buf + head, length) == 0) {
            static const char ack[] = "yunstack-identity ok\n";
            if (write(fd, ack, sizeof ack - 1) != (ssize_t)(sizeof ack - 1))
                perror("yunstack-hotplug: answering " PORT_NAME);
            take_port_identity();
        }
        r->len = 0;
    }
}

int main(void)
{
    signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
    sigset_t with_sigio, waiting;
    sigemptyset(&with_sigio);
    sigaddset(&with_sigio, SIGIO);
    sigprocmask(SIG_BLOCK, &with_sigio, &waiting); /* SIGIO comes only inside ppoll */
    sigdelset(&waiting, SIGIO);
    struct sigaction action = {.sa_handler = on_sigio};
    sigemptyset(&action.sa_mask);
    sigaction(SIGIO, &action, NULL);

    /* Before the uevent socket is bound: the boot waits for that socket before READY, and a template
     * is saved only with its port open.  A port that appears later comes with a uevent. */
    int port = open_port();
    int sock = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT);
    if (sock < 0) {
        perror("yunstack-hotplug: socket");
        return 1;
    }
    int size = 1 << 20; /* a burst of events must not overflow it */
    setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    struct sockaddr_nl addr = {.nl_family = AF_NETLINK, .nl_pid = 0, .nl_groups = 1};
    if (bind(sock, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("yunstack-hotplug: bind");
        return 1;
    }
    int watch_port = port >= 0; /* once at the start: the host may be there already */
    struct reader reader = {0};
    char msg[8192];
    for (;;) {
        struct pollfd fds[2] = {{.fd = sock, .events = POLLIN}, {.fd = watch_port ? port : -1, .events = POLLIN}};
        int ready = ppoll(fds, 2, NULL, &waiting);
        if (host_came) {
            host_came = 0;
            watch_port = port >= 0;
        }
        if (ready <= 0)
            continue;
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (read_port(port, &reader) != 0)
                watch_port = 0;
        }
        if (!(fds[0].revents & (POLLIN | POLLERR)))
            continue; /* an error (events lost to a full buffer) is read, which clears it: no busy loop */
        struct sockaddr_nl from;
        socklen_t fromlen = sizeof from;
        ssize_t len;
        while ((len = recvfrom(sock, msg, sizeof msg - 1, 0, (struct sockaddr *)&from, &fromlen)) > 0) {
            fromlen = sizeof from;
            if (from.nl_pid != 0)
                continue; /* only the kernel's own events */
            msg[len] = '\0';
            const char *action = field(msg, (size_t)len, "ACTION");
            const char *subsystem = field(msg, (size_t)len, "SUBSYSTEM");
            const char *name = field(msg, (size_t)len, "DEVNAME");
            if (port < 0 && action && subsystem && strcmp(subsystem, "virtio-ports") == 0) {
                if ((port = open_port()) >= 0)
                    watch_port = 1;
                continue;
            }
            if (!action || !subsystem || !name || strcmp(action, "add") != 0 || strcmp(subsystem, "block") != 0)
                continue;
            if (strchr(name, '/') != NULL || strstr(name, "..") != NULL)
                continue; /* a device name, never a path */
            char dev[64];
            if (snprintf(dev, sizeof dev, "/dev/%s", name) >= (int)sizeof dev)
                continue;
            if (is_config_drive(dev))
                resume(dev);
        }
    }
}
